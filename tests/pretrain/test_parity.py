"""One tiny model trained 20 steps under several (TP, PP, DP) layouts: the losses must agree with the
single-process run at every step (fp32 on CPU, gloo), to 1e-4 relative. The layouts also cover interleaved
1F1B (vpp=2), the distributed optimizer, sequence parallelism, and tied embeddings under PP=2."""

from __future__ import annotations

import pytest

from pretrain.metrics import read_metrics
from tests.conftest import run_trainer

STEPS = 20
# lr 1e-3, not the tiny preset's 3e-3: at 3e-3 this 20-step run on botchan has a loss bump (steps 9-12) that
# amplifies the layouts' fp32 reduction-order differences (1e-8 at steps 1-11) past 1e-4 within three steps;
# at 1e-3 the worst step agrees to 8e-8 and the loss still falls by ~1 (measured). Parity is about numerics.
COMMON = ["model=tiny", f"train.iters={STEPS}", "train.global_batch_size=16", "train.micro_batch_size=2",
          "train.eval_iters=0", "train.save_interval=1000", "optim.warmup_iters=5", "optim.lr=1e-3",
          "logging.wandb.mode=disabled"]

LAYOUTS = {  # name: (nproc, overrides)
    "tp1pp1dp1": (1, []),
    "tp2": (2, ["parallel.tp=2"]),
    "pp2": (2, ["parallel.pp=2"]),
    "dp2_distopt": (2, ["parallel.distributed_optimizer=true"]),
    "tp2pp2_vpp2": (4, ["parallel.tp=2", "parallel.pp=2", "parallel.vpp=2"]),
    "tp2pp2dp2_sp": (8, ["parallel.tp=2", "parallel.pp=2", "parallel.sequence_parallel=true"]),
    # tied input/output embeddings: under PP the last stage holds a copy that must start equal and stay equal
    "tied_tp1pp1dp1": (1, ["model.untie_embeddings=false"]),
    "tied_pp2": (2, ["parallel.pp=2", "model.untie_embeddings=false"]),
}
REFERENCES = ("tp1pp1dp1", "tied_tp1pp1dp1")


@pytest.fixture(scope="module")
def losses(tiny_shards, tmp_path_factory):
    out = {}
    for name, (nproc, extra) in LAYOUTS.items():
        run_dir = tmp_path_factory.mktemp(name)
        proc = run_trainer(nproc, [*COMMON, *tiny_shards, *extra, f"run.dir={run_dir}"])
        assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        rows = read_metrics(run_dir / "metrics.jsonl")
        out[name] = [r["loss"] for r in rows]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("layout", [k for k in LAYOUTS if k not in REFERENCES])
def test_losses_match_single_process(losses, layout):
    ref, got = losses["tied_tp1pp1dp1" if layout.startswith("tied") else "tp1pp1dp1"], losses[layout]
    assert len(ref) == len(got) == STEPS
    assert ref[-1] < ref[0] - 0.5, f"the reference run does not learn: {ref}"
    for step, (a, b) in enumerate(zip(ref, got), start=1):
        assert abs(a - b) <= 1e-4 * abs(a), f"{layout} step {step}: loss {b} vs single-process {a}"
