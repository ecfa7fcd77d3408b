"""`python -m tools.scaling predict`: the loss of a bigger run from the fitted ladder, with its interval, and the
target trained with the ladder's recipe and measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from scaling_synthetic import law, make_ladder

from tools.scaling.__main__ import main
from tools.scaling.config import ConfigError, load_config


def _predict(root, tmp_path, *extra):
    return main(["predict", f"ladder={root}", f"output.dir={tmp_path / 'predict'}", "fit.top_k=10",
                 "fit.bootstrap.n=30", *extra])


@pytest.mark.parametrize("noise", [0.0, 0.002])
def test_prediction_from_a_known_law(tmp_path, capsys, noise):
    """A ladder drawn from a known law, 10x beyond its largest budget: without noise the prediction is the true
    loss within 0.5%; with 0.2% noise per run the five-parameter fit trades E against A and B over the ladder's
    1.5 decades (the point moves by ~5%), and the bootstrap interval still holds the truth."""
    root, plan = make_ladder(tmp_path / "ladder", noise=noise)
    largest = max(r.flops for r in plan.runs)
    assert _predict(root, tmp_path, f"predict.flops={10 * largest}", "predict.train=false") == 0
    doc = json.loads((tmp_path / "predict" / "prediction.json").read_text())
    t, pred = doc["target"], doc["predicted"]
    assert t["flops_vs_largest_ladder_run"] == pytest.approx(10, rel=0.05)  # whole steps of the nearest shape
    truth = float(law(t["params_total"], t["tokens"]))
    assert pred["lo"] <= truth <= pred["hi"], (pred, truth)
    if noise == 0:
        assert abs(pred["value"] - truth) / truth < 0.005, (pred, truth)
    assert "measured" not in doc
    assert (tmp_path / "predict" / "prediction.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "predicted final val loss" in out and f"{t['flops_vs_largest_ladder_run']:.1f}x" in out


def test_given_shape_and_tokens(tmp_path):
    root, _ = make_ladder(tmp_path / "ladder", noise=0.0)
    assert _predict(root, tmp_path, "predict.num_layers=12", "predict.hidden_size=384", "predict.tokens=1e9",
                    "predict.train=false") == 0
    t = json.loads((tmp_path / "predict" / "prediction.json").read_text())["target"]
    assert (t["shape"]["num_layers"], t["shape"]["hidden_size"]) == (12, 384)
    assert abs(t["tokens"] - 1e9) <= 4 * 128  # whole steps of 4 x 128 tokens


@pytest.mark.parametrize("overrides,key", [
    ([], "predict: give either"),
    (["predict.flops=1e18", "predict.tokens=1e9"], "predict: give either"),
    (["predict.num_layers=4", "predict.hidden_size=64"], "predict: give either"),
    (["predict.flops=-1"], "predict.flops: must be positive"),
    (["predict.flops=1e18", "fit.approaches=[1,2]"], "fit.approaches: predict uses approach 3"),
])
def test_wrong_predict_config_fails_before_any_work(tmp_path, overrides, key):
    root, _ = make_ladder(tmp_path / "ladder", noise=0.0, sizes=3)
    with pytest.raises(ConfigError, match=key):
        load_config("predict", [f"ladder={root}", *overrides])
    with pytest.raises(ConfigError, match="ladder: .* is not a planned ladder"):
        load_config("predict", [f"ladder={tmp_path}", "predict.flops=1e18"])
    assert not (root / "predict").exists()


def test_hidden_size_must_fit_the_heads(tmp_path, capsys):
    root, _ = make_ladder(tmp_path / "ladder", noise=0.0, sizes=3)
    assert _predict(root, tmp_path, "predict.num_layers=2", "predict.hidden_size=50", "predict.tokens=1e6",
                    "predict.train=false") == 2
    assert "predict.hidden_size: 50 is not a multiple of the family's head_dim=32" in capsys.readouterr().err


@pytest.mark.slow
def test_target_is_trained_with_the_ladders_recipe(tiny_shards, tmp_path, monkeypatch, capsys):
    """The synthetic ladder's recipe pointed at real shards: the target really trains, with the ladder's
    batch, schedule and data; its measured loss and the relative error are reported."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ov = ",".join(f"'{o}'" for o in [*tiny_shards, "logging.wandb.mode=disabled", "train.bf16=false"])
    root, _ = make_ladder(tmp_path / "ladder", noise=0.002, extra=(f"plan.overrides=[{ov}]",
                                                                    "families.llama.seq_length=64"))
    assert _predict(root, tmp_path, "predict.num_layers=1", "predict.hidden_size=32", "predict.tokens=2560") == 0
    doc = json.loads((tmp_path / "predict" / "prediction.json").read_text())
    m = doc["measured"]
    run_dir = tmp_path / "predict" / doc["target"]["name"]
    assert m["run_dir"] == str(run_dir) and (run_dir / "finished.json").is_file()
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert m["loss"] == pytest.approx([r["val_loss"] for r in rows if "val_loss" in r][-1])
    assert m["relative_error"] == pytest.approx((m["loss"] - doc["predicted"]["value"]) / m["loss"])
    plan = json.loads((root / "plan.json").read_text())["plan_config"]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["train"]["global_batch_size"] == plan["global_batch_size"] and cfg["optim"]["lr"] == plan["lr"]
    assert cfg["train"]["iters"] == 2560 // (plan["global_batch_size"] * 64) and cfg["model"]["seq_length"] == 64
    assert "measured final val loss" in capsys.readouterr().out
    # a second predict reuses the finished target run
    assert _predict(root, tmp_path, "predict.num_layers=1", "predict.hidden_size=32", "predict.tokens=2560") == 0
    assert "training the target" not in capsys.readouterr().out
    assert np.isfinite(json.loads((tmp_path / "predict" / "prediction.json").read_text())["measured"]["loss"])


def test_predicted_loss_survives_a_wild_bootstrap_replicate():
    """A poorly constrained ladder gives replicates like alpha = 80 (the quickstart met one): n**alpha
    overflows a Python float; the prediction must still come out, from the finite replicates."""
    import numpy as np

    from tools.scaling.fit import GroupFit
    from tools.scaling.parametric import ParametricLaw
    from tools.scaling.predict import predicted_loss

    law = ParametricLaw(E=2.0, A=400.0, B=400.0, alpha=0.34, beta=0.28)
    samples = {"E": [2.0, 2.1, 1.9], "A": [400.0, 8.6e17, 300.0], "B": [400.0, 1e3, 500.0],
               "alpha": [0.34, 80.0, 0.3], "beta": [0.28, -900.0, 0.3]}
    g = GroupFit(points=None, n=np.array([1e5]), k=6.0, target=0.0, law=law, law_samples=samples)
    out = predicted_loss(g, 1e6, 1e8, 0.9)
    assert out["value"] == float(law.loss(1e6, 1e8))
    assert out["n_boot"] == 2 and np.isfinite([out["lo"], out["hi"]]).all()  # the wild one (beta -900) dropped
