"""Planning and input checks: a wrong config or a bad CSV fails with the key/column and the fix."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from pretrain.flops import count_params, flops_per_token
from tools.scaling.__main__ import main
from tools.scaling.config import ConfigError, load_config
from tools.scaling.family import family_shapes
from tools.scaling.plan import plan_ladder
from tools.scaling.points import read_csv


def test_plan_cli_prints_the_table_and_writes_configs(tmp_path, capsys):
    ladder = tmp_path / "ladder"
    assert main(["plan", "budgets=[1e15,3e15,1e16]", "family=llama", f"ladder={ladder}", "plan.vocab_size=32000",
                 "plan.overrides=['data.paths=[/data/x_text_document]','data.tokenizer_model=/data/t.model']"]) == 0
    out = capsys.readouterr().out
    assert "tok/param" in out and "C1e15_" in out
    plan = json.loads((ladder / "plan.json").read_text())
    lines = (ladder / "runs.txt").read_text().splitlines()
    assert len(lines) == len(plan["runs"]) >= 9
    per_budget = {}
    for run, line in zip(plan["runs"], lines):
        args = shlex.split(line)
        assert args == run["overrides"]
        kv = dict(a.split("=", 1) for a in args)
        assert kv["data.paths"] == "[/data/x_text_document]"
        assert kv["run.dir"] == str(ladder / "runs" / run["name"])
        shape = type("S", (), {k: int(kv[f"model.{k}"]) for k in (
            "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
            "seq_length")})()
        fpt = flops_per_token(shape, 32000)
        assert run["flops_per_token"] == pytest.approx(fpt)
        assert run["params_total"] == count_params(shape, 32000)["total"]
        tokens = int(kv["train.iters"]) * int(kv["train.global_batch_size"]) * shape.seq_length
        # the planned compute is the budget, up to rounding to whole steps
        assert tokens * fpt == pytest.approx(run["budget"], rel=0.01)
        assert shape.hidden_size % shape.num_attention_heads == 0
        assert shape.num_attention_heads % shape.num_query_groups == 0
        per_budget.setdefault(run["budget"], []).append(run["params_total"])
    assert sorted(per_budget) == [1e15, 3e15, 1e16]
    assert all(len(set(v)) == 4 for v in per_budget.values())


def test_plan_with_6n_tokens(tmp_path):
    cfg = load_config("plan", [f"ladder={tmp_path}", "budgets=[1e16]", "plan.vocab_size=1024", "plan.tokens=6n"])
    from tools.scaling.plan import plan_ladder

    for r in plan_ladder(cfg).runs:
        assert r.flops_per_token == 6 * r.params_total


def test_family_rule():
    cfg = load_config("plan", [])
    shapes = family_shapes(cfg.families["llama"])
    assert [s.hidden_size for s in shapes[:4]] == [32, 64, 96, 128]
    assert all(s.ffn_hidden_size % 32 == 0 and s.ffn_hidden_size >= 8 / 3 * s.hidden_size for s in shapes)


def test_family_with_a_range_of_aspect_ratios(tmp_path):
    """max_aspect_ratio: every whole-head width from aspect_ratio to max_aspect_ratio x layers at each depth, and
    the planner spreads each budget's sizes over them in parameter order."""
    cfg = load_config("plan", ["families.llama.aspect_ratio=4", "families.llama.max_aspect_ratio=48",
                               "families.llama.head_dim=8", "families.llama.min_layers=3",
                               "families.llama.max_layers=3"])
    assert [s.hidden_size for s in family_shapes(cfg.families["llama"])] == list(range(16, 145, 8))
    cfg = load_config("plan", [f"ladder={tmp_path}", "budgets=[1e11,1e12]", "plan.vocab_size=512",
                               "families.llama.aspect_ratio=8", "families.llama.max_aspect_ratio=32",
                               "families.llama.head_dim=8", "families.llama.min_layers=2",
                               "families.llama.max_layers=4", "plan.global_batch_size=16",
                               "plan.micro_batch_size=16", "plan.sizes_per_budget=5"])
    for budget in (1e11, 1e12):
        runs = [r for r in plan_ladder(cfg).runs if r.budget == budget]
        assert len(runs) == 5 and [r.params_total for r in runs] == sorted(r.params_total for r in runs)
        assert len({r.params_total for r in runs}) == 5
    with pytest.raises(ConfigError, match="families.llama.max_aspect_ratio: 2 < aspect_ratio=4"):
        load_config("plan", ["families.llama.aspect_ratio=4", "families.llama.max_aspect_ratio=2"])


@pytest.mark.parametrize("overrides, key", [
    (["bogus=1"], "bogus"),
    (["family=nope"], "family"),
    (["budgets=[]"], "budgets"),
    (["budgets=[1e15,1e15]"], "budgets"),
    (["plan.sizes_per_budget=1"], "plan.sizes_per_budget"),
    (["plan.tokens=kaplan"], "plan.tokens"),
    (["plan.global_batch_size=10", "plan.micro_batch_size=4"], "plan.global_batch_size"),
    (["plan.sizes_per_budget=many"], "sizes_per_budget"),
])
def test_wrong_plan_config_fails_before_any_work(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key) as e:
        load_config("plan", [f"ladder={tmp_path / 'l'}", *overrides])
    assert "Fix:" in str(e.value)
    assert not (tmp_path / "l").exists()


def test_plan_as_in_the_issue(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "budgets=[1e15,3e15,1e16]", "family=llama"]) == 0
    assert "vocabulary: 32000" in capsys.readouterr().out
    plan = json.loads((tmp_path / "runs/ladder/plan.json").read_text())
    assert all("model.vocab_size=32000" in r["overrides"] for r in plan["runs"])


@pytest.mark.parametrize("overrides, key", [
    (["fit.params=embedding"], "fit.params"),
    (["fit.approaches=[4]"], "fit.approaches"),
    (["exclude_highest_loss=-1"], "exclude_highest_loss"),
    (["fit.bootstrap.level=2"], "fit.bootstrap"),
])
def test_wrong_fit_config(tmp_path, overrides, key):
    (tmp_path / "x.csv").write_text("params,tokens,loss\n1,2,3\n")
    with pytest.raises(ConfigError, match=key):
        load_config("fit", [f"input.paths=[{tmp_path / 'x.csv'}]", *overrides])


def test_fit_needs_existing_data(tmp_path):
    with pytest.raises(ConfigError, match=r"input.paths: .*missing.csv does not exist.*Fix:"):
        load_config("fit", [f"input.paths=[{tmp_path / 'missing.csv'}]"])
    with pytest.raises(ConfigError, match=r"ladder: .*nope does not exist.*Fix:"):
        load_config("fit", [f"ladder={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match=r"input.paths: fit reads one CSV or ladder, got 2"):
        load_config("fit", [f"input.paths=[{tmp_path / 'a.csv'},{tmp_path / 'b.csv'}]"])


@pytest.mark.parametrize("old, new", [("data", "ladder=<ladder dir>"), ("out", "output.dir=DIR"),
                                      ("predict.out", "output.dir=DIR")])
def test_old_spellings_name_the_new_ones(tmp_path, old, new):
    with pytest.raises(ConfigError, match=rf"^{old}: renamed .*Fix: use {new}"):
        load_config("fit", [f"{old}={tmp_path}"])


def test_run_needs_a_plan(tmp_path):
    with pytest.raises(ConfigError, match="plan.json"):
        load_config("run", [f"ladder={tmp_path}"])


def test_csv_with_missing_columns_is_refused(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    path.write_text("size,steps,loss\n1e6,100,3.0\n")
    with pytest.raises(ValueError, match="missing columns: parameters .*tokens"):
        read_csv(path)
    assert main(["fit", f"input.paths=[{path}]", f"output.dir={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err
    assert "Found columns: ['size', 'steps', 'loss']" in err and "Fix:" in err


def test_csv_bad_rows_are_reported(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["params,tokens,loss"]
    for n in (1e6, 3e6, 1e7):
        for d in (1e8, 3e8, 1e9):
            rows.append(f"{n},{d},{2 + 100 / n ** 0.3 + 100 / d ** 0.3 + 0.001 * rng.standard_normal()}")
    rows += ["1e6,1e8,2.5", "2e6,1e8,nan", "2e6,1e8,", "-1,1e8,3.0", "2e6,inf,3.0"]
    path = tmp_path / "runs.csv"
    path.write_text("\n".join(rows) + "\n")
    pts = read_csv(path)["all"]
    reasons = {e["name"]: e["reason"] for e in pts.excluded}
    assert reasons["row11"].startswith("duplicate run: same N and D as row2")
    assert "non-finite" in reasons["row12"] and "empty loss" in reasons["row13"]
    assert "non-positive" in reasons["row14"] and "non-finite" in reasons["row15"]
    assert len(pts) == 9
    assert np.allclose(pts.flops, 6 * pts.n_total * pts.tokens)  # C = 6 N D when the CSV has no FLOPs


def test_exclude_highest_loss_too_many(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    path.write_text("params,tokens,loss\n1e6,1e8,3\n2e6,1e8,2.9\n")
    assert main(["fit", f"input.paths=[{path}]", "exclude_highest_loss=2"]) == 2
    assert "exclude_highest_loss=2 would drop all 2 runs" in capsys.readouterr().err


def test_planned_overrides_fit_the_trainer_schema(tmp_path):
    """Every key the planner writes exists in pretrain's typed config, with a value of the right type."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from pretrain.config import PretrainConfig, train_iters
    from tools.scaling.plan import plan_ladder
    from tools.scaling.quickstart import QUICKSTART

    cfg = load_config("plan", [f"ladder={tmp_path}", "plan.vocab_size=512", *QUICKSTART])
    for run in plan_ladder(cfg).runs:
        pc = OmegaConf.structured(PretrainConfig)
        for ov in OverridesParser.create().parse_overrides(run.overrides):
            OmegaConf.update(pc, ov.key_or_group, ov.value(), merge=True)
        obj = OmegaConf.to_object(pc)
        assert train_iters(obj) == run.iters
        assert obj.optim.warmup_iters < run.iters
        m = obj.model
        assert m.hidden_size % m.num_attention_heads == 0 and m.num_attention_heads % m.num_query_groups == 0
        assert obj.train.global_batch_size % obj.train.micro_batch_size == 0
