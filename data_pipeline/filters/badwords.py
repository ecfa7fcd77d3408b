"""C4's bad-words filter with a local word list (datatrove's version downloads the list at run time)."""

from __future__ import annotations

import re
from pathlib import Path

from datatrove.pipeline.filters.c4_filters import C4BadWordsFilter


class LocalC4BadWordsFilter(C4BadWordsFilter):
    """Drop documents containing a word from ``words_file`` (one word or phrase per line, UTF-8).

    The LDNOOBW lists C4 used are not bundled with any package we install, so the file is required.
    """

    name = "⛰ C4 bad words (local list)"

    def __init__(self, words_file: str | None = None, **kwargs):
        if not words_file or not Path(words_file).is_file():
            raise ValueError(
                f"c4_badwords: words_file={words_file!r} is not a file. This filter needs a local word list "
                "(one word per line, e.g. the LDNOOBW list for your language); nothing is downloaded at run time."
            )
        kwargs.setdefault("fail_on_missing_language", False)
        super().__init__(**kwargs)
        self.words_file = words_file

    def _get_badwords(self, lang: str):
        if lang not in self._badwords_regex:
            words = sorted({w.strip().lower() for w in Path(self.words_file).read_text("utf-8").splitlines()} - {""})
            alternatives = "|".join(re.escape(w) for w in words) or r"(?!x)x"
            self._badwords_regex[lang] = (
                re.compile(alternatives) if lang in ("ja", "th", "zh")
                else re.compile(r"(?:\W|^)({})(?:\W|$)".format(alternatives))
            )
        return self._badwords_regex[lang]
