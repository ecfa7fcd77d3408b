"""The fits against published scaling-law data (/work/shared/data/scaling, PROVENANCE.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tools.scaling.__main__ import main

# The published points are kept aside from the repository (see PROVENANCE.md there).
DATA = Path(os.environ.get("SLURMTRAIN_SCALING_DATA", "/work/shared/data/scaling"))

needs_data = pytest.mark.skipif(not (DATA / "chinchilla_fig4_epoch_extracted.csv").is_file(),
                                reason=f"published scaling data not found under {DATA} "
                                "(set SLURMTRAIN_SCALING_DATA to the folder with PROVENANCE.md)")

# Besiroglu et al. 2024, refit of this very file: estimate and standard error.
BESIROGLU = {"E": (1.817, 0.026), "A": (482.01, 124.5), "B": (2085.43, 1293.0), "alpha": (0.348, 0.015),
             "beta": (0.366, 0.021)}


@needs_data
def test_approach3_recovers_besiroglu_within_their_standard_errors(tmp_path, capsys):
    # top_k=10: the 10 best of the paper's 4,500 initialisations reach the same optimum as all of them
    # (full grid, measured: E 1.8172, A 477.81, B 2143.4, alpha 0.34731, beta 0.36717) in a fraction of the time.
    rc = main(["fit", f"input.paths=[{DATA / 'chinchilla_fig4_epoch_extracted.csv'}]", f"output.dir={tmp_path}",
               "exclude_highest_loss=5", "fit.approaches=[3]", "fit.top_k=10", "fit.bootstrap.n=25",
               "target_flops=5.76e23"])
    assert rc == 0
    fit = json.loads((tmp_path / "fit.json").read_text())
    a3 = fit["approach3"]
    for name, (value, se) in BESIROGLU.items():
        assert abs(a3[name]["value"] - value) < se, (name, a3[name], value, se)
        # our bootstrap spread is of the same size as theirs (4000 resamples there, 25 here)
        assert se / 2.5 < a3[name]["se"] < se * 2.5, (name, a3[name]["se"], se)
        assert a3[name]["lo"] < a3[name]["value"] < a3[name]["hi"]
    assert fit["n_runs"] == 240 and len(fit["excluded"]) == 5
    assert all("highest losses" in e["reason"] for e in fit["excluded"])
    opt = fit["compute_optimal"]["approach3"]
    assert 3e10 < opt["N"]["value"] < 2e11 and opt["N"]["lo"] < opt["N"]["value"] < opt["N"]["hi"]
    assert {p.name for p in tmp_path.iterdir()} >= {"fit.json", "frontier.png", "frontier.svg", "isoflops.png",
                                                     "loss_vs_tokens.svg"}
    assert "alpha" in capsys.readouterr().out


@needs_data
def test_without_the_exclusion_the_fit_leaves_their_errors(tmp_path):
    rc = main(["fit", f"input.paths=[{DATA / 'chinchilla_fig4_epoch_extracted.csv'}]", f"output.dir={tmp_path}",
               "fit.approaches=[3]", "fit.top_k=10", "fit.bootstrap.n=0"])
    assert rc == 0
    beta = json.loads((tmp_path / "fit.json").read_text())["approach3"]["beta"]["value"]
    assert abs(beta - BESIROGLU["beta"][0]) > 3 * BESIROGLU["beta"][1]


@needs_data
def test_approach2_per_porian_configuration(tmp_path):
    rc = main(["fit", f"input.paths=[{DATA / 'porian2024_isoflop_runs.csv'}]", f"output.dir={tmp_path}", "fit.group_by=config",
               "fit.approaches=[2]", "fit.bootstrap.n=20", "target_flops=1e21"])
    assert rc == 0
    fit = json.loads((tmp_path / "fit.json").read_text())
    a = {k: g["approach2"]["a"]["value"] for k, g in fit["groups"].items()}
    # Porian et al.: the Kaplan-like setup (config 0) gives a steep exponent (~0.88); their corrections, ending
    # with tuned AdamW and a constant schedule (config 4), bring it to Chinchilla's ~0.5.
    assert a["0"] > 0.8 and 0.45 < a["4"] < 0.56
    assert a["0"] > a["1"] > a["2"] > a["3"] > a["4"]
    # the empty row of config 0 is reported, not used
    assert any("empty" in e["reason"] for e in fit["groups"]["0"]["excluded"])
