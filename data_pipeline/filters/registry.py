"""Filter kinds by name (what conf/data_pipeline/filters/*.yaml lists), each a datatrove block."""

from __future__ import annotations

import inspect

from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

from data_pipeline.config import ConfigError
from data_pipeline.filters.badwords import LocalC4BadWordsFilter
from data_pipeline.filters.language import FastTextLanguageFilter
from data_pipeline.filters.links import LinkListFilter
from data_pipeline.filters.repetition import FastGopherRepetitionFilter
from data_pipeline.filters.url import OfflineURLFilter
from data_pipeline.filters.words import SharedSpacyWordTokenizer

FILTER_KINDS = {
    "url": OfflineURLFilter,
    "language": FastTextLanguageFilter,
    "gopher_repetition": GopherRepetitionFilter,
    "gopher_quality": GopherQualityFilter,
    "c4_quality": C4QualityFilter,
    "c4_badwords": LocalC4BadWordsFilter,
    "fineweb_quality": FineWebQualityFilter,
    "link_list": LinkListFilter,
}
# Filters that split text into words or sentences: they share one fast splitter (filters/words.py).
WORD_SPLITTING = {"gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"}


# Faster versions with identical decisions (tested against the datatrove block they replace).
FAST_KINDS = {"gopher_repetition": FastGopherRepetitionFilter}


def build_filters(specs: list[dict], exclusion_writer_for=None, shared_words: bool = True) -> list:
    """Instantiate filter specs in order. ``exclusion_writer_for(index, kind)`` returns a writer or None.

    ``shared_words=False`` gives datatrove's blocks as they are, each splitting words with its own spaCy
    call (the benchmark baseline); the default shares one fast splitter and uses FAST_KINDS.
    """
    tokenizers: dict[str, SharedSpacyWordTokenizer] = {}
    filters = []
    for i, spec in enumerate(specs):
        params = dict(spec)
        kind = params.pop("kind")
        cls = FILTER_KINDS.get(kind)
        if cls is None:
            raise ConfigError(f"filters[{i}].kind={kind!r}: choose one of {sorted(FILTER_KINDS)}")
        if shared_words:
            cls = FAST_KINDS.get(kind, cls)
        signature = inspect.signature(cls.__init__)
        accepted = set(signature.parameters) - {"self", "exclusion_writer"}
        if kind == "url":
            accepted |= set(inspect.signature(cls.__mro__[1].__init__).parameters) - {"self", "exclusion_writer"}
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ConfigError(f"filters[{i}] ({kind}): unknown parameter(s) {unknown}; accepted: {sorted(accepted)}")
        if kind in WORD_SPLITTING and shared_words:
            language = params.get("language", "en")
            if isinstance(language, str):
                params["language"] = tokenizers.setdefault(language, SharedSpacyWordTokenizer(language))
        if exclusion_writer_for is not None:
            params["exclusion_writer"] = exclusion_writer_for(i, kind)
        try:
            filters.append(cls(**params))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"filters[{i}] ({kind}): {exc}") from exc
    return filters
