"""stage=filter: one pipeline, reader(s) -> HTML extraction (WARC/pages) -> filters -> writer.

    <output.dir>/documents/00000.jsonl.zst            kept documents, one file per task
    <output.dir>/removed/<NN_filter>/00000.jsonl.zst  removed documents with metadata.filter_reason
"""

from __future__ import annotations

from data_pipeline.config import StageConfig
from data_pipeline.extract import HtmlToText
from data_pipeline.filters.registry import build_filters
from data_pipeline.stages.base import ExtractorRole, FilterRole, Pipeline, ReaderRole, Stage, WriterRole
from data_pipeline.stages.inputs import build_readers, jsonl_writer


class FilterStage(Stage):
    name = "filter"

    def pipelines(self, cfg: StageConfig, shared_words: bool = True) -> list[Pipeline]:
        out = cfg.output.dir.rstrip("/")
        steps, roles = [], []
        for reader in build_readers(cfg):
            steps.append(reader)
            roles.append(ReaderRole())
        if cfg.input.format in ("warc", "pages"):
            steps.append(HtmlToText(timeout=cfg.extract.timeout_s, favour_precision=cfg.extract.favour_precision))
            roles.append(ExtractorRole())
        names = [f"{i:02d}_{spec['kind']}" for i, spec in enumerate(cfg.filters)]

        def exclusion_writer_for(i, kind):
            return jsonl_writer(cfg, f"{out}/removed/{names[i]}") if cfg.output.exclusions else None

        steps += build_filters(cfg.filters, exclusion_writer_for, shared_words=shared_words)
        roles += [FilterRole(name) for name in names]
        steps.append(jsonl_writer(cfg, f"{out}/documents"))
        roles.append(WriterRole())
        return [Pipeline("filter", steps, roles, cfg.executor.tasks)]
