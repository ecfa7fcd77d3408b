"""Gopher repetition removal (Rae et al. 2021, table A1) with the n-gram statistics computed faster.

Same rules, thresholds, order and reasons as datatrove's GopherRepetitionFilter, whose constructor and
attributes it reuses; only the counting differs. datatrove builds every n-gram as a joined string inside a
Python loop, three times for the top n-grams and six for the duplicated ones. Here:

* top n-gram: n-grams are tuples made by ``zip`` and counted with ``Counter``; a word never holds a space, so
  tuples and space-joined strings correspond one to one, and ``most_common`` breaks ties by first occurrence
  either way. Its characters are the joined string's length.
* duplicated n-grams: the keys (words concatenated, as datatrove does) are built by ``map`` over ``zip``, then
  the same greedy scan (a repeated n-gram skips its n words), which stops once the repeated characters pass the
  threshold, since that count only grows.

tests/data_pipeline/test_filters.py checks the decisions equal datatrove's, document by document.
"""

from __future__ import annotations

from collections import Counter

from datatrove.data import Document
from datatrove.pipeline.filters.gopher_repetition_filter import GopherRepetitionFilter
from datatrove.utils.text import split_into_words


def _duplicates(parts: list[str]) -> tuple[int, int]:
    """(number of parts seen before, their characters)."""
    seen, count, chars = set(), 0, 0
    for part in parts:
        if part in seen:
            count += 1
            chars += len(part)
        else:
            seen.add(part)
    return count, chars


def _ngrams(words: list[str], n: int):
    return zip(*(words[i:] for i in range(n)))


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram (space-joined length x count)."""
    ((gram, count),) = Counter(_ngrams(words, n)).most_common(1)
    return (sum(map(len, gram)) + n - 1) * count


def repeated_ngram_chars(words: list[str], n: int, stop_above: float = float("inf")) -> int:
    """Characters in repeated n-grams, greedy left to right, a repeat skipping its n words."""
    keys = list(map("".join, _ngrams(words, n)))
    seen, repeated, i, end = set(), 0, 0, len(keys)
    while i < end:
        key = keys[i]
        if key in seen:
            repeated += len(key)
            if repeated > stop_above:
                return repeated
            i += n
        else:
            seen.add(key)
            i += 1
    return repeated


class FastGopherRepetitionFilter(GopherRepetitionFilter):
    name = "👯 Gopher Repetition (fast counts)"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        if not text:
            return False, "empty"
        size = len(text)
        paragraphs = self.paragraph_exp.split(text.strip())
        dup_paragraphs, dup_paragraph_chars = _duplicates(paragraphs)
        if self.dup_para_frac and dup_paragraphs / len(paragraphs) > self.dup_para_frac:
            return False, "dup_para_frac"
        if self.dup_para_char_frac and dup_paragraph_chars / size > self.dup_para_char_frac:
            return False, "dup_para_char_frac"
        lines = self._line_splitter.split(text)
        dup_lines, dup_line_chars = _duplicates(lines)
        if self.dup_line_frac and dup_lines / len(lines) > self.dup_line_frac:
            return False, "dup_line_frac"
        if self.dup_line_char_frac and dup_line_chars / size > self.dup_line_char_frac:
            return False, "dup_line_char_frac"
        words = split_into_words(text, self.language)
        for n, n_frac in self.top_n_grams:
            if len(words) >= n and top_ngram_chars(words, n) / size > n_frac:
                return False, f"top_{n}_gram"
        for n, n_frac in self.dup_n_grams:
            if repeated_ngram_chars(words, n, stop_above=n_frac * size) / size > n_frac:
                return False, f"duplicated_{n}_n_grams"
        return True
