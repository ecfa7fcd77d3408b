"""Sampling maths on fixed logits; generation with the KV cache equals recomputing the whole sequence; batched
(left-padded) prompts equal single prompts; the inference model's logits equal megatron-core's GPTModel on the
same checkpoint; checkpoints saved under TP=2 and PP=2 (tied) load and sample; bad arguments are refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pretrain.checkpoint_reader import CheckpointReader
from pretrain.generate import (GenerateError, Generator, SamplingConfig, apply_repetition_penalty,
                               next_token_probs, main)
from pretrain.inference import InferenceModel, ModelShapeError
from tests.conftest import ROOT

LOGITS = torch.tensor([[3.8, -2.0, 5.0]])


def test_softmax_of_fixed_logits():
    p = next_token_probs(LOGITS, SamplingConfig(temperature=1.0))[0]
    assert p.tolist() == pytest.approx([0.231, 0.0007, 0.768], abs=5e-4)


def test_temperature_limits():
    assert next_token_probs(LOGITS, SamplingConfig(temperature=0))[0].tolist() == [0, 0, 1]
    cold = next_token_probs(LOGITS, SamplingConfig(temperature=1e-3))[0]
    assert cold[2] == pytest.approx(1.0)
    hot = next_token_probs(LOGITS, SamplingConfig(temperature=1e4))[0]
    assert hot.tolist() == pytest.approx([1 / 3] * 3, abs=1e-3)


def test_top_k_top_p_min_p():
    assert next_token_probs(LOGITS, SamplingConfig(top_k=1))[0].tolist() == [0, 0, 1]
    p2 = next_token_probs(LOGITS, SamplingConfig(top_k=2))[0]
    assert p2[1] == 0 and p2[0] == pytest.approx(0.2315, abs=5e-4)
    # top-p keeps the smallest set whose mass reaches p: {5.0} has 0.768
    assert next_token_probs(LOGITS, SamplingConfig(top_p=0.7))[0].tolist() == [0, 0, 1]
    assert next_token_probs(LOGITS, SamplingConfig(top_p=0.7679))[0].tolist() == [0, 0, 1]
    p = next_token_probs(LOGITS, SamplingConfig(top_p=0.9))[0]  # 0.768 < 0.9: the second token joins
    assert p[1] == 0 and p[0] > 0 and p.sum() == pytest.approx(1.0)
    assert (next_token_probs(LOGITS, SamplingConfig(top_p=0.9999))[0] > 0).all()
    # min-p: 0.0007 / 0.768 < 0.01 is dropped, 0.231 / 0.768 > 0.01 kept
    p = next_token_probs(LOGITS, SamplingConfig(min_p=0.01))[0]
    assert p[1] == 0 and p[0] > 0.2


def test_repetition_penalty():
    out = apply_repetition_penalty(LOGITS, torch.tensor([[True, True, False]]), 2.0)
    assert out[0].tolist() == pytest.approx([1.9, -4.0, 5.0])


@pytest.mark.parametrize("kwargs, key", [({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
                                         ({"top_k": 0}, "top_k"), ({"temperature": -0.1}, "temperature"),
                                         ({"min_p": 1.0}, "min_p"), ({"max_new_tokens": 0}, "max_new_tokens")])
def test_bad_sampling_arguments(kwargs, key):
    with pytest.raises(GenerateError, match=rf"^{key}: .*Fix: "):
        SamplingConfig(**kwargs).validate()


@pytest.fixture(scope="module")
def gen(trained):
    return Generator.from_checkpoint(trained("untied"), device="cpu")


PROMPTS = ["It was", "The school master said that I", "\u201cYou"]


@pytest.mark.slow
def test_cache_gives_the_same_tokens_as_recomputing(gen):
    for cfg in (SamplingConfig(temperature=0, max_new_tokens=40, stop_at_eod=False),
                SamplingConfig(temperature=0.9, top_k=50, top_p=0.95, min_p=0.02, repetition_penalty=1.3,
                               max_new_tokens=40, seed=3, stop_at_eod=False)):
        with_cache = gen.generate(PROMPTS, cfg, use_cache=True)
        without = gen.generate(PROMPTS, cfg, use_cache=False)
        assert [c.tokens for c in with_cache] == [c.tokens for c in without]
        assert all(len(c.tokens) == 40 for c in with_cache)


@pytest.mark.slow
def test_batched_prompts_equal_single_prompts(gen):
    cfg = SamplingConfig(temperature=0, max_new_tokens=30)
    batched = gen.generate(PROMPTS, cfg)
    single = [gen.generate([p], cfg)[0] for p in PROMPTS]
    assert [c.tokens for c in batched] == [c.tokens for c in single]
    # seeded sampling is reproducible
    s = SamplingConfig(temperature=1.0, max_new_tokens=30, seed=7)
    assert [c.tokens for c in gen.generate(PROMPTS, s)] == [c.tokens for c in gen.generate(PROMPTS, s)]


@pytest.mark.slow
def test_logits_equal_megatron_gpt_model(trained, tmp_path):
    for name in ("untied", "tied_pp2"):
        run = trained(name)
        tokens = torch.randint(4, 500, (2, 64), generator=torch.Generator().manual_seed(0))
        torch.save(tokens, tmp_path / "tokens.pt")
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        proc = subprocess.run([sys.executable, "-m", "tests.pretrain.megatron_forward", str(run),
                               str(tmp_path / "tokens.pt"), str(tmp_path / "ref.pt")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ref = torch.load(tmp_path / "ref.pt")
        if ref.shape[0] != tokens.shape[0]:  # megatron returns [S, B, V] without labels
            ref = ref.transpose(0, 1)
        ours = InferenceModel.from_checkpoint(run, device="cpu")(tokens)
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max().item() < 1e-5, name


@pytest.mark.slow
def test_any_layout_loads_and_agrees(trained):
    """The same run trained under TP=2 gives (up to fp32 reduction order) the single-process model."""
    tokens = torch.randint(4, 500, (2, 48), generator=torch.Generator().manual_seed(1))
    a = InferenceModel.from_checkpoint(trained("untied"), device="cpu")(tokens)
    b = InferenceModel.from_checkpoint(trained("untied_tp2"), device="cpu")(tokens)
    assert (a - b).abs().max().item() < 1e-2
    tied = Generator.from_checkpoint(trained("tied_pp2"), device="cpu")
    assert len(tied.generate("It was", SamplingConfig(max_new_tokens=5, stop_at_eod=False))[0].tokens) == 5


@pytest.mark.slow
def test_bad_input(gen, trained, capsys):
    with pytest.raises(GenerateError, match=r"^prompt: .*longer than the model's context of 128.*Fix"):
        gen.generate_ids([[5] * 129], SamplingConfig(max_new_tokens=1))
    with pytest.raises(GenerateError, match=r"^max_new_tokens: .*Fix: use max_new_tokens <= 28"):
        gen.generate_ids([[5] * 100], SamplingConfig(max_new_tokens=40))
    reader = CheckpointReader.open(trained("untied"))
    m = reader.model_config
    m.hidden_size = 256
    with pytest.raises(ModelShapeError, match=r"different model shape"):
        InferenceModel(m, reader.vocab_size, reader.model_state_dict())
    m = reader.model_config
    m.untie_embeddings = False
    with pytest.raises(ModelShapeError, match=r"untie_embeddings"):
        InferenceModel(m, reader.vocab_size, reader.model_state_dict())
    assert main([f"run.dir={trained('untied')}", "prompt=x", "top_p=0"]) == 2
    assert "top_p: must be in (0, 1]" in capsys.readouterr().err
    assert main([f"run.dir={trained('untied')}", "prompt=x", "tokenizer_model=/nonexistent.model"]) == 2
    assert "tokenizer: " in capsys.readouterr().err
    assert main(["prompt=x"]) == 2 and "run.dir: no checkpoint given" in capsys.readouterr().err


@pytest.mark.slow
def test_cli(trained, capsys):
    assert main([f"run.dir={trained('untied')}", "prompt=It was", "num_samples=2", "temperature=0.8",
                 "top_p=0.95", "max_new_tokens=8", "seed=1"]) == 0
    out = capsys.readouterr().out
    assert "settings: temperature=0.8" in out and out.count("--- sample") == 2
