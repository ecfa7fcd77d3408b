"""stage=score: one pipeline, reader(s) -> [HTML extraction] -> quality classifier -> writer. Nothing is removed.

    <output.dir>/documents/00000.jsonl.zst   every document, with metadata.<score.key> (P(reference), a float)
                                             and metadata.quality_model (the first 16 hex digits of its sha256)
    <output.dir>/manifest.json               in = kept + errors (no removals); the model, a score histogram

The model's sha256 is part of the resume fingerprint: resuming with another model file is refused, and a task
that finds the file changed under it fails instead of mixing two models' scores in one output.
"""

from __future__ import annotations

from datatrove.pipeline.base import PipelineStep

from data_pipeline.config import ConfigError, StageConfig
from data_pipeline.stages.base import Books, Pipeline, ScoreRole, Stage, WriterRole
from data_pipeline.stages.inputs import build_read_steps, jsonl_writer

BINS = 10


def model_sha256(path: str) -> str:
    from data_pipeline.score.model import QualityModel

    try:
        return QualityModel.load(path).sha256
    except FileNotFoundError:
        raise ConfigError(f"score.model: {path} does not exist. Fix: train one with `python -m data_pipeline.score "
                          f"train ... output.prefix=PREFIX` and pass score.model=PREFIX.model") from None
    except ValueError as exc:
        raise ConfigError(f"score.model: {exc}") from None


class QualityScorer(PipelineStep):
    """Writes the classifier's P(reference) into every document; counts documents and a score histogram."""

    name = "🏅 quality classifier"
    type = "📊 - SCORER"

    def __init__(self, model_path: str, sha256: str, key: str = "quality_score", batch: int = 64):
        super().__init__()
        self.model_path, self.sha256, self.key, self.batch = model_path, sha256, key, batch

    def _scored(self, model, batch):
        with self.track_time(unit="batch"):
            scores = model.scores([doc.text for doc in batch])
        for doc, score in zip(batch, scores):
            score = float(score)
            doc.metadata[self.key] = score
            doc.metadata["quality_model"] = self.sha256[:16]
            self.stat_update("score_documents")
            self.stat_update("score_sum", value=score)
            self.stat_update(f"score_bin_{min(int(score * BINS), BINS - 1)}")
            self.update_doc_stats(doc)
            yield doc

    def run(self, data, rank: int = 0, world_size: int = 1):
        from data_pipeline.score.model import QualityModel

        model = QualityModel.load(self.model_path)
        if model.sha256 != self.sha256:
            raise RuntimeError(f"{self.model_path} changed after the stage started (sha256 {model.sha256[:16]}, "
                               f"expected {self.sha256[:16]}); put the original back or use a new output.dir")
        batch = []
        for doc in data:
            batch.append(doc)
            if len(batch) == self.batch:
                yield from self._scored(model, batch)
                batch = []
        yield from self._scored(model, batch)


class ScoreStage(Stage):
    name = "score"

    def pipelines(self, cfg: StageConfig) -> list[Pipeline]:
        sha = model_sha256(cfg.score.model)
        steps, roles = build_read_steps(cfg)
        steps += [QualityScorer(cfg.score.model, sha, cfg.score.key),
                  jsonl_writer(cfg, f"{cfg.output.dir.rstrip('/')}/documents")]
        roles += [ScoreRole(), WriterRole()]
        return [Pipeline("score", steps, roles, cfg.executor.tasks)]

    def fingerprint_inputs(self, cfg: StageConfig) -> dict:
        return {"score_model_sha256": model_sha256(cfg.score.model)}

    def manifest_extra(self, books: Books, state: dict) -> dict:
        cfg = state.get("config") or {}
        scored = int(books.extra.get("score_documents", 0))
        problem = "" if scored == int(books.kept) else f"{scored} documents were scored, {int(books.kept)} written"
        return {"score": {
            "model": cfg.get("score", {}).get("model"),
            "model_sha256": (state.get("stage_inputs") or {}).get("score_model_sha256"),
            "key": cfg.get("score", {}).get("key"),
            "documents_scored": scored,
            "mean_score": round(books.extra.get("score_sum", 0.0) / scored, 4) if scored else None,
            "histogram": [int(books.extra.get(f"score_bin_{i}", 0)) for i in range(BINS)],
            "consistent": not problem,
            "consistency_problem": problem,
        }}
