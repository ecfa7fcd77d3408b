"""The local ladder runner: finished runs are skipped; the real trainer trains the others."""

from __future__ import annotations

from pathlib import Path

from scaling_synthetic import make_ladder

from tools.scaling.__main__ import main


def test_finished_runs_are_skipped(tmp_path, capsys):
    root, plan = make_ladder(tmp_path / "ladder")  # every run has finished.json
    assert main(["run", f"ladder={root}", "python=/nonexistent/python"]) == 0  # nothing is launched
    out = capsys.readouterr().out
    assert out.count("finished already, skipped") == len(plan.runs)


def test_runs_txt_matches_the_plan(tmp_path):
    root, plan = make_ladder(tmp_path / "ladder")
    lines = Path(root / "runs.txt").read_text().splitlines()
    assert [line.split("run.dir=")[1].split()[0] for line in lines] == [str(root / "runs" / r.name) for r in plan.runs]
