"""Evaluate a checkpoint: held-out loss, perplexity and bits per byte per data source, and zero-shot tasks through
lm-evaluation-harness (0.4.x) with local tasks built from sample text.

    python -m pretrain.evaluate run.dir=runs/quickstart                      # held-out metrics per source
    python -m pretrain.evaluate run.dir=runs/quickstart tasks=[cloze,choice] # + the local zero-shot tasks
    python -m pretrain.evaluate run.dir=... data.paths=[/data/a_text_document] data.split=98,2,0 max_tokens=200000

Held-out = the validation documents of each shard under `data.split` (megatron's document split; default: the
run's config.yaml). Each source's validation documents (each ending in EOD) are concatenated and cut into
non-overlapping windows of model.seq_length; every token after the first is predicted once. loss is the mean NLL
in nats per token, perplexity exp(loss), bits per byte = total NLL / ln 2 / UTF-8 bytes of the documents' text
(EOD predictions count in the NLL and add no bytes), which compares models with different tokenizers.

lm-eval: `SlurmtrainLM` (registered as model "slurmtrain") implements loglikelihood, loglikelihood_rolling and
generate_until on our inference model, so any harness task runs on our checkpoints. `local_tasks(text, dir)`
writes two tasks from a text: `slurmtrain_cloze` (LAMBADA-style: predict a passage's last word; acc = greedy
match, perplexity) and `slurmtrain_choice` (choose a passage's true continuation among 4; acc, acc_norm).
`run_eval_tasks(model_fn, tasks)` runs them and returns flat metrics for a training loop to log.
"""

from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from pretrain.generate import Generator, SamplingConfig


@torch.no_grad()
def stream_nll(gen: Generator, ids: list[int], window: int, batch: int = 8) -> tuple[float, int]:
    """Total NLL (nats) and the number of predicted tokens of a token stream, in non-overlapping windows."""
    total, n = 0.0, 0
    starts = list(range(0, max(len(ids) - 1, 0), window))
    for b in range(0, len(starts), batch):
        for s in starts[b:b + batch]:
            chunk = torch.tensor(ids[s:s + window + 1], device=gen.model.device)
            if len(chunk) < 2:
                continue
            logits = gen.model(chunk[None, :-1])[0]
            total += torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum").item()
            n += len(chunk) - 1
    return total, n


def validation_documents(prefix: str, split: list[float]) -> list[list[int]]:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(prefix)
    docs = len(ds)
    lo, hi = round(split[0] * docs), round((split[0] + split[1]) * docs)
    return [ds[i].tolist() for i in range(lo, hi)]


def held_out(gen: Generator, prefixes: list[str], split: list[float], max_tokens: int | None = None) -> dict:
    """{source: {loss, perplexity, bits_per_byte, tokens, bytes, documents}}."""
    out = {}
    for prefix in prefixes:
        docs = validation_documents(prefix, split)
        if not docs:
            raise ValueError(f"data.split: no validation documents of {prefix}. Fix: raise the validation weight")
        ids, nbytes = [], 0
        for d in docs:
            if max_tokens and len(ids) >= max_tokens:
                break
            ids.extend(d)
            text = [t for t in d if t != gen.eod]
            nbytes += len(gen.decode(text).encode("utf-8"))
        nll, n = stream_nll(gen, ids, gen.model.cfg.seq_length)
        out[Path(prefix).name] = {"loss": nll / n, "perplexity": math.exp(nll / n),
                                  "bits_per_byte": nll / math.log(2) / nbytes, "tokens": n, "bytes": nbytes,
                                  "documents": len(docs)}
    return out


# ----------------------------------------------------------------------------------------------------------
# lm-evaluation-harness

def _lm_base():
    from lm_eval.api.model import TemplateLM

    return TemplateLM


class SlurmtrainLM(_lm_base()):
    """An lm-eval model over a Generator (checkpoint + tokenizer)."""

    def __init__(self, generator: Generator | None = None, checkpoint: str | None = None, batch_size: int = 8,
                 **kwargs):
        super().__init__()
        self.gen = generator or Generator.from_checkpoint(checkpoint)
        self.batch_size = int(batch_size)

    @property
    def eot_token_id(self) -> int:
        return self.gen.eod

    @property
    def max_length(self) -> int:
        return self.gen.model.cfg.seq_length

    def tok_encode(self, string: str, **kwargs) -> list[int]:
        return self.gen.encode(string)

    def tok_decode(self, tokens, **kwargs) -> str:
        return self.gen.decode(list(tokens))

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """The context and the continuation encoded each on its own (trailing spaces of the context moved to the
        continuation, as lm-eval does). lm-eval's causal default encodes the whole text and splits it at the
        length of the context's encoding, which assumes that no piece spans the boundary: with our default BPE,
        whose pieces may span words ("▁of▁the"), the context's last piece can swallow the start of the
        continuation and leave it empty. Separately encoded, the continuation is always its own tokens; for a
        tokenizer whose pieces stop at spaces the two ways give the same ids."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        return self.tok_encode(context), self.tok_encode(continuation)

    @torch.no_grad()
    def _continuation_logprob(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        if not continuation:  # an empty continuation has probability 1
            return 0.0, True
        ids = (context + continuation)[-(self.max_length + 1):]
        inp = torch.tensor(ids[:-1], device=self.gen.model.device)[None]
        logp = torch.log_softmax(self.gen.model(inp)[0], dim=-1)
        # a continuation longer than the window is scored on its last max_length tokens (as lm-eval's HF model)
        n = min(len(continuation), len(ids) - 1)
        tgt = torch.tensor(ids[-n:], device=logp.device)
        lp = logp[-n:]
        return lp.gather(-1, tgt[:, None]).sum().item(), bool((lp.argmax(-1) == tgt).all())

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        out = []
        for _key, context, continuation in requests:
            context = list(context) or [self.eot_token_id]
            res = self._continuation_logprob(context, list(continuation))
            out.append(res)
            if _key is not None:
                self.cache_hook.add_partial("loglikelihood", _key, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in requests:
            (text,) = req.args
            ids = [self.eot_token_id] + self.tok_encode(text)
            nll, _ = stream_nll(self.gen, ids, self.max_length)
            out.append(-nll)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, kw = req.args
            kw = dict(kw or {})
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            ids = self.tok_encode(context) or [self.eot_token_id]
            max_new = int(kw.get("max_gen_toks", 32))
            ids = ids[-(self.max_length - max_new):]
            temp = float(kw.get("temperature", 0.0)) if kw.get("do_sample", False) else 0.0
            cfg = SamplingConfig(max_new_tokens=max_new, temperature=temp, top_p=float(kw.get("top_p", 1.0)))
            new, _ = self.gen.generate_ids([ids], cfg)[0]
            text = self.tok_decode(new)
            for stop in until:
                if stop and stop in text:
                    text = text[:text.index(stop)]
            out.append(text)
        return out


def register() -> None:
    """Make `lm_eval.simple_evaluate(model="slurmtrain", model_args="checkpoint=runs/x")` work."""
    from lm_eval.api.registry import MODEL_REGISTRY, register_model

    if "slurmtrain" not in MODEL_REGISTRY:
        register_model("slurmtrain")(SlurmtrainLM)


def _passages(text: str, words: int) -> list[list[str]]:
    toks = text.replace("\r\n", "\n").split()
    return [toks[i:i + words] for i in range(0, len(toks) - words, words)]


def local_tasks(text: str, out_dir: Path | str, n: int = 20, seed: int = 0) -> list[dict]:
    """Write the two local tasks' data (JSONL) under out_dir; return their lm-eval task configs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    ps = [p for p in _passages(text, 40) if p[-1].strip(".,;:!?\"'").isalpha()]
    rng.shuffle(ps)
    cloze = [{"context": " ".join(p[:-1]), "target": " " + p[-1]} for p in ps[:n]]
    choice = []
    pool = ps[n:] or ps
    for i, p in enumerate(ps[:n]):
        distract = [" " + " ".join(q[20:]) for q in rng.sample(pool, 3)]
        label = i % 4
        opts = distract[:label] + [" " + " ".join(p[20:])] + distract[label:]
        choice.append({"context": " ".join(p[:20]), "choices": opts, "label": label})
    for name, rows in (("cloze", cloze), ("choice", choice)):
        (out_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = lambda name: {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(out_dir / f"{name}.jsonl")}},
                         "test_split": "test"}
    return [
        {"task": "slurmtrain_cloze", **data("cloze"), "output_type": "loglikelihood",
         "doc_to_text": "{{context}}", "doc_to_target": "{{target}}",
         "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                         {"metric": "acc", "aggregation": "mean", "higher_is_better": True}]},
        {"task": "slurmtrain_choice", **data("choice"), "output_type": "multiple_choice",
         "doc_to_text": "{{context}}", "doc_to_choice": "choices", "doc_to_target": "label",
         "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                         {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]},
    ]


def run_eval_tasks(model_fn: Callable[[], Generator], tasks: list, limit: int | None = None) -> dict[str, float]:
    """Run lm-eval tasks (names or configs) on the model model_fn() returns; {"<task>/<metric>": value}."""
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local tasks only: never reach the Hub at run time
    import lm_eval

    lm = SlurmtrainLM(generator=model_fn())
    res = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), limit=limit, bootstrap_iters=0, log_samples=False,
                                  verbosity="ERROR")
    flat = {}
    for task, metrics in res["results"].items():
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not k.endswith("_stderr,none") and k != "alias":
                flat[f"{task}/{k.replace(',none', '')}"] = float(v)
    return flat


# ----------------------------------------------------------------------------------------------------------
# CLI

@dataclass
class _Run:
    dir: Optional[str] = None


@dataclass
class _Data:
    paths: list[str] = field(default_factory=list)
    split: Optional[str] = None


@dataclass
class EvaluateCli:
    run: _Run = field(default_factory=_Run)
    checkpoint: Optional[str] = None
    data: _Data = field(default_factory=_Data)
    max_tokens: Optional[int] = None
    tasks: list[str] = field(default_factory=list)  # cloze, choice (local, from tasks_text) or lm-eval task names
    tasks_text: str = "botchan"  # a sample-kit name or a text file for the local tasks
    tasks_limit: Optional[int] = None
    output: Optional[str] = None
    device: Optional[str] = None


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf

    from pretrain.config import ConfigError, parse_blend, parse_split

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cli = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvaluateCli), OmegaConf.from_dotlist(argv)))
    src = cli.checkpoint or cli.run.dir
    if src is None:
        print("error: run.dir: no checkpoint given. Fix: pass run.dir=<run directory>", file=sys.stderr)
        return 2
    try:
        gen = Generator.from_checkpoint(src, device=cli.device)
        paths, split = list(cli.data.paths), cli.data.split
        cfg_file = Path(cli.run.dir or "", "config.yaml")
        if (not paths or split is None) and cli.run.dir and cfg_file.is_file():
            run_cfg = OmegaConf.load(cfg_file)
            paths = paths or list(run_cfg.data.paths)
            split = split or run_cfg.data.split
        prefixes, _ = parse_blend(paths)
        results = {"held_out": held_out(gen, prefixes, parse_split(split or "98,2,0"), cli.max_tokens)}
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for source, r in results["held_out"].items():
        print(f"{source}: loss {r['loss']:.4f}  ppl {r['perplexity']:.2f}  bits/byte {r['bits_per_byte']:.4f}  "
              f"({r['tokens']} tokens, {r['documents']} documents)")
    if cli.tasks:
        import tempfile

        from data_pipeline.samples import fetch

        text_path = Path(cli.tasks_text) if Path(cli.tasks_text).is_file() else fetch([cli.tasks_text])[cli.tasks_text]
        with tempfile.TemporaryDirectory() as tmp:
            local = {c["task"].removeprefix("slurmtrain_"): c for c in local_tasks(text_path.read_text(), tmp)}
            tasks = [local.get(t, t) for t in cli.tasks]
            results["tasks"] = run_eval_tasks(lambda: gen, tasks, cli.tasks_limit)
        for k, v in results["tasks"].items():
            print(f"{k}: {v:.4f}")
    if cli.output:
        Path(cli.output).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
