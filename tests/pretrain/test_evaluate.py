"""Held-out loss / perplexity / bits per byte per source; the lm-eval adapter's three request types checked
against direct computation; the local cloze and multiple-choice tasks run through lm-eval's evaluator."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pretrain.evaluate import SlurmtrainLM, held_out, local_tasks, main, run_eval_tasks, validation_documents
from pretrain.generate import Generator, SamplingConfig
from pretrain.metrics import read_metrics

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def gen(trained):
    return Generator.from_checkpoint(trained("untied"), device="cpu")


def _prefix(tiny_shards):
    return tiny_shards[0].split("=[", 1)[1].rstrip("]")


@pytest.mark.slow
def test_held_out_metrics(gen, trained, tiny_shards):
    prefix = _prefix(tiny_shards)
    split = [0.98, 0.02, 0.0]
    r = held_out(gen, [prefix], split)[Path(prefix).name]
    docs = validation_documents(prefix, split)
    assert r["documents"] == len(docs) > 0
    assert r["tokens"] == sum(len(d) for d in docs) - 1
    text_bytes = sum(len(gen.decode([t for t in d if t != gen.eod]).encode()) for d in docs)
    assert r["bytes"] == text_bytes
    assert r["bits_per_byte"] == pytest.approx(r["loss"] * r["tokens"] / math.log(2) / r["bytes"])
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    val = [m["val_loss"] for m in read_metrics(trained("untied") / "metrics.jsonl") if "val_loss" in m][-1]
    assert r["loss"] < math.log(512) - 0.5 and abs(r["loss"] - val) < 0.5


@pytest.mark.slow
def test_adapter_requests(gen):
    from lm_eval.api.instance import Instance

    lm = SlurmtrainLM(generator=gen)
    ctx, cont = "It was a fine", " day"
    [(ll, greedy)] = lm.loglikelihood([Instance("loglikelihood", {}, (ctx, cont), 0)])
    c, t = gen.encode(ctx), gen.encode(cont)  # each encoded on its own (SlurmtrainLM._encode_pair)
    ids = torch.tensor([c + t])
    logp = torch.log_softmax(gen.model(ids[:, :-1])[0], -1)
    want = sum(logp[len(c) - 1 + i, tok].item() for i, tok in enumerate(t))
    assert ll == pytest.approx(want, abs=1e-4)
    text = "I had a quarrel with the teacher."
    [rolling] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    ids = torch.tensor([[gen.eod] + gen.encode(text)])
    logp = torch.log_softmax(gen.model(ids[:, :-1])[0], -1)
    assert rolling == pytest.approx(logp.gather(-1, ids[0, 1:, None]).sum().item(), abs=1e-3)
    [out] = lm.generate_until([Instance("generate_until", {}, ("It was", {"until": ["\n"], "max_gen_toks": 20}), 0)])
    full = gen.generate("It was", SamplingConfig(temperature=0, max_new_tokens=20))[0].text
    assert out == full.split("\n")[0]


def test_pieces_spanning_the_boundary_leave_the_continuation_its_own_tokens():
    """With pieces that span words, lm-eval's causal split (encode the whole, cut at the context's length) can
    leave the continuation empty; ours encodes each part on its own."""
    vocab = {"was a fine": 0, "was": 1, " a": 2, " fine": 3, " day": 4, "It": 5, " ": 6}

    class Greedy:  # longest match first, as a BPE with pieces across spaces would merge
        eod = 99

        def encode(self, text):
            out = []
            while text:
                piece = max((p for p in vocab if text.startswith(p)), key=len)
                out.append(vocab[piece])
                text = text[len(piece):]
            return out

    lm = SlurmtrainLM(generator=Greedy())
    ctx, cont = "It was a", " fine"
    whole, c = lm.tok_encode(ctx + cont), lm.tok_encode(ctx)
    assert whole[len(c):] == []  # lm-eval's split: "It" + "was a fine" vs "It was a" -> 4 context ids
    assert lm._encode_pair(ctx, cont) == ([5, 6, 1, 2], [3])
    assert lm._encode_pair("It was a ", "day") == ([5, 6, 1, 2], [4])  # the context's trailing space moves over


@pytest.mark.slow
def test_local_tasks_through_the_harness(gen, tmp_path):
    from data_pipeline.samples import fetch

    text = fetch(["botchan"])["botchan"].read_text()
    tasks = local_tasks(text, tmp_path, n=8)
    res = run_eval_tasks(lambda: gen, tasks)
    assert {"slurmtrain_cloze/acc", "slurmtrain_cloze/perplexity", "slurmtrain_choice/acc",
            "slurmtrain_choice/acc_norm"} <= set(res)
    # the harness's multiple-choice accuracy equals the argmax of our own log-likelihoods
    lm = SlurmtrainLM(generator=gen)
    rows = [json.loads(line) for line in (tmp_path / "choice.jsonl").read_text().splitlines()]
    hits = 0
    for row in rows:
        c = gen.encode(row["context"])
        lls = [lm._continuation_logprob(c, gen.encode(row["context"] + o)[len(c):])[0] for o in row["choices"]]
        hits += int(max(range(4), key=lambda i: lls[i]) == row["label"])
    assert res["slurmtrain_choice/acc"] == pytest.approx(hits / len(rows))


@pytest.mark.slow
def test_cli(trained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main([f"run.dir={trained('untied')}", f"output={out}"]) == 0
    assert "bits/byte" in capsys.readouterr().out
    assert json.loads(out.read_text())["held_out"]
    assert main(["max_tokens=10"]) == 2 and "run.dir" in capsys.readouterr().err


@pytest.mark.slow
def test_in_loop_eval_tasks_reach_metrics(tiny_shards, tmp_path):
    """train.eval_tasks: every periodic checkpoint is scored by lm-evaluation-harness on the local tasks built
    from the run's validation documents, in the same metrics.jsonl line as the step."""
    from pretrain.rundir import RunDir
    from tests.conftest import run_trainer

    proc = run_trainer(1, ["model=tiny", "train.iters=4", "train.global_batch_size=8", "train.micro_batch_size=4",
                           "optim.warmup_iters=1", "train.eval_iters=1", "train.eval_interval=2",
                           "train.save_interval=2", "train.eval_tasks=[cloze,choice]", "logging.wandb.mode=disabled",
                           *tiny_shards, f"run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["step"]: r for r in RunDir(tmp_path).metrics()}
    for step in (2, 4):
        assert 0.0 <= rows[step]["eval/slurmtrain_choice/acc"] <= 1.0
        assert 0.0 <= rows[step]["eval/slurmtrain_cloze/acc"] <= 1.0
        assert rows[step]["eval/slurmtrain_cloze/perplexity"] > 1.0
        assert "loss" in rows[step] and "val_loss" in rows[step]
    assert "eval/slurmtrain_choice/acc" not in rows[3]
