"""pipeline=full through the CLI on the sample kit: documents conserved through every step, tokens from the mix
to the shards, the tokenizer's share-weighted sample, the data card, resume as a whole, and config errors."""

from __future__ import annotations

import bz2
import json
import shutil
from pathlib import Path

import pytest
from stage_helpers import cli, manifest

from conf import ConfigError
from data_pipeline.config import load

# the kit's crawl unfiltered (the FineWeb preset keeps 6 of its 847 records: too few to mix), a small BPE
SETTINGS = ["pipeline=full", "executor.tasks=2", "progress=false", "pipeline.sources.crawl.filters=none",
            # the kit's crawl without its 2,465 documentation pages (quickstart runs them): a shorter test
            "pipeline.sources.crawl.inputs=[{paths:[pywb_warcs],format:warc},{paths:[chardet_tests],format:pages}]",
            "mix.sources.crawl.max_epochs=50", "mix.sources.books.share=0.3", "mix.total_tokens=3e5",
            "pipeline.tokenizer.vocab_size=2000", "pipeline.tokenizer.character_coverage=0.98",
            "pipeline.tokenizer.sample_bytes=4000000"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, pywb_warcs, chardet_pages):
    out = tmp_path_factory.mktemp("full") / "out"
    proc = cli(*SETTINGS, f"output.dir={out}", timeout=900)
    return out, proc


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_documents_conserved_through_every_step(full_run):
    out, _ = full_run
    mix = manifest(out / "mix")
    last_kept = 0
    for source, steps in {"crawl": ["filter_0", "filter_1", "dedup", "score"], "wikipedia": ["filter", "dedup"],
                          "books": ["filter", "dedup"]}.items():
        ms = {s: manifest(out / "sources" / source / s) for s in steps}
        assert all(m["balanced"] for m in ms.values())
        filters = [m for s, m in ms.items() if s.startswith("filter")]
        assert ms["dedup"]["documents_in"] == sum(m["kept"]["documents"] for m in filters)
        if "score" in ms:
            assert ms["score"]["documents_in"] == ms["score"]["kept"]["documents"] == ms["dedup"]["kept"]["documents"]
        last_kept += ms[steps[-1]]["kept"]["documents"]
    assert manifest(out / "sources/crawl/dedup")["removed_total"] > 0  # the kit's crawl has duplicates
    assert mix["balanced"] and mix["documents_in"] == last_kept
    tok = manifest(out / "tokens")
    rows = mix["mix"]["sources"]
    assert tok["balanced"] and tok["documents_in"] == sum(r["documents_written"] + r["validation_documents"]
                                                          for r in rows.values())
    for name, row in rows.items():
        assert tok["tokenize"]["tokens"].get(f"train.{name}", 0) == row["realised_tokens"]
        assert row["epochs"] <= row["max_epochs"]
    assert all(rows[n]["realised_tokens"] > 0 for n in rows)


def test_blend_tokenizer_sample_and_shards_agree(full_run):
    out, _ = full_run
    blend = _json(out / "tokens/blend.json")
    tokens = manifest(out / "tokens")["tokenize"]["tokens"]
    train = dict(zip(blend["train"][1::2], blend["train"][0::2]))
    assert {Path(p).name.removesuffix("_text_document"): w for p, w in train.items()} == \
        {k.split(".", 1)[1]: v for k, v in tokens.items() if k.startswith("train.")}
    sha = _json(out / "tokenizer/bpe.json")["sha256"]
    for prefix in train:
        assert _json(Path(prefix + ".json"))["tokenizer_sha256"] == sha
    # the BPE's sample: each source's share of pipeline.tokenizer.sample_bytes, at most that many bytes
    sample = _json(out / "tokenizer/sample.json")
    shares = {"crawl": 0.5, "wikipedia": 0.4, "books": 0.3}
    for name, s in sample.items():
        assert s["budget_bytes"] == round(4_000_000 * shares[name] / 1.2)
        assert 0 < s["bytes"] <= s["budget_bytes"] and s["documents"] <= s["of_documents"]
    assert sample["crawl"]["documents"] < sample["crawl"]["of_documents"]  # a sample, not the first files


def test_data_card(full_run):
    out, proc = full_run
    card = _json(out / "data_card.json")
    assert set(card["sources"]) == {"crawl", "wikipedia", "books"}
    crawl = card["sources"]["crawl"]
    assert crawl["read"] == sum(manifest(out / "sources/crawl" / f)["documents_in"] for f in ("filter_0", "filter_1"))
    assert crawl["mix"] == manifest(out / "mix")["mix"]["sources"]["crawl"]
    assert card["classifier"]["heldout"]["roc_auc"] > 0.9
    for plot in card["plots"]:
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "data_card.md").read_text()
    for name in ("crawl", "wikipedia", "books"):
        assert f"| {name} | {card['mixture']['sources'][name]['target_share']:.4f} |" in md
    assert "data card:" in proc.stdout


def test_rerun_skips_finished_work_and_refuses_a_changed_mixture(full_run):
    out, _ = full_run
    shards = {p: p.read_bytes() for p in sorted((out / "tokens").rglob("*_text_document.*"))}
    card = (out / "data_card.json").read_bytes()
    proc = cli(*SETTINGS, f"output.dir={out}", timeout=600)
    assert proc.stdout.count(": done (") == 12  # 10 stages, the classifier and the tokenizer; the card is rewritten
    assert (out / "data_card.json").read_bytes() == card
    # a lost step is redone with the same bytes
    shutil.rmtree(out / "tokens")
    cli(*SETTINGS, f"output.dir={out}", timeout=600)
    assert {p: p.read_bytes() for p in sorted((out / "tokens").rglob("*_text_document.*"))} == shards
    proc = cli(*SETTINGS, "mix.total_tokens=2e5", f"output.dir={out}", check=False)
    assert proc.returncode == 2 and f"{out}/mix holds a stage started with a different config" in proc.stderr


def test_config_errors_name_the_key(tmp_path):
    def error(*overrides):
        with pytest.raises(ConfigError) as e:
            load(["pipeline=full", f"output.dir={tmp_path}", *overrides])
        return str(e.value)

    assert "mix.sources" in error("mix=gpt3")
    assert "pipeline.sources.crawl.inputs[0].paths" in error("pipeline.sources.crawl.inputs=[{paths:[/no/such]}]")
    assert "pipeline.sources.books.filters" in error("pipeline.sources.books.filters=nope")
    assert "quality=reference" in error("pipeline.sources.wikipedia.quality=none", "pipeline.sources.books.quality=none")
    assert "mix.tokenizer" in error("mix.tokenizer=x.model")


def test_mediawiki_input_counts_redirects_and_a_truncated_dump(tmp_path):
    from data_pipeline.samples import fetch

    dump = fetch(["enwiki"])["enwiki"]
    cli("input.format=mediawiki", f"input.paths=[{dump}]", "filters=none", "progress=false",
        f"output.dir={tmp_path / 'whole'}")
    m = manifest(tmp_path / "whole")
    assert (m["documents_in"], m["kept"]["documents"], m["removed"]["reader"]) == (206, 106, {"redirect": 100})
    cut = tmp_path / "cut" / "cut.xml.bz2"
    cut.parent.mkdir()
    xml = bz2.decompress(dump.read_bytes())
    cut.write_bytes(bz2.compress(xml[: len(xml) // 2]))
    cli("input.format=mediawiki", f"input.paths=[{cut}]", "filters=none", "progress=false",
        f"output.dir={tmp_path / 'cutout'}")
    m = manifest(tmp_path / "cutout")
    assert m["balanced"] and m["errors"]["reader"] == {"corrupt_or_truncated_dump": 1}
    assert 0 < m["kept"]["documents"] < 106
