"""A real (tiny) ladder: planned, trained by the real trainer through the runner, read back and fitted."""

from __future__ import annotations

import json

import pytest

from tools.scaling.__main__ import main
from tools.scaling.config import load_config
from tools.scaling.fit import run_fit
from tools.scaling.ladder import read_ladder


@pytest.mark.slow
def test_plan_run_read_fit(tiny_shards, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ladder = tmp_path / "ladder"
    overrides = ",".join(f"'{o}'" for o in [*tiny_shards, "logging.wandb.mode=disabled"])
    assert main(["plan", f"ladder={ladder}", "budgets=[1e9]", "families.llama.aspect_ratio=16",
                 "families.llama.head_dim=16", "families.llama.max_layers=2", "families.llama.seq_length=64",
                 "plan.sizes_per_budget=2", "plan.min_tokens_per_param=0.01", "plan.max_tokens_per_param=1000",
                 "plan.global_batch_size=8", "plan.micro_batch_size=8", "plan.min_iters=5",
                 "plan.eval_points=2", "plan.eval_iters=1", f"plan.overrides=[{overrides}]"]) == 0
    plan = json.loads((ladder / "plan.json").read_text())
    assert len(plan["runs"]) == 2 and plan["vocab_size"] == 512
    assert main(["run", f"ladder={ladder}"]) == 0
    assert capsys.readouterr().out.count(": done in") == 2
    runs = read_ladder(ladder)
    for r, p in zip(runs, sorted(plan["runs"], key=lambda p: p["name"])):
        assert r.problem is None, r.problem
        info = json.loads((r.path / "run_info.json").read_text())
        # the trainer's own counts agree with the planner's (both from pretrain/flops.py)
        assert info["num_params"] == r.n_total == p["params_total"]
        assert info["num_params_non_embedding"] == r.n_non_embedding == p["params_non_embedding"]
        assert r.step[-1] == p["iters"] and r.tokens[-1] == p["tokens"]
        assert r.flops[-1] == pytest.approx(p["flops"], rel=1e-6)
        assert len(r.val_loss) == 2
    # a second `run` trains nothing
    assert main(["run", f"ladder={ladder}"]) == 0
    assert capsys.readouterr().out.count("finished already, skipped") == 2
    fit = run_fit(load_config("fit", [f"ladder={ladder}", f"output.dir={tmp_path / 'fit'}", "fit.bootstrap.n=5",
                                      "fit.top_k=5"]), plots=False)
    assert fit["n_runs"] == 2 and fit["loss"] == "val"
    assert "2 model sizes < fit.min_points_per_budget=3" in fit["approach2"]["rejected_budgets"][0]["reason"]
    assert "5 parameters" in fit["approach3"]["error"]
