"""Export to Hugging Face Llama, checked by transformers: the same logits (1e-4, fp32) on held-out text and the
same greedy continuation, tied and untied (the tied one saved under PP=2); AutoTokenizer encodes like the
sentencepiece model. Import: HF -> initial checkpoint is the exact inverse, and the trainer starts from it with a
first loss equal to the HF model's loss on that batch."""

from __future__ import annotations

import json

import pytest
import torch

from pretrain.checkpoint_reader import CheckpointReader
from pretrain.export_hf import ExportError, export, import_hf, main
from pretrain.generate import Generator, SamplingConfig
from pretrain.metrics import read_metrics
from tests.conftest import run_trainer

transformers = pytest.importorskip("transformers")

HELD_OUT = ("He said it in a loud voice:   \u201cI am not afraid!\u201d\n\n\tThe  year 1906, 12:30 p.m.; "
            "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F642 \u2014 end.\r\n")


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    return {name: export(trained(name), tmp_path_factory.mktemp(f"hf_{name}")) for name in ("untied", "tied_pp2")}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["untied", "tied_pp2"])
def test_transformers_logits_and_greedy_match(exported, trained, name):
    out = exported[name]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] == (name == "tied_pp2") and cfg["num_key_value_heads"] == 2
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "tokenizer.model"} <= {p.name for p in out.iterdir()}
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    gen = Generator.from_checkpoint(trained(name), device="cpu")
    text_ids = torch.tensor([gen.encode(HELD_OUT * 4)[:120]])
    with torch.no_grad():
        ref = hf(text_ids).logits
    ours = gen.model(text_ids)
    assert (ours - ref).abs().max().item() < 1e-4
    prompt = gen.encode("It was")
    hf_out = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=20, min_new_tokens=20,
                         eos_token_id=None, pad_token_id=3)[0, len(prompt):].tolist()
    ours_out = gen.generate_ids([prompt], SamplingConfig(temperature=0, max_new_tokens=20, stop_at_eod=False))[0][0]
    assert ours_out == hf_out


@pytest.mark.slow
def test_auto_tokenizer_encodes_like_sentencepiece(exported, trained):
    import sentencepiece as spm

    tok = transformers.AutoTokenizer.from_pretrained(exported["untied"])
    sp = spm.SentencePieceProcessor(model_file=str(CheckpointReader.open(trained("untied")).tokenizer_model))
    texts = [HELD_OUT, " leading space", "two  spaces\n\n\nand\ttabs    ", "digits 1234567890 3.14159",
             "\u00fcber stra\u00dfe \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u4e2d\u6587 \U0001F680",
             "", " ", "\n", "x" * 50, "</s> <s> literal specials?"]
    for text in texts:
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text), repr(text)
        assert tok.decode(sp.encode(text)) == text, repr(text)
    assert tok.encode("It was", add_special_tokens=True) == sp.encode("It was")  # no BOS: trained without


@pytest.mark.slow
def test_import_round_trip_and_trainer_continues(exported, trained, tiny_shards, tmp_path):
    from pretrain.config import load
    from pretrain.data import build_datasets

    run_dir = tmp_path / "imported"
    ckpt, overrides = import_hf(exported["untied"], run_dir)
    want = CheckpointReader.open(trained("untied")).model_state_dict()
    got = CheckpointReader.open(ckpt).model_state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    common = ["train.iters=1", "train.global_batch_size=8", "train.micro_batch_size=4", "train.eval_iters=0",
              "optim.warmup_iters=0", "logging.wandb.mode=disabled", tiny_shards[0], *overrides,
              f"run.dir={run_dir}"]
    proc = run_trainer(1, common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "step 0" in proc.stdout
    first = read_metrics(run_dir / "metrics.jsonl")[0]["loss"]
    cfg = load(common)
    ds = build_datasets(cfg, str(run_dir / "data_cache")).train
    tokens = torch.stack([torch.as_tensor(ds[i]["tokens"]) for i in range(8)])
    labels = torch.stack([torch.as_tensor(ds[i]["labels"]) for i in range(8)])
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported["untied"], dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(tokens).logits
    hf_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)).item()
    assert first == pytest.approx(hf_loss, rel=1e-4)


@pytest.mark.slow
def test_bad_input(exported, trained, tmp_path, capsys):
    from pretrain.config import ModelConfig

    with pytest.raises(ExportError, match=r"^model.hidden_size: the HF model has 128.*Fix: set model.hidden_size=128"):
        import_hf(exported["untied"], tmp_path / "x", expect=ModelConfig(hidden_size=256, vocab_size=512))
    with pytest.raises(ExportError, match=r"^HF_DIR: .*config.json not found"):
        import_hf(tmp_path, tmp_path / "y")
    # a checkpoint without its tokenizer
    import shutil
    src = CheckpointReader.open(trained("untied")).dir
    bare = tmp_path / "bare" / src.name
    shutil.copytree(src, bare)
    (bare / "tokenizer.model").unlink()
    meta = json.loads((bare / "meta.json").read_text())
    meta["sha256"].pop("tokenizer.model")
    (bare / "meta.json").write_text(json.dumps(meta))
    assert main([str(bare), str(tmp_path / "out")]) == 2
    assert "tokenizer: checkpoint" in capsys.readouterr().err
