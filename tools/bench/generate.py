"""Generation speed with and without the KV cache: `python -m tools.bench.generate RUN_DIR [--tokens 100]
[--batch 1] [--runs 3]`. Prints tokens/s of each arm (median of --runs) and the ratio; both arms generate the
same greedy tokens from the same prompt."""

from __future__ import annotations

import argparse
import statistics
import time

from pretrain.generate import Generator, SamplingConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    gen = Generator.from_checkpoint(a.run_dir, device=a.device)
    cfg = SamplingConfig(temperature=0, max_new_tokens=a.tokens, stop_at_eod=False)
    prompts = [[5, 6, 7, 8]] * a.batch
    rates = {}
    for arm in (True, False):
        gen.generate_ids(prompts, cfg, use_cache=arm)  # warm-up
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            gen.generate_ids(prompts, cfg, use_cache=arm)
            times.append(time.perf_counter() - t0)
        rates[arm] = a.tokens * a.batch / statistics.median(times)
    print(f"tokens/s with cache {rates[True]:.1f}, without {rates[False]:.1f}, ratio {rates[True] / rates[False]:.2f} "
          f"(median of {a.runs}; {a.tokens} new tokens, batch {a.batch}, device {gen.model.device})")


if __name__ == "__main__":
    main()
