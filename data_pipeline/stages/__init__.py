"""The stage registry: ``stage=<name>`` on the command line picks one of these."""

from __future__ import annotations

from data_pipeline.stages.base import Stage


def registry() -> dict[str, type[Stage]]:
    from data_pipeline.dedup.stage import DedupStage
    from data_pipeline.mix.stage import MixStage
    from data_pipeline.mix.tokenize import TokenizeStage
    from data_pipeline.score.stage import ScoreStage
    from data_pipeline.stages.filter import FilterStage

    return {cls.name: cls for cls in (FilterStage, DedupStage, ScoreStage, MixStage, TokenizeStage)}


def get_stage(name: str) -> Stage:
    return registry()[name]()
