"""stage=filter: one pipeline, reader(s) -> HTML extraction (WARC/pages) -> filters -> writer.

    <output.dir>/documents/00000.jsonl.zst            kept documents, one file per task
    <output.dir>/removed/<NN_filter>/00000.jsonl.zst  removed documents with metadata.filter_reason
"""

from __future__ import annotations

from data_pipeline.config import StageConfig
from data_pipeline.filters.registry import build_filters
from data_pipeline.stages.base import FilterRole, Pipeline, Stage, WriterRole
from data_pipeline.stages.inputs import build_read_steps, jsonl_writer


class FilterStage(Stage):
    name = "filter"

    def pipelines(self, cfg: StageConfig, shared_words: bool = True) -> list[Pipeline]:
        out = cfg.output.dir.rstrip("/")
        steps, roles = build_read_steps(cfg)
        names = [f"{i:02d}_{spec['kind']}" for i, spec in enumerate(cfg.filters)]

        def exclusion_writer_for(i, kind):
            return jsonl_writer(cfg, f"{out}/removed/{names[i]}") if cfg.output.exclusions else None

        steps += build_filters(cfg.filters, exclusion_writer_for, shared_words=shared_words)
        roles += [FilterRole(name) for name in names]
        steps.append(jsonl_writer(cfg, f"{out}/documents"))
        roles.append(WriterRole())
        return [Pipeline("filter", steps, roles, cfg.executor.tasks)]
