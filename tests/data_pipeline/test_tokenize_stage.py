"""stage=tokenize through the real CLI on a mix stage's output: documents and tokens conserved, one merged
.bin/.idx per (split, source) readable by megatron-core, a blend whose shares megatron's blended dataset
realises, and the trainer reading it with data.blend (its tokenizer checked against the shards')."""

from __future__ import annotations

import json
import numpy as np
import pytest
from stage_helpers import cli, manifest
from test_mix import run_mix, sources  # noqa: F401 - the fixture

from tests.conftest import run_trainer


@pytest.fixture(scope="module")
def tokenized(sources, tmp_path_factory):  # noqa: F811
    root, model = sources
    out = tmp_path_factory.mktemp("tok")
    probe = out / "probe"
    run_mix(root, model, probe, "mix.total_tokens=1")
    wiki = json.loads((probe / "plan.json").read_text())["sources"]["wikipedia"]["available_tokens"]
    run_mix(root, model, out / "mixed", f"mix.total_tokens={int(1.4 * wiki / 0.4)}", "mix.holdout=0.1")
    cli("stage=tokenize", f"tokenize.tokenizer={model}", f"input.paths=[{out / 'mixed' / 'documents'},"
        f"{out / 'mixed' / 'valid'}]", "input.format=jsonl", "executor.tasks=3", f"output.dir={out / 'tokens'}",
        "progress=false")
    return out, model


def test_tokens_and_documents_are_conserved_and_shares_realised(tokenized):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    out, model = tokenized
    mixed, m = manifest(out / "mixed"), manifest(out / "tokens")
    assert m["balanced"] and m["tokenize"]["consistent"]
    written = sum(r["documents_written"] + r["validation_documents"] for r in mixed["mix"]["sources"].values())
    assert m["documents_in"] == written and m["kept"]["documents"] == written
    blend = json.loads((out / "tokens" / "blend.json").read_text())
    for name, row in mixed["mix"]["sources"].items():
        prefix = str(out / "tokens" / "train" / f"{name}_text_document")
        ds = IndexedDataset(prefix)
        assert int(ds.sequence_lengths.sum()) == row["realised_tokens"]  # the mix's exact count, encoded
        assert len(ds) == row["documents_written"]
        weight = blend["train"][blend["train"].index(prefix) - 1]
        assert weight == row["realised_tokens"]
        meta = json.loads((out / "tokens" / "train" / f"{name}_text_document.json").read_text())
        assert meta["tokenizer_sha256"] and meta["documents"] == len(ds)
    assert len(blend["valid"]) == 2 * 3


def test_megatron_blended_dataset_realises_the_mixture(tokenized):
    """A dry run of megatron-core's blended-index builder over blend.json: the share of samples drawn from
    each source over the first 20,000 samples is within 0.1 % (absolute) of the mixture's token share."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from pretrain.config import parse_blend
    from pretrain.data import SentencePieceIds

    out, model = tokenized
    blend = json.loads((out / "tokens" / "blend.json").read_text())
    prefixes, weights = parse_blend(blend["train"])
    cfg = GPTDatasetConfig(random_seed=1, sequence_length=64, blend_per_split=[(prefixes, weights), None, None],
                           path_to_cache=str(out / "cache"), tokenizer=SentencePieceIds(str(model)),
                           reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
                           create_attention_mask=False, mmap_bin_files=True)
    n = 20000
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(out / "store"), 1), rank=0, world_size=1)
    try:  # megatron's builder asks the process group for the rank that builds the index cache
        train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [n, None, None], lambda: True, cfg).build()
    finally:
        dist.destroy_process_group()
    drawn = np.bincount(train.dataset_index[:n], minlength=len(prefixes)) / n
    target = np.asarray(weights) / sum(weights)
    assert np.abs(drawn - target).max() < 0.001, (drawn, target)
    rows = manifest(out / "mixed")["mix"]["sources"]
    total = sum(r["realised_tokens"] for r in rows.values())
    for prefix, share in zip(prefixes, target):  # the blend's weights are the mixture's realised token shares
        assert share == pytest.approx(rows[prefix.rsplit("/", 1)[1].removesuffix("_text_document")]["realised_tokens"] / total)
    assert max(abs(r["realised_tokens"] / total - r["target_share"]) for r in rows.values()) < 0.002


@pytest.mark.slow
def test_trainer_reads_the_blend(tokenized, tmp_path):
    """python -m pretrain data.blend=blend.json: trains on the train blend, evaluates each source's held-out
    documents (the valid blend) as val_loss/<source>."""
    out, model = tokenized
    proc = run_trainer(1, ["model=tiny", "train.iters=3", "train.global_batch_size=4", "train.micro_batch_size=2",
                           "model.seq_length=64", "train.eval_iters=1", "train.eval_interval=3",
                           "optim.warmup_iters=1", "logging.wandb.mode=disabled",
                           f"data.blend={out / 'tokens' / 'blend.json'}", f"data.tokenizer_model={model}",
                           f"run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    assert evals and all(f"val_loss/{s}" in evals[-1] for s in ("crawl", "wikipedia", "books")), evals


def test_shards_and_another_tokenizer_are_refused(tokenized, tmp_path):
    from data_pipeline.samples import fetch
    from data_pipeline.tokenizer import train_tokenizer
    from pretrain.config import ConfigError, load, validate

    out, model = tokenized
    words = fetch(["botchan"])["botchan"].read_text().split()
    other = train_tokenizer([" ".join(words[i:i + 400]) for i in range(0, len(words), 400)], 700,
                            tmp_path / "other", files=False)  # another vocabulary: another sha256
    blend = f"data.blend={out / 'tokens' / 'blend.json'}"
    cfg = validate(load(["model=tiny", blend, f"data.tokenizer_model={model}", "train.eval_iters=1"]), 1)
    assert cfg is not None
    with pytest.raises(ConfigError, match=r"data.tokenizer_model: .* is not the tokenizer .* Fix: .*re-encode"):
        validate(load(["model=tiny", blend, f"data.tokenizer_model={other}"]), 1)
    with pytest.raises(ConfigError, match=r"data.blend: cannot read"):
        validate(load(["model=tiny", f"data.blend={tmp_path / 'missing.json'}"]), 1)
