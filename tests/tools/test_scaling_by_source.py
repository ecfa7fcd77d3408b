"""Per-source validation curves (the trainer's val_loss/<source> keys) in a ladder: read into RunCurve and drawn
by the fit as loss_vs_tokens_by_source."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scaling_synthetic import law, make_ladder

from tools.scaling.config import load_config
from tools.scaling.fit import run_fit
from tools.scaling.ladder import read_ladder

FACTOR = {"web": 1.08, "wiki": 0.97, "code": 0.8}  # each source's loss: the law times a constant


def add_sources(root, plan, every: int = 5):
    """Give every 5th logged step of each run val_loss/<source> = law(N, D) x FACTOR[source]."""
    n_of = {r.name: r.params_total for r in plan.runs}
    for d in (root / "runs").iterdir():
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        for i, row in enumerate(rows):
            if i % every == every - 1:
                for source, f in FACTOR.items():
                    row[f"val_loss/{source}"] = float(law(n_of[d.name], row["tokens"]) * f)
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def ladders(tmp_path_factory):
    plain = make_ladder(tmp_path_factory.mktemp("plain"), sizes=3)
    by_source = make_ladder(tmp_path_factory.mktemp("by_source"), sizes=3)
    add_sources(*by_source)
    return plain, by_source


def test_reader_returns_each_sources_curve(ladders):
    root, plan = ladders[1]
    runs = {r.name: r for r in read_ladder(root)}
    for planned in plan.runs:
        r = runs[planned.name]
        assert r.problem is None
        assert set(r.val_loss_by_source) == set(r.val_tokens_by_source) == set(FACTOR)
        for source, f in FACTOR.items():
            tokens = r.val_tokens_by_source[source]
            assert len(tokens) >= 10 and np.all(np.diff(tokens) > 0)
            np.testing.assert_allclose(r.val_loss_by_source[source], law(planned.params_total, tokens) * f)
    assert all(r.val_loss_by_source == {} for r in read_ladder(ladders[0][0]))


def test_fit_writes_the_by_source_plot_only_when_runs_have_sources(ladders, tmp_path):
    for (root, _), out, expected in ((ladders[1], tmp_path / "with", True), (ladders[0], tmp_path / "without", False)):
        cfg = load_config("fit", [f"ladder={root}", f"output.dir={out}", "fit.top_k=10", "fit.bootstrap.n=5"])
        doc = run_fit(cfg)
        assert ("loss_vs_tokens_by_source" in doc["plots"]) == expected
        assert (out / "loss_vs_tokens_by_source.png").exists() == expected
    png = tmp_path / "with" / "loss_vs_tokens_by_source.png"
    assert png.stat().st_size > 20_000
    assert (tmp_path / "with" / "loss_vs_tokens_by_source.svg").read_text().lstrip().startswith("<?xml")
    assert json.loads((tmp_path / "with" / "fit.json").read_text())["plots"]["loss_vs_tokens_by_source"] == [
        str(png), str(png.with_suffix(".svg"))]
    runs = json.loads((tmp_path / "with" / "fit.json").read_text())["runs"]
    assert all(set(r["final_val_loss_by_source"]) == set(FACTOR) for r in runs)
    assert all(r["final_val_loss_by_source"] == {} for r in json.loads((tmp_path / "without" / "fit.json").read_text())["runs"])
