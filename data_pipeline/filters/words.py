"""A faster drop-in for datatrove's spaCy word splitter, giving the same words and sentence spans.

datatrove's quality filters split text with ``SpaCyTokenizer``: ``spacy.blank(lang)`` plus a sentencizer,
run inside ``memory_zone()``. Profiling the FineWeb chain on the sample crawl showed where the time goes:
the memory zone frees every lexeme after each call, so spaCy re-creates the lexeme (string store entry,
lexical attributes) of every word in every document, about half of all filter time; building a ``Token``
object per word costs another quarter. This splitter

* computes only the lexeme attribute it uses (IS_PUNCT) for a new word, not spaCy's twenty;
* keeps lexemes between documents (the vocabulary of a web crawl is Zipfian, so most words are seen
  before), and starts a fresh pipeline when the vocabulary passes ``max_vocab`` to bound memory;
* reads token strings and flags from ``Doc.to_array`` instead of building ``Token`` objects;
* applies spaCy's sentencizer rule (a sentence ends after a punctuation character from its list, at the
  next token that is not punctuation) on those arrays instead of running the pipeline.

Passed as ``language=`` to datatrove's filters (datatrove accepts a ``WordTokenizer`` there), it is shared
by all of them. ``tests/data_pipeline/test_words.py`` checks words and sentence spans are identical to
datatrove's on the sample crawl.
"""

from __future__ import annotations

from datatrove.utils.word_tokenizers import WordTokenizer


class SharedSpacyWordTokenizer(WordTokenizer):
    def __init__(self, language: str = "en", max_vocab: int = 1_000_000):
        super().__init__(language)
        self.max_vocab = max_vocab
        self._nlp = None
        self._punct_chars = None

    @property
    def nlp(self):
        if self._nlp is None or len(self._nlp.vocab) > self.max_vocab:
            import spacy
            from spacy.pipeline.sentencizer import Sentencizer

            from spacy.attrs import IS_PUNCT

            nlp = spacy.blank(self.language)
            # A new word's lexeme gets ~20 attributes computed by Python callbacks (shape, like_num, like_url,
            # ...); splitting needs none of them and the sentence rule needs IS_PUNCT only.
            nlp.vocab.lex_attr_getters = {IS_PUNCT: nlp.vocab.lex_attr_getters[IS_PUNCT]}
            self._nlp = nlp
            self._punct_chars = set(Sentencizer.default_punct_chars)
        return self._nlp

    def __getstate__(self):  # sent to worker processes without the spaCy pipeline
        return {**self.__dict__, "_nlp": None, "_punct_chars": None}

    def _tokens(self, text: str, attrs):
        nlp = self.nlp
        nlp.max_length = len(text) + 10
        doc = nlp.make_doc(text)
        return doc.to_array(attrs).tolist(), nlp.vocab.strings

    def word_tokenize(self, text: str) -> list[str]:
        from spacy.attrs import ORTH

        if not text:
            return []
        orths, strings = self._tokens(text, [ORTH])
        words = (strings[o].strip() for o in orths)
        return [w for w in words if w]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        from spacy.attrs import IDX, IS_PUNCT, ORTH

        if not text:
            return []
        rows, strings = self._tokens(text, [ORTH, IS_PUNCT, IDX])
        if not rows:
            return []
        punct_chars = self._punct_chars
        texts = [strings[orth] for orth, _, _ in rows]
        starts, seen_period = [0], False
        for i, (_, is_punct, _) in enumerate(rows):
            in_punct_chars = texts[i] in punct_chars
            if seen_period and not is_punct and not in_punct_chars:
                starts.append(i)
                seen_period = False
            elif in_punct_chars:
                seen_period = True
        ends = [s - 1 for s in starts[1:]] + [len(rows) - 1]
        return [(rows[s][2], rows[e][2] + len(texts[e])) for s, e in zip(starts, ends)]

    def sent_tokenize(self, text: str) -> list[str]:
        sentences = (text[a:b].strip() for a, b in self.span_tokenize(text))
        return [s for s in sentences if s]
