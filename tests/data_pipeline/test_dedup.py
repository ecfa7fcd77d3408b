"""stage=dedup end to end through the real CLI, and its parts: hash family, components, keep policy, scope,
bad input, resume over a truncated intermediate file, byte-identical output across task counts and MPI."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import zstandard

from data_pipeline.dedup.minhash import MinHasher, MinHashParams, _fmix64
from data_pipeline.dedup.steps import components
from stage_helpers import BIN, cli, manifest, output_files

VOCAB = [f"w{i}" for i in range(3000)]


def _text(rng, n=150):
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def write_corpus(folder, seed=0):
    """60 originals; 20 near copies (one word changed), 12 exact copies (case and punctuation changed),
    6 same-URL copies with new text; originals have the highest quality score. Returns the expected removals by reason."""
    rng = random.Random(seed)
    docs = []
    for i in range(60):
        base = _text(rng)
        docs.append({"id": f"d{i}", "text": base, "url": f"https://site.example/page/{i}", "quality_score": 1.0})
        if i % 3 == 0:
            w = base.split()
            w[70] = "changed"
            docs.append({"id": f"near{i}", "text": " ".join(w)})
        if i % 5 == 0:
            docs.append({"id": f"exact{i}", "text": base.upper() + " !"})
        if i % 10 == 0:
            docs.append({"id": f"url{i}", "text": _text(rng), "url": f"HTTPS://SITE.EXAMPLE/page/{i}/"})
    rng.shuffle(docs)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(5):
        (folder / f"{f:02d}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[f::5]))
    return {"exact": 12, "minhash": 20, "url": 6}, len(docs)


def read_jsonl_zst(folder):
    out = []
    for p in sorted(folder.glob("*.jsonl.zst")):
        out += [json.loads(x) for x in zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes())
                .decode().splitlines()]
    return out


def run_dedup(inp, out, *extra, tasks=4, launcher=None, executor="local", timeout=300, check=True):
    return cli("stage=dedup", "dedup=fineweb", f"input.paths=[{inp}]", "input.format=jsonl", f"executor={executor}",
               f"executor.tasks={tasks}", f"output.dir={out}", "progress=false", *extra, launcher=launcher, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup")
    expected, n = write_corpus(root / "in")
    run_dedup(root / "in", root / "t4")
    return root, expected, n


def test_removes_exact_url_and_near_copies_and_balances(corpus):
    root, expected, n = corpus
    m = manifest(root / "t4")
    assert m["balanced"] and m["documents_in"] == n and m["dedup"]["consistent"]
    assert m["removed"]["dedup"] == expected
    assert m["kept"]["documents"] == 60 and m["dedup"]["clusters"] == 20 + 12 - 4  # originals with a copy: i % 3 == 0 or i % 5 == 0
    kept = read_jsonl_zst(root / "t4" / "documents")
    removed = read_jsonl_zst(root / "t4" / "removed")
    assert len(kept) == 60 and len(removed) == sum(expected.values())
    assert all(d["id"].startswith("d") for d in kept)
    by_id = {d["metadata"]["dedup_id"]: d for d in kept + removed}
    for d in removed:
        meta = d["metadata"]["dedup"]
        assert meta["kept_id"] in by_id and by_id[meta["kept_id"]]["id"].startswith("d")
        assert meta["cluster_size"] >= 2 and meta["cluster_id"] in by_id
        assert meta["reason"] == d["id"].rstrip("0123456789").replace("near", "minhash")


def test_output_is_byte_identical_for_any_task_count_and_under_mpi(corpus, tmp_path):
    root, _, _ = corpus
    run_dedup(root / "in", tmp_path / "t1", tasks=1)
    run_dedup(root / "in", tmp_path / "t3", "dedup.buckets=7", tasks=3)
    run_dedup(root / "in", tmp_path / "mpi", executor="mpi", launcher=[str(BIN / "mpiexec"), "-n", "2"])
    reference = output_files(root / "t4")
    for out in ("t1", "t3", "mpi"):
        assert output_files(tmp_path / out) == reference, out
        assert manifest(tmp_path / out)["removed"] == manifest(root / "t4")["removed"]


def test_truncated_signature_file_is_detected_and_its_task_redone(corpus, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "resumed"
    run_dedup(root / "in", out)
    nodes = sorted((out / "work" / "nodes").glob("*/00001_00000.npy"))[0]
    nodes.write_bytes(nodes.read_bytes()[:-40])
    for sub in ("documents", "removed", "logs/write/completions"):
        shutil.rmtree(out / sub)
    (out / "manifest.json").unlink()
    proc = run_dedup(root / "in", out)
    assert "signatures task 1: its files are truncated or corrupt; it runs again" in proc.stdout
    assert output_files(out) == output_files(root / "t4") and manifest(out)["balanced"]
    # a half-done stage refuses another task count
    refused = cli("stage=dedup", f"input.paths=[{root / 'in'}]", "input.format=jsonl", "executor.tasks=2",
                  f"output.dir={out}", check=False)
    assert refused.returncode != 0 and "executor.tasks=4" in refused.stderr


def test_keep_policy_quality_then_length_then_id(tmp_path):
    rng = random.Random(1)
    base = _text(rng, 300)
    rows = [{"id": "short", "text": base},
            {"id": "long", "text": base + " tail words here"},
            {"id": "best", "text": base + " x", "quality_score": 0.9},
            {"id": "worse", "text": base + " more more more more", "quality_score": 0.5}]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for keep, winner in (("quality", "best"), ("longest", "worse"), ("first", "short")):
        run_dedup(tmp_path / "in", tmp_path / keep, f"dedup.keep={keep}", tasks=2)
        assert [d["id"] for d in read_jsonl_zst(tmp_path / keep / "documents")] == [winner], keep


def test_scope_source_keeps_copies_in_other_sources(tmp_path):
    text = _text(random.Random(2), 200)
    for src in ("a", "b"):
        (tmp_path / src).mkdir()
        (tmp_path / src / "x.jsonl").write_text(json.dumps({"id": src, "text": text}) + "\n")
    paths = f"input.paths=[{tmp_path / 'a'},{tmp_path / 'b'}]"
    for scope, kept in (("global", 1), ("source", 2)):
        cli("stage=dedup", paths, "input.format=jsonl", f"dedup.scope={scope}", f"output.dir={tmp_path / scope}",
            "progress=false")
        assert manifest(tmp_path / scope)["kept"]["documents"] == kept


def test_bad_input_is_counted_never_a_crash(tmp_path):
    (tmp_path / "in").mkdir()
    long_doc = _text(random.Random(3), 1_800_000)  # over 10 MB
    assert len(long_doc) > 10_000_000
    rows = [{"text": "two words"}, {"text": "two words"}, {"text": "!!! ??? ... ---"}, {"text": "... !!! ---"},
            {"text": ""}, {"text": long_doc}, {"text": long_doc + " end"}]
    lines = [json.dumps(r).encode() for r in rows] + [b'{"text": "invalid \xff\xfe utf-8"}']
    (tmp_path / "in" / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    cli("stage=dedup", f"input.paths=[{tmp_path / 'in'}]", "input.format=jsonl", "input.max_record_bytes=20000000",
        f"output.dir={tmp_path / 'out'}", "progress=false", "executor.tasks=2")
    m = manifest(tmp_path / "out")
    assert m["balanced"] and m["documents_in"] == 8
    assert m["removed"]["reader"] == {"empty_text": 1} and m["errors"]["reader"] == {"invalid_json": 1}
    assert m["dedup"]["documents_without_words"] == 2 and m["dedup"]["documents_shorter_than_ngram"] == 2
    # short copies and punctuation-only copies are exact duplicates; the 10 MB pair is a near duplicate
    assert m["removed"]["dedup"] == {"exact": 2, "minhash": 1}


def test_hash_family_is_exact_arithmetic_mod_2_64():
    h = MinHasher(MinHashParams())
    shingles = h.shingle_hashes(_text(random.Random(4), 50))
    sig = h.signature_of_shingles(shingles)
    a, b = [int(x) for x in h.a], [int(x) for x in h.b]
    ref = [min((ai * int(s) + bi) % (1 << 64) for s in shingles) for ai, bi in zip(a, b)]
    assert [int(x) for x in sig] == ref
    x = np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)
    assert len(set(_fmix64(x.copy()).tolist())) == 4  # a bijection: no two inputs collide


def test_components_match_a_reference_union_find():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2000, 1500).astype(np.uint64), rng.integers(0, 2000, 1500).astype(np.uint64)
    nodes, label = components(a, b)
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)
    groups = {}
    for n in nodes.tolist():
        groups.setdefault(find(n), []).append(n)
    assert {int(n): int(l) for n, l in zip(nodes, label)} == {n: min(g) for g in groups.values() for n in g}


def _rounds(work, a, b, tasks, max_rounds):
    from data_pipeline.dedup.clusters import ComponentsRound, write_edges

    for t in range(tasks):  # the pairs tasks' star edges, split arbitrarily
        write_edges(str(work), 0, t, a[t::tasks], b[t::tasks], tasks)
    for r in range(max_rounds):
        step = ComponentsRound(str(work), r, tasks)
        if not step.done_before():
            for t in range(tasks):
                list(step.run(None, t, tasks))


@pytest.mark.parametrize("graph", ["random", "path"])
def test_distributed_components_match_union_find_for_any_task_count(graph, tmp_path):
    """The clustering rounds (large-star / small-star over partitioned edge files) give every node the
    smallest node of its component, whatever the task count; a long chain needs more rounds, each bounded."""
    from data_pipeline.dedup.clusters import converged_round, load_edges
    from data_pipeline.dedup.work import node_part

    rng = np.random.default_rng(1)
    if graph == "random":
        a, b = rng.integers(0, 3000, 2000).astype(np.uint64), rng.integers(0, 3000, 2000).astype(np.uint64)
    else:  # a chain of 1500 near copies in shuffled key order: the worst case for label propagation
        p = rng.permutation(1501).astype(np.uint64)
        a, b = p[:-1], p[1:]
    nodes, label = components(a, b)
    linked = set(np.concatenate([a[a != b], b[a != b]]).tolist())  # self loops carry no edge
    ref = {int(n): int(x) for n, x in zip(nodes, label) if int(n) in linked}
    rounds_used = set()
    for tasks in (1, 3, 8):
        work = tmp_path / f"t{tasks}"
        _rounds(work, a, b, tasks, 40)
        final = converged_round(str(work), tasks, 40)
        assert final is not None
        rounds_used.add(final)
        got = {}
        for t in range(tasks):
            e = load_edges(str(work), final, t)
            for u in np.unique(e["a"]).tolist():
                got[u] = min(u, int(e["b"][e["a"] == u].min()))
            assert (node_part(e["a"], tasks) == t).all()
        assert got == ref, tasks  # and each task held only its own partition's nodes (asserted above)
    assert len(rounds_used) == 1  # the same rounds for any task count
    if graph == "path":
        assert 5 < rounds_used.pop() < 30


def test_clustering_that_does_not_converge_says_which_key_to_raise(tmp_path):
    from data_pipeline.dedup.clusters import Members

    p = np.random.default_rng(2).permutation(301).astype(np.uint64)
    _rounds(tmp_path, p[:-1], p[1:], 2, 2)
    with pytest.raises(RuntimeError, match=r"dedup.max_rounds=2 rounds.*dedup.max_rounds=4: the finished rounds"):
        list(Members(str(tmp_path), 2, 2).run(None, 0, 2))


def test_band_index_dedups_a_new_dump_against_an_earlier_one(tmp_path):
    """Dump A writes an index; dump B (new pages, near and exact copies of A's, copies among its own) reads
    it: B's copies of A are removed as duplicate_of_index with A's ids, B's own copies as usual, nothing of A
    is written again; the same result for another bucket count that divides the index's."""
    rng = random.Random(5)
    a_docs = [{"id": f"a{i}", "text": _text(rng)} for i in range(40)]
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "00.jsonl").write_text("".join(json.dumps(d) + "\n" for d in a_docs))
    run_dedup(tmp_path / "A", tmp_path / "outA", f"dedup.index.write={tmp_path / 'idxA'}", tasks=4)
    meta = json.loads((tmp_path / "idxA" / "index.json").read_text())
    assert meta["name"] == "idxA" and meta["buckets"] == 4
    b_docs = [{"id": f"b{i}", "text": _text(rng)} for i in range(30)]
    for i in range(0, 40, 4):  # near copies of A
        w = a_docs[i]["text"].split()
        w[20] = "edited"
        b_docs.append({"id": f"nearA{i}", "text": " ".join(w)})
    for i in range(1, 40, 8):  # exact copies of A (case changed)
        b_docs.append({"id": f"exactA{i}", "text": a_docs[i]["text"].upper()})
    b_docs += [{"id": f"ownB{i}", "text": b_docs[i]["text"] + " !"} for i in range(5)]  # B's own copies
    rng.shuffle(b_docs)
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "00.jsonl").write_text("".join(json.dumps(d) + "\n" for d in b_docs))
    index = f"dedup.index.read=[{tmp_path / 'idxA'}]"
    run_dedup(tmp_path / "B", tmp_path / "outB", index, tasks=4)
    m = manifest(tmp_path / "outB")
    assert m["balanced"] and m["documents_in"] == len(b_docs)
    assert m["removed"]["dedup"] == {"duplicate_of_index": 10 + 5, "exact": 5}
    assert m["dedup"]["index"]["index_documents_matched"] == 15
    kept = read_jsonl_zst(tmp_path / "outB" / "documents")
    removed = read_jsonl_zst(tmp_path / "outB" / "removed")
    kept_ids = {d["id"] for d in kept}
    assert len(kept) == 30 and kept_ids >= {f"b{i}" for i in range(5, 30)}  # of each own copy pair, one stays
    assert all(len(kept_ids & {f"b{i}", f"ownB{i}"}) == 1 for i in range(5))
    a_ids = {f"a{r}": f"idxA:0/00.jsonl#{r}" for r in range(40)}  # A's ids: file 00.jsonl, record = line
    for d in removed:
        meta = d["metadata"]["dedup"]
        if d["id"].startswith(("nearA", "exactA")):
            assert meta["reason"] == "duplicate_of_index"
            assert meta["kept_id"] == a_ids["a" + d["id"].lstrip("nearexactA")]
        else:
            assert meta["reason"] == "exact" and not meta["kept_id"].startswith("idxA:")  # B's own copies
    # 2 buckets (divides the index's 4): the same bytes
    run_dedup(tmp_path / "B", tmp_path / "outB2", index, tasks=2)
    assert output_files(tmp_path / "outB2") == output_files(tmp_path / "outB")
    # 3 buckets do not fit 4; other MinHash settings do not match the index's band keys
    for extra, message in ((["executor.tasks=3"], "has 4 buckets and this run 3"),
                           (["dedup=redpajama"], "was built with other settings")):
        proc = run_dedup(tmp_path / "B", tmp_path / "refused", index, *extra, tasks=4, check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Fix:" in proc.stderr, proc.stderr[-2000:]
