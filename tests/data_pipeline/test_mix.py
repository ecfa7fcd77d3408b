"""stage=mix through the real CLI: shares solved from exact token counts, epochs within caps, the fractional
epoch drawn per document from hash(id, seed), the same bytes for any task count, refusals that name the fix."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import sentencepiece as spm
import zstandard
from stage_helpers import cli, manifest

from data_pipeline.config import ConfigError
from data_pipeline.mix.stage import BINS, solve

@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three sources of documents of random length cut from the kit's botchan, 3 .jsonl.zst shards each."""
    from data_pipeline.samples import fetch
    from data_pipeline.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("mix")
    words = fetch(["botchan"])["botchan"].read_text().split()
    rng = random.Random(0)
    for name, n in {"crawl": 300, "wiki": 120, "books": 30}.items():
        (root / name).mkdir()
        for f in range(3):
            docs = []
            for i in range(n // 3):
                start, length = rng.randrange(len(words) - 300), rng.randint(20, 200)
                docs.append({"id": f"{name}{f}-{i}", "text": " ".join(words[start:start + length])})
            data = "".join(json.dumps(d) + "\n" for d in docs).encode()
            (root / name / f"{f:02d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    sample = [" ".join(words[i:i + 400]) for i in range(0, len(words), 400)]
    model = train_tokenizer(sample, 512, root / "tok", files=False)
    return root, model


def run_mix(root, model, out, *extra, tasks=2, check=True):
    return cli("stage=mix", "mix=demo", f"mix.tokenizer={model}", "input.format=jsonl", "executor=local",
               f"executor.tasks={tasks}", f"output.dir={out}", "progress=false",
               f"mix.sources.crawl.paths=[{root / 'crawl'}]", "mix.sources.crawl.max_epochs=1",
               f"mix.sources.wikipedia.paths=[{root / 'wiki'}]", "mix.sources.wikipedia.max_epochs=3",
               f"mix.sources.books.paths=[{root / 'books'}]", *extra, check=check)


def _tokens(model, folder):
    sp = spm.SentencePieceProcessor(model_file=str(model))
    out = {}
    for p in sorted(folder.glob("*.jsonl.zst")):
        for line in zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes()).decode().splitlines():
            d = json.loads(line)
            src = d["metadata"]["mix"]["source"]
            assert p.name.startswith(src + "-")
            out[src] = out.get(src, 0) + len(sp.encode(d["text"])) + 1
    return out


def test_mix_realises_the_shares_in_tokens(sources, tmp_path):
    root, model = sources
    # total = 1.4x the wiki tokens / 0.4 -> wiki 1.4 epochs, crawl below one epoch, books several
    probe = run_mix(root, model, tmp_path / "probe", "mix.total_tokens=1", check=False)
    assert probe.returncode == 0, probe.stderr[-2000:]
    plan = json.loads((tmp_path / "probe" / "plan.json").read_text())["sources"]
    wiki = plan["wikipedia"]["available_tokens"]
    total = int(1.4 * wiki / 0.4)
    run_mix(root, model, tmp_path / "t2", f"mix.total_tokens={total}", "mix.holdout=0.1")
    m = manifest(tmp_path / "t2")
    assert m["balanced"] and m["mix"]["consistent"], m
    written = _tokens(model, tmp_path / "t2" / "documents")
    for name, share in (("crawl", 0.5), ("wikipedia", 0.4), ("books", 0.1)):
        row = m["mix"]["sources"][name]
        assert written[name] == row["realised_tokens"]  # the plan's exact token count is what was written
        assert abs(row["realised_tokens"] / total - share) < 0.002, (name, row)
        assert row["epochs"] <= row["max_epochs"]
    assert 1 < m["mix"]["sources"]["wikipedia"]["epochs"] < 2 and m["mix"]["sources"]["crawl"]["epochs"] < 1
    assert m["removed"]["mix"]["not_sampled"] > 0  # crawl below one epoch leaves documents out
    # held-out validation documents: written once, never mixed into training
    valid = [json.loads(x) for p in sorted((tmp_path / "t2" / "valid").glob("*.jsonl.zst"))
             for x in zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes()).decode().splitlines()]
    train_ids = {json.loads(x)["id"] for p in sorted((tmp_path / "t2" / "documents").glob("*.jsonl.zst"))
                 for x in zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes()).decode().splitlines()}
    assert 20 < len(valid) < 80 and not train_ids & {d["id"] for d in valid}
    assert sum(r["validation_documents"] for r in m["mix"]["sources"].values()) == len(valid)
    # the same bytes for another task count (the shards are named by epoch x tasks + task, so compare content)
    run_mix(root, model, tmp_path / "t3", f"mix.total_tokens={total}", "mix.holdout=0.1", tasks=3)
    assert _tokens(model, tmp_path / "t3" / "documents") == written
    assert json.loads((tmp_path / "t3" / "plan.json").read_text()) == json.loads((tmp_path / "t2" / "plan.json").read_text())


def test_a_source_without_enough_text_is_refused_naming_the_fixes(sources, tmp_path):
    root, model = sources
    proc = run_mix(root, model, tmp_path / "big", "mix.total_tokens=1e8", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    for fix in ("source books would need", "mix.sources.books.max_epochs=4", "Fix: mix.total_tokens<=",
                "mix.sources.crawl.max_epochs="):
        assert fix in proc.stderr, proc.stderr[-2000:]
    bad = run_mix(root, model, tmp_path / "bad", "mix.total_tokens=1e5", "input.paths=[x]", check=False)
    assert bad.returncode == 2 and "drop input.paths" in bad.stderr


def test_solve_fractional_epoch_threshold_is_the_closest_bin():
    rng = np.random.default_rng(0)
    counts = np.zeros((1, 2 + 2 * BINS), np.int64)
    hist = rng.integers(0, 50, BINS)
    counts[0, 2:2 + BINS] = hist
    counts[0, 2 + BINS:] = (hist > 0)
    counts[0, 1], counts[0, 0] = hist.sum(), (hist > 0).sum()
    plan = solve(counts, ["a"], [1.0], [3.0], 2.3 * hist.sum())["a"]
    assert plan["full_epochs"] == 2 and abs(plan["planned_tokens"] - 2.3 * hist.sum()) <= hist.max()
    with pytest.raises(ConfigError, match="would need 3.3 epochs"):
        solve(counts, ["a"], [1.0], [3.0], 3.3 * hist.sum())


def test_a_share_that_whole_documents_cannot_realise_gets_a_note():
    """One large document cannot take a fractional epoch: the plan says so, with the fix; a source of many small
    documents realises its share and gets no note."""
    counts = np.zeros((2, 2 + 2 * BINS), np.int64)
    counts[0, 0], counts[0, 1], counts[0, 2 + 100], counts[0, 2 + BINS + 100] = 1, 90_000, 90_000, 1  # one book
    hist = np.random.default_rng(0).integers(1, 50, BINS)
    counts[1, 0], counts[1, 1], counts[1, 2:2 + BINS], counts[1, 2 + BINS:] = BINS, hist.sum(), hist, 1
    total = 0.9 * hist.sum() / 0.9  # the many-documents source at 0.9 of it: below one epoch
    plan = solve(counts, ["book", "web"], [0.1, 0.9], [3.0, 3.0], total)
    assert "note" not in plan["web"]
    note = plan["book"]["note"]
    assert "source book gets a share of" in note and "1 of 90,000 tokens" in note
    assert "input.txt_docs=paragraph" in note and "set its share to the realised one" in note


def test_quality_sampling_offers_what_gpt3s_rule_keeps(sources, tmp_path):
    """select=pareto: a crawl document enters the mixture when its Pareto(9) draw from hash(id, mix.seed)
    exceeds 1 - quality_score; unscored documents are counted, not silently mixed."""
    from data_pipeline.score.rules import pareto_keep

    root, model = sources
    rng = random.Random(3)
    scored = tmp_path / "scored"
    scored.mkdir()
    ids, scores = [], []
    for p in sorted((root / "crawl").glob("*.jsonl.zst")):
        lines = zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes()).decode().splitlines()
        out = []
        for record, line in enumerate(lines):
            d = json.loads(line)
            if record != 0:  # the first document of each file has no score
                d["quality_score"] = rng.random()
                ids.append(f"crawl/{p.name}#{record}")
                scores.append(d["quality_score"])
            out.append(json.dumps(d) + "\n")
        (scored / p.name).write_bytes(zstandard.ZstdCompressor().compress("".join(out).encode()))
    proc = run_mix(root, model, tmp_path / "out", "mix.total_tokens=1000", "mix.holdout=0",
                   f"mix.sources.crawl.paths=[{scored}]", "mix.sources.crawl.select=pareto", "mix.seed=7")
    assert proc.returncode == 0
    m = manifest(tmp_path / "out")
    kept = int(pareto_keep(ids, scores, 7, 9.0).sum())
    assert m["balanced"] and m["removed"]["mix"]["no_quality_score"] == 3
    assert m["removed"]["mix"]["not_selected"] == len(ids) - kept
    assert 0 < kept < len(ids)


def _scored_crawl(root, folder, rng, digits):
    """The crawl source with metadata.quality_score rounded to `digits` (many ties), the first document of each
    file unscored; returns the offline ids (as the mix names them) and scores."""
    folder.mkdir()
    ids, scores, json_ids = [], [], {}
    for p in sorted((root / "crawl").glob("*.jsonl.zst")):
        lines = zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes()).decode().splitlines()
        out = []
        for record, line in enumerate(lines):
            d = json.loads(line)
            if record != 0:
                d["quality_score"] = round(rng.random(), digits)
                ids.append(f"crawl/{p.name}#{record}")
                scores.append(d["quality_score"])
                json_ids[ids[-1]] = d["id"]
            out.append(json.dumps(d) + "\n")
        (folder / p.name).write_bytes(zstandard.ZstdCompressor().compress("".join(out).encode()))
    return ids, scores, json_ids


def _written(folder, source):
    out = {}
    for p in sorted(folder.glob(f"{source}-*.jsonl.zst")):
        for line in zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes()).decode().splitlines():
            i = json.loads(line)["id"]
            out[i] = out.get(i, 0) + 1
    return out


def test_top_fraction_selects_what_keep_top_fraction_keeps(sources, tmp_path):
    """select=top: exactly the documents keep_top_fraction keeps offline (score descending, ties broken by
    hash(id, mix.seed)), for 2 and 3 tasks; the plan's available tokens are the selected documents' tokens."""
    from data_pipeline.score.rules import keep_top_fraction

    root, model = sources
    ids, scores, json_ids = _scored_crawl(root, tmp_path / "scored", random.Random(5), 1)  # 11 score values
    assert len(set(scores)) <= 11 and len(ids) == 297
    selected = {json_ids[i] for i, k in zip(ids, keep_top_fraction(ids, scores, 0.3, seed=7)) if k}
    assert len(selected) == round(0.3 * 297)
    args = [f"mix.sources.crawl.paths=[{tmp_path / 'scored'}]", "mix.sources.crawl.select=top",
            "mix.sources.crawl.fraction=0.3", "mix.sources.crawl.max_epochs=3", "mix.seed=7", "mix.holdout=0"]
    probe = run_mix(root, model, tmp_path / "probe", "mix.total_tokens=1", *args)
    crawl = json.loads((tmp_path / "probe" / "plan.json").read_text())["sources"]["crawl"]
    assert crawl["available_documents"] == len(selected) and crawl["top"]["tied"] == 0
    total = int(1.5 * crawl["available_tokens"] / 0.5)  # crawl 1.5 epochs: every selected document written
    runs = {}
    for tasks in (2, 3):
        out = tmp_path / f"t{tasks}"
        run_mix(root, model, out, f"mix.total_tokens={total}", *args, tasks=tasks)
        m = manifest(out)
        assert m["balanced"] and m["mix"]["consistent"], m
        assert m["documents_in"] == m["kept"]["documents"] + m["removed_total"] == 450
        assert m["removed"]["mix"]["no_quality_score"] == 3
        assert m["removed"]["mix"]["not_selected"] == 297 - len(selected)
        runs[tasks] = _written(out / "documents", "crawl")
        assert set(runs[tasks]) == selected and set(runs[tasks].values()) == {1, 2}
        assert _tokens(model, out / "documents")["crawl"] == m["mix"]["sources"]["crawl"]["realised_tokens"]
        assert abs(m["mix"]["sources"]["crawl"]["epochs"] - 1.5) < 0.01
    assert runs[2] == runs[3]
    assert (json.loads((tmp_path / "t2" / "plan.json").read_text())
            == json.loads((tmp_path / "t3" / "plan.json").read_text()))


def test_top_fraction_config_errors(sources, tmp_path):
    root, model = sources
    for value in ("0", "1.5", "-0.1"):
        proc = run_mix(root, model, tmp_path / f"f{value}", "mix.total_tokens=1000", "mix.sources.crawl.select=top",
                       f"mix.sources.crawl.fraction={value}", check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "mix.sources.crawl.fraction" in proc.stderr and "in (0, 1]" in proc.stderr, proc.stderr[-2000:]
    proc = run_mix(root, model, tmp_path / "sel", "mix.total_tokens=1000", "mix.sources.crawl.select=best",
                   check=False)
    assert proc.returncode == 2 and "use one of all, pareto, top" in proc.stderr, proc.stderr[-2000:]
    # valid, but round(0.001 x 297) = 0 documents: refused by the plan, naming the smallest fraction that keeps one
    ids, _, _ = _scored_crawl(root, tmp_path / "scored", random.Random(5), 3)
    proc = run_mix(root, model, tmp_path / "none", "mix.total_tokens=1000", "mix.sources.crawl.select=top",
                   "mix.sources.crawl.fraction=0.001", "mix.holdout=0",
                   f"mix.sources.crawl.paths=[{tmp_path / 'scored'}]",
                   check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"has {len(ids)} scored documents" in proc.stderr and "mix.sources.crawl.fraction>=" in proc.stderr


def test_top_select_keeps_both_documents_of_a_key_tied_at_the_cut():
    from data_pipeline.mix.stage import KEY, top_select

    rows = [(0.9, 1), (0.5, 7), (0.5, 7), (0.5, 9), (0.1, 0)]  # (score, tie hash)
    keys = np.array([(0, 0, 5, score, tie) for score, tie in rows], KEY)
    mask, info = top_select(keys, 0.4)  # round(0.4 x 5) = 2: the cut falls between the two (0.5, 7) records
    assert mask.tolist() == [True, True, True, False, False] and info["tied"] == 1
    mask, info = top_select(keys, 0.8)
    assert mask.tolist() == [True, True, True, True, False] and info["tied"] == 0 and info["threshold_tie"] == 9
