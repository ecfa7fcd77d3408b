"""Validation loss per data source: with several prefixes in data.paths, every evaluation also logs
val_loss/<source>, the loss on that source's own validation documents (none of which the run trains on), the
same number under any parallel layout, read back by the scaling tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.config import ConfigError, load, source_names, validate
from pretrain.metrics import read_metrics
from tests.conftest import run_trainer


@pytest.fixture(scope="module")
def two_sources(tiny_shards, tmp_path_factory) -> tuple[str, str, str]:
    """(botchan prefix, a second source, tokenizer): the second is the same novel upper-cased, encoded with the
    same tokenizer, so its token statistics (and loss) differ from the first's."""
    from data_pipeline.samples import fetch
    from data_pipeline.tokenizer import encode_documents

    first = tiny_shards[0].split("=[", 1)[1].rstrip("]")
    tokenizer = tiny_shards[1].split("=", 1)[1]
    lines = fetch(["botchan"])["botchan"].read_text().upper().splitlines(keepends=True)
    docs = ["".join(lines[i:i + 40]) for i in range(0, len(lines), 40)]
    second = tmp_path_factory.mktemp("shout") / "shout_text_document"
    encode_documents(docs, tokenizer, second)
    return first, str(second), tokenizer


def overrides(two_sources, *extra, weighted=True):
    first, second, tok = two_sources
    paths = f"[0.7,{first},0.3,{second}]" if weighted else f"[{first},{second}]"
    return ["model=tiny", f"data.paths={paths}", f"data.tokenizer_model={tok}", *extra]


@pytest.mark.parametrize("names, words", [
    ("[web]", "1 names ['web'] for the 2 sources"),
    ("[web,web]", "duplicate names ['web']"),
    ("[web,'']", "must be non-empty"),
    ("[web,a/b]", "without '/'"),
])
def test_bad_source_names_fail_in_validate(two_sources, names, words):
    with pytest.raises(ConfigError) as err:
        validate(load(overrides(two_sources, f"data.source_names={names}")), 1)
    msg = str(err.value)
    assert msg.startswith("data.source_names:") and words in msg and "Fix:" in msg, msg


def test_source_names_default_and_explicit(two_sources):
    assert source_names(load(overrides(two_sources))) == ["botchan", "shout"]  # _text_document dropped
    assert source_names(load(overrides(two_sources, "data.source_names=[novel,caps]"))) == ["novel", "caps"]
    same = load(["data.paths=[/a/web_text_document,/b/web_text_document,/c/web_1_text_document]"])
    assert source_names(same) == ["web_2", "web_3", "web_1"]  # collisions numbered, never onto another name


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group: megatron's BlendedDataset asks for the rank."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("weighted", [True, False])
def test_per_source_validation_documents_are_never_trained_on(two_sources, tmp_path, process_group, weighted):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from pretrain.data import build_datasets

    cfg = load(overrides(two_sources, "data.split='90,10,0'", "train.iters=20", "train.global_batch_size=8",
                         "train.eval_iters=3", weighted=weighted))
    ds = build_datasets(cfg, str(tmp_path / "cache"))
    assert list(ds.valid_by_source) == ["botchan", "shout"]
    for i, (name, valid) in enumerate(ds.valid_by_source.items()):
        prefix = two_sources[i]
        assert valid.dataset_path == prefix
        val_docs = set(valid.document_index.tolist())
        train_docs = set(ds.train.datasets[i].document_index.tolist())  # the blend's part from this source
        assert val_docs and not val_docs & train_docs, name
        n_docs = len(IndexedDataset(prefix).document_indices) - 1
        assert val_docs | train_docs == set(range(n_docs))  # split "90,10,0": every document in one of the two
        assert val_docs == set(ds.valid.datasets[i].document_index.tolist())  # the blend's validation documents
        assert len(valid) >= cfg.train.eval_iters * cfg.train.global_batch_size
    cfg.train.eval_per_source = False
    assert build_datasets(cfg, str(tmp_path / "cache")).valid_by_source == {}
    one = load(["model=tiny", f"data.paths=[{two_sources[0]}]", f"data.tokenizer_model={two_sources[2]}",
                "train.iters=20", "train.global_batch_size=8"])
    assert build_datasets(one, str(tmp_path / "cache")).valid_by_source == {}


LAYOUTS = {"single": (1, []), "dp2": (2, []), "pp2": (2, ["parallel.pp=2"])}


@pytest.fixture(scope="module")
def per_source_runs(two_sources, tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for name, (nproc, extra) in LAYOUTS.items():
        run_dir = tmp_path_factory.mktemp(f"persource_{name}")
        proc = run_trainer(nproc, [*overrides(two_sources), "train.iters=4", "train.eval_interval=2",
                                   "train.eval_iters=2", "train.global_batch_size=8", "train.micro_batch_size=2",
                                   "optim.warmup_iters=1", "train.save_interval=1000", "logging.wandb.mode=disabled",
                                   *extra, f"run.dir={run_dir}"])
        assert proc.returncode == 0, f"{name}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        runs[name] = run_dir
    return runs


def _val_rows(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "val_loss" in r]


def test_per_source_losses_in_metrics_and_layout_independent(per_source_runs):
    ref = _val_rows(per_source_runs["single"])
    assert [r["step"] for r in ref] == [2, 4]
    for r in ref:
        assert {"val_loss/botchan", "val_loss/shout", "val_time_s"} <= set(r)
        assert abs(r["val_loss/botchan"] - r["val_loss/shout"]) > 0.01  # two different held-out sets
    for layout in ("dp2", "pp2"):
        got = _val_rows(per_source_runs[layout])
        assert [r["step"] for r in got] == [2, 4]
        for a, b in zip(ref, got):
            for key in ("val_loss", "val_loss/botchan", "val_loss/shout"):
                assert b[key] == pytest.approx(a[key], rel=1e-5), (layout, a["step"], key)


def test_ladder_reader_exposes_per_source_curves(per_source_runs):
    from tools.scaling.ladder import read_run

    run_dir = per_source_runs["single"]
    curve = read_run(run_dir)
    assert curve.problem is None, curve.problem
    rows = _val_rows(run_dir)
    assert set(curve.val_loss_by_source) == set(curve.val_tokens_by_source) == {"botchan", "shout"}
    for source in ("botchan", "shout"):
        np.testing.assert_array_equal(curve.val_tokens_by_source[source], curve.val_tokens)
        np.testing.assert_allclose(curve.val_loss_by_source[source], [r[f"val_loss/{source}"] for r in rows])
