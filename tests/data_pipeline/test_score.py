"""Quality scoring through the real CLIs: train the classifier on the sample kit, stage=score, score then dedup."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from stage_helpers import REPO, cli, manifest

from data_pipeline.samples import fetch


def train_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "data_pipeline.score", "train", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"train exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def read_docs(folder: Path) -> list[dict]:
    docs = []
    for path in sorted(folder.glob("*.jsonl*")):
        with open(path, "rb") as raw:
            f = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw)) if path.suffix == ".zst" else raw
            docs += [json.loads(line) for line in f if line.strip()]
    return docs


def botchan_passages(words: int = 150) -> list[str]:
    text = fetch(["botchan"])["botchan"].read_text(encoding="utf-8-sig").split()
    return [" ".join(text[i:i + words]) for i in range(0, len(text) - words, words)]


@pytest.fixture(scope="module")
def crawl(chardet_pages, tmp_path_factory):
    """Raw crawl from the kit: the chardet pages (30 languages) through the filter stage without filters."""
    out = tmp_path_factory.mktemp("crawl")
    cli(f"input.paths=[{chardet_pages}]", "input.format=pages", "filters=none", "executor.tasks=2",
        f"output.dir={out}", "progress=false")
    return out / "documents"


@pytest.fixture(scope="module")
def model(crawl, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("model") / "quality"
    proc = train_cli("positives.paths=[enwiki]", f"negatives.paths=[{crawl}]", "eval.positives.paths=[botchan]",
                     "eval.positives.chunk_words=200", f"output.prefix={prefix}")
    return prefix, proc


def test_train_writes_model_and_report(model, crawl, tmp_path):
    prefix, proc = model
    path = Path(f"{prefix}.model")
    report = json.loads(Path(f"{prefix}.report.json").read_text())
    assert report["model"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"sha256 {report['model']['sha256'][:16]}" in proc.stdout and "heldout" in proc.stdout
    held = report["heldout"]
    assert held["positives"] >= 5 and held["negatives"] >= 50  # ~20% of 106 articles and ~420 pages
    assert held["roc_auc"] >= 0.9 and held["accuracy"] >= 0.85
    # botchan, never trained on, against the held-out crawl: a source the classifier never saw
    assert report["eval"]["positives"] > 200 and report["eval"]["roc_auc"] >= 0.85
    by_path = {s["path"]: s for s in report["sources"]}
    assert by_path["enwiki"]["held_out"] + by_path["enwiki"]["trained_on"] == by_path["enwiki"]["documents"]
    assert by_path["botchan"]["trained_on"] == 0
    for s in report["sources"]:
        assert sum(s["held_out_histogram"]) == s["held_out"]
    assert by_path["botchan"]["held_out_mean_score"] > by_path[str(crawl)]["held_out_mean_score"] + 0.3
    assert report["settings"]["train"]["seed"] == 1 and report["settings"]["features"]["log2_features"] == 18
    # deterministic: the same command gives the same bytes; another seed another split and model
    again = tmp_path / "again"
    train_cli("positives.paths=[enwiki]", f"negatives.paths=[{crawl}]", "eval.positives.paths=[botchan]",
              "eval.positives.chunk_words=200", f"output.prefix={again}")
    assert Path(f"{again}.model").read_bytes() == path.read_bytes()
    assert Path(f"{again}.report.json").read_text().replace(str(again), "P") == \
        Path(f"{prefix}.report.json").read_text().replace(str(prefix), "P")


@pytest.mark.parametrize("args, message, code", [
    (["negatives.paths=[x]", "output.prefix=p"], "positives.paths: empty", 2),
    (["positives.paths=[enwiki]", "negatives.paths=[x]"], "output.prefix: not set", 2),
    (["positives.paths=[enwiki]", "negatives.paths=[x]", "output.prefix=p", "train.heldout=1.5"], "train.heldout", 2),
    (["positives.paths=[enwiki]", "negatives.paths=[x]", "output.prefix=p", "train.bogus=1"],
     "Key 'bogus' not in 'ScoreTrainSettings'", 2),
    (["positives.paths=[enwiki]", "negatives.paths=[/nonexistent/crawl]", "output.prefix=p"],
     "'/nonexistent/crawl' is neither a file, a directory nor a sample name", 1),
])
def test_train_bad_input_says_what_to_fix(tmp_path, args, message, code):
    args = [a.replace("output.prefix=p", f"output.prefix={tmp_path}/p") for a in args]
    proc = train_cli(*args, check=False)
    assert proc.returncode == code and message in proc.stderr, proc.stderr
    assert not (tmp_path / "p.model").exists()


def test_train_needs_both_classes(tmp_path):
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"text": "too short to train on"}) + "\n")
    proc = train_cli("positives.paths=[botchan]", "positives.chunk_words=100", f"negatives.paths=[{short}]",
                     f"output.prefix={tmp_path}/p", check=False)
    assert proc.returncode == 1 and "negatives.paths: no training document of 20 words" in proc.stderr


@pytest.fixture(scope="module")
def corpus(crawl, tmp_path_factory):
    """A small mixed corpus: 60 crawl documents and 40 botchan passages, in two JSONL files."""
    folder = tmp_path_factory.mktemp("corpus")
    pages = read_docs(crawl)[:60]
    with open(folder / "a_crawl.jsonl", "w") as f:
        f.writelines(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in pages)
    with open(folder / "b_books.jsonl", "w") as f:
        f.writelines(json.dumps({"id": f"botchan/{i}", "text": t}) + "\n" for i, t in enumerate(botchan_passages()[:40]))
    return folder


def test_score_stage_writes_every_document_with_its_score(model, corpus, tmp_path):
    from data_pipeline.score.model import QualityModel

    prefix, _ = model
    out = tmp_path / "scored"
    proc = cli("stage=score", f"score.model={prefix}.model", f"input.paths=[{corpus}]", "input.format=jsonl",
               "executor.tasks=2", f"output.dir={out}", "progress=false")
    m = manifest(out)
    assert m["balanced"] and m["documents_in"] == m["kept"]["documents"] == 100 and m["removed_total"] == 0
    qm = QualityModel.load(f"{prefix}.model")
    assert m["score"]["model_sha256"] == qm.sha256 and m["score"]["documents_scored"] == 100
    assert sum(m["score"]["histogram"]) == 100 and "quality scores (metadata.quality_score" in proc.stdout
    docs = read_docs(out / "documents")
    assert len(docs) == 100 and {d["metadata"]["quality_model"] for d in docs} == {qm.sha256[:16]}
    scores = {d["id"]: d["metadata"]["quality_score"] for d in docs}
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores.values())
    texts = {d["id"]: d["text"] for d in docs}
    ids = sorted(texts)
    assert [scores[i] for i in ids] == pytest.approx(qm.scores([texts[i] for i in ids]).tolist(), abs=1e-12)
    books = [s for i, s in scores.items() if i.startswith("botchan/")]
    web = [s for i, s in scores.items() if not i.startswith("botchan/")]
    assert len(books) == 40 and sum(books) / 40 > sum(web) / 60 + 0.3


def test_resume_with_another_model_is_refused(model, corpus, tmp_path):
    from data_pipeline.score.model import QualityModel

    prefix, _ = model
    swapped = tmp_path / "swapped.model"
    swapped.write_bytes(Path(f"{prefix}.model").read_bytes())
    out = tmp_path / "scored"
    args = ["stage=score", f"score.model={swapped}", f"input.paths=[{corpus}/a_crawl.jsonl]", "input.format=jsonl",
            f"output.dir={out}", "progress=false"]
    cli(*args)
    first = (out / "documents" / "00000.jsonl.zst").read_bytes()
    cli(*args)  # same model: resumes (nothing left to do), same output
    assert (out / "documents" / "00000.jsonl.zst").read_bytes() == first
    trained = QualityModel.load(swapped)
    QualityModel(trained.features, trained.weights, trained.intercept + 0.5).save(swapped)  # same path, other model
    refused = cli(*args, check=False)
    assert refused.returncode != 0 and "score_model_sha256 differ" in refused.stderr, refused.stderr
    assert (out / "documents" / "00000.jsonl.zst").read_bytes() == first


@pytest.mark.parametrize("model_arg, message", [
    (None, "score.model: stage=score needs the classifier"),
    ("/nonexistent.model", "score.model: /nonexistent.model does not exist"),
    ("README.md", "is not a quality model"),
])
def test_score_stage_bad_model(corpus, tmp_path, model_arg, message):
    args = ["stage=score", f"input.paths=[{corpus}]", "input.format=jsonl", f"output.dir={tmp_path}/out"]
    proc = cli(*args, *([f"score.model={model_arg}"] if model_arg else []), check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "documents").exists()


def test_score_then_dedup_keeps_the_best_copy(model, tmp_path):
    """Each botchan passage has a longer near copy with crawl boilerplate (lower score): dedup.keep=quality keeps
    the passage, where dedup.keep=longest would keep the copy."""
    prefix, _ = model
    src = tmp_path / "in"
    src.mkdir()
    junk = ("首页 登录 注册 | 版权所有 2014 | 联系我们 | 隐私政策 | 网站地图 广告 服务 下载 手机版 "
            "Home Login Register Cookies Privacy Sitemap Advertise Download Mobile 关于我们 帮助中心 "
            "友情链接 客服热线 400 800 1234 ICP备案 京ICP证 0000 号")
    passages = botchan_passages(400)[:12]
    with open(src / "docs.jsonl", "w") as f:
        for i, text in enumerate(passages):
            f.write(json.dumps({"id": f"clean/{i}", "text": text}) + "\n")
            f.write(json.dumps({"id": f"copy/{i}", "text": text + "\n" + junk}) + "\n")
    scored, deduped = tmp_path / "scored", tmp_path / "deduped"
    cli("stage=score", f"score.model={prefix}.model", f"input.paths=[{src}]", "input.format=jsonl",
        f"output.dir={scored}", "progress=false")
    score = {d["id"]: d["metadata"]["quality_score"] for d in read_docs(scored / "documents")}
    assert all(score[f"clean/{i}"] > score[f"copy/{i}"] for i in range(12))  # the premise
    cli("stage=dedup", f"input.paths=[{scored}/documents]", "input.format=jsonl", "dedup.keep=quality",
        "executor.tasks=2", f"output.dir={deduped}", "progress=false")
    m = manifest(deduped)
    assert m["balanced"] and m["documents_in"] == 24 and m["kept"]["documents"] == 12
    assert sorted(d["id"] for d in read_docs(deduped / "documents")) == sorted(f"clean/{i}" for i in range(12))
    removed = read_docs(deduped / "removed")
    assert sorted(d["id"] for d in removed) == sorted(f"copy/{i}" for i in range(12))
    assert {d["metadata"]["dedup"]["reason"] for d in removed} == {"minhash"}
