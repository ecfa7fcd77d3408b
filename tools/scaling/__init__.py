"""Scaling laws: IsoFLOP ladders of runs, loss-vs-tokens tracking, Chinchilla fits with bootstrap intervals,
compute-optimal answers, predictions of bigger runs, and plots. CLI: python -m tools.scaling
{plan,run,fit,predict}; see the README's scaling section."""

from __future__ import annotations

from pathlib import Path


def quickstart_ladder(data_cfg_overrides: list[str], out_dir: Path, budget_flops: float) -> dict:
    """Plan, train (CPU, sequentially), fit and plot the quickstart ladder; print the compute-optimal answer;
    predict, train and measure a run at 4x its largest budget."""
    from tools.scaling.quickstart import quickstart_ladder as run

    return run(data_cfg_overrides, out_dir, budget_flops)
