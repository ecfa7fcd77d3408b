"""Tracking and fits on ladder directories in the trainer's output format, with known true laws."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scaling_synthetic import TRUE, make_ladder, write_run

from tools.scaling.__main__ import main
from tools.scaling.config import load_config
from tools.scaling.fit import run_fit
from tools.scaling.ladder import read_ladder
from tools.scaling.learning_curve import fit_learning_curve
from tools.scaling.parametric import fit_parametric

TRUE_A = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])  # N_opt ~ C^a for the true law


def fit_cfg(ladder, out, *extra):
    return load_config("fit", [f"ladder={ladder}", f"output.dir={out}", "fit.top_k=10", "fit.bootstrap.n=15", *extra])


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    return make_ladder(tmp_path_factory.mktemp("ladder"))


def test_fits_recover_the_true_law(ladder, tmp_path, capsys):
    root, plan = ladder
    assert main(["fit", f"ladder={root}", f"output.dir={tmp_path}", "fit.top_k=10", "fit.bootstrap.n=15"]) == 0
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["n_runs"] == len(plan.runs) and fit["excluded"] == [] and fit["loss"] == "val"
    for a in ("approach1", "approach2"):
        assert abs(fit[a]["a"]["value"] - TRUE_A) < 0.06, (a, fit[a]["a"])
        assert abs(fit[a]["a"]["value"] + fit[a]["b"]["value"] - 1) < 0.1  # C ~ N D
    assert abs(fit["approach3"]["a"]["value"] - TRUE_A) < 0.06
    assert len(fit["approach2"]["minima"]) == 4  # every budget's minimum is bracketed
    # per-run learning curves: each run's curve is E' + B / D^0.28 exactly (plus noise)
    betas = [lc["beta"]["value"] for lc in fit["learning_curves"].values()]
    assert np.median(betas) == pytest.approx(TRUE["beta"], abs=0.03)
    opt = fit["compute_optimal"]
    assert set(opt) == {"target_flops", "approach1", "approach2", "approach3"}
    assert opt["target_flops"] == pytest.approx(3e17)
    for a in ("approach1", "approach2", "approach3"):
        e = opt[a]["N"]
        assert e["lo"] <= e["value"] <= e["hi"]
    # the parameter counts and FLOPs come from pretrain/flops.py, both with and without embeddings
    runs = {r["name"]: r for r in fit["runs"]}
    for r in plan.runs:
        assert runs[r.name]["params_total"] == r.params_total
        assert runs[r.name]["params_non_embedding"] == r.params_non_embedding
        assert runs[r.name]["flops"] == pytest.approx(r.flops)
    for stem in ("loss_vs_tokens", "loss_vs_flops", "isoflops", "frontier"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 10_000
        assert (tmp_path / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    out = capsys.readouterr().out
    assert "compute-optimal at C = 3e+17" in out


def test_non_embedding_parameters_change_the_fit(ladder, tmp_path):
    root, _ = ladder
    total = run_fit(fit_cfg(root, tmp_path / "a", "fit.approaches=[2]", "fit.learning_curves=false"), plots=False)
    non_emb = run_fit(fit_cfg(root, tmp_path / "b", "fit.approaches=[2]", "fit.learning_curves=false",
                              "fit.params=non_embedding"), plots=False)
    assert non_emb["params"] == "non_embedding"
    assert non_emb["approach2"]["a"]["value"] != pytest.approx(total["approach2"]["a"]["value"], abs=1e-3)


def test_bad_runs_are_reported_and_excluded(ladder, tmp_path):
    src, plan = ladder
    root, _ = make_ladder(tmp_path / "bad")
    runs = {r.name: r for r in plan.runs}
    names = sorted(runs)
    rng = np.random.default_rng(1)
    # NaN loss in the middle of a run
    write_run(root / "runs" / names[0], runs[names[0]], plan.vocab_size, 0.0, rng,
              loss_fn=lambda n, d: math.nan if 1e7 < d < 3e7 else 3.0 + 1e3 / d ** 0.3)
    # diverged: the loss climbs back up at the end
    write_run(root / "runs" / names[1], runs[names[1]], plan.vocab_size, 0.0, rng,
              loss_fn=lambda n, d: 3.0 + 1e3 / d ** 0.3 + (5.0 if d > 0.8 * runs[names[1]].tokens else 0.0))
    # stopped early: killed at 40% without finished.json
    write_run(root / "runs" / names[2], runs[names[2]], plan.vocab_size, 0.002, rng, finished=False,
              stop_at=int(0.4 * runs[names[2]].iters))
    # a copy of a run under another name
    dup = root / "runs" / "copy_of_run"
    write_run(dup, runs[names[3]], plan.vocab_size, 0.002, rng)
    # a torn last line in one metrics file: counted and skipped, the run stays usable
    with (root / "runs" / names[4] / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99999, "tokens": 1')
    fit = run_fit(fit_cfg(root, tmp_path / "fit", "fit.approaches=[2]"), plots=False)
    reasons = {e["name"]: e["reason"] for e in fit["excluded"]}
    assert "loss is nan" in reasons[names[0]]
    assert reasons[names[1]].startswith("diverged")
    assert reasons[names[2]].startswith("stopped early")
    dup_reason = reasons.get("copy_of_run") or reasons.get(names[3])
    assert dup_reason.startswith("duplicate run")
    assert len(reasons) == 4 and fit["n_runs"] == len(plan.runs) - 3
    corrupt = {r["name"]: r["corrupt_metrics_lines"] for r in fit["runs"]}
    assert corrupt[names[4]] == 1 and reasons.get(names[4]) is None
    # the excluded runs are not in any IsoFLOP group
    used = sum(m["points"] for m in fit["approach2"]["minima"])
    assert used + sum(1 for _ in fit["approach2"].get("rejected_budgets", [])) <= fit["n_runs"]


def test_single_size_ladder_is_refused_with_the_reason(tmp_path):
    root, plan = make_ladder(tmp_path / "one")
    keep = plan.runs[0].shape.name
    for d in (root / "runs").iterdir():
        if not d.name.endswith(keep):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    (root / "plan.json").unlink()
    fit = run_fit(fit_cfg(root, tmp_path / "fit"), plots=False)
    for a in ("approach1", "approach2", "approach3"):
        assert "single model size" in fit[a]["error"]
    assert fit["compute_optimal"] == {"target_flops": fit["target_flops"]}


def test_empty_ladder_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["fit", f"ladder={tmp_path / 'empty'}"]) == 2
    assert "no runs found" in capsys.readouterr().err


def test_parametric_fit_is_exact_on_noise_free_points():
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 60))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e11), 60))
    loss = TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]
    law, obj = fit_parametric(n, d, loss, top_k=20)
    for k, v in TRUE.items():
        assert getattr(law, k) == pytest.approx(v, rel=2e-2), k
    assert obj < 1e-8


def test_learning_curve_fit():
    d = np.geomspace(1e6, 1e9, 40)
    fit = fit_learning_curve(d, 2.0 + 300.0 / d ** 0.35)
    assert fit["E"] == pytest.approx(2.0, abs=1e-3) and fit["beta"] == pytest.approx(0.35, abs=1e-3)
    with pytest.raises(ValueError, match="at least 4"):
        fit_learning_curve(d[:3], d[:3])


def test_read_ladder_lists_unstarted_planned_runs(tmp_path):
    root, plan = make_ladder(tmp_path / "l")
    victim = root / "runs" / plan.runs[0].name
    for f in victim.iterdir():
        f.unlink()
    victim.rmdir()
    runs = {r.name: r for r in read_ladder(root)}
    assert runs[plan.runs[0].name].problem.startswith("no metrics.jsonl")


def test_parametric_fit_refuses_a_law_without_positive_exponents():
    # loss that grows with both N and D: no law with positive exponents fits it
    n = np.repeat([1e5, 3e5, 1e6, 3e6], 3)
    d = np.tile([1e6, 3e6, 1e7], 4)
    with pytest.raises(ValueError, match="positive exponents"):
        fit_parametric(n, d, 2.0 + 0.1 * np.log(n) + 0.1 * np.log(d), top_k=20)
