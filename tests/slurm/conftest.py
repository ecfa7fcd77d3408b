"""Slurm tests: a real local cluster (tools/localslurm), started once per session."""

from __future__ import annotations

import pytest

from tools.localslurm.pytest_plugin import local_slurm  # noqa: F401  (the session fixture)


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> list[str]:
    """A small token shard and its tokenizer, from the botchan sample, as trainer overrides.
    (Used until the trainer's own session fixture of the same name lands in tests/conftest.py.)"""
    from data_pipeline.samples import fetch
    from data_pipeline.tokenizer import encode_documents, train_tokenizer

    out = tmp_path_factory.mktemp("tiny_shards")
    text = fetch(["botchan"])["botchan"].read_text()
    lines = text.splitlines(keepends=True)
    docs = ["".join(lines[i:i + 40]) for i in range(0, len(lines), 40)]  # ~120 documents of 40 lines
    model = train_tokenizer(docs, 512, out / "tokenizer")
    encode_documents(docs, model, out / "botchan")
    return [f"data.paths=[{out / 'botchan'}]", f"data.tokenizer_model={model}"]
