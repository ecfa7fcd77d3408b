"""Language ID accuracy on the chardet test pages, against the language their folder names.

    python -m tools.bench.langid_chardet

chardet's tests/ holds real pages and feeds in one folder per encoding; where the folder names a language
(``windows-1250-hungarian``) or the encoding serves one language (``KOI8-R``: Russian, ``EUC-JP``: Japanese),
that is the expected label. Folders of multilingual encodings (utf-8, iso-8859-1, UTF-16, ascii, ...) are left
out. Each page is decoded and extracted as the pipeline does (HTML: Trafilatura, feeds: item text, plain text
as is); for an HTML page Trafilatura keeps nothing of, the page's whole text (trafilatura.html2txt).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from data_pipeline.extract import HtmlToText
from data_pipeline.filters.language import FastTextLanguageFilter
from data_pipeline.samples import fetch
from data_pipeline.sources.decode import DecodeError, decode_payload

ENCODING_LANGUAGE = {
    "Big5": "zh", "EUC-TW": "zh", "GB2312": "zh", "CP932": "ja", "EUC-JP": "ja", "SHIFT_JIS": "ja",
    "iso-2022-jp": "ja", "CP949": "ko", "EUC-KR": "ko", "Johab": "ko", "iso-2022-kr": "ko", "IBM855": "ru",
    "IBM866": "ru", "KOI8-R": "ru", "MacCyrillic": "ru", "TIS-620": "th",
}
NAMED_LANGUAGE = {"arabic": "ar", "bulgarian": "bg", "croatian": "hr", "czech": "cs", "greek": "el", "hebrew": "he",
                  "hungarian": "hu", "polish": "pl", "romanian": "ro", "russian": "ru", "slovak": "sk",
                  "slovene": "sl", "turkish": "tr"}


def expected_language(folder: str) -> str | None:
    if folder in ENCODING_LANGUAGE:
        return ENCODING_LANGUAGE[folder]
    return NAMED_LANGUAGE.get(folder.rsplit("-", 1)[-1])


def page_text(page: str) -> str:
    """The pipeline's extraction; for an HTML page it keeps nothing of, the page's whole text."""
    import trafilatura

    return HtmlToText().extract(page) or trafilatura.html2txt(page) or ""


def evaluate(root: Path | None = None) -> dict:
    root = root or fetch(["chardet_tests"])["chardet_tests"]
    lid = FastTextLanguageFilter()
    per_language = defaultdict(Counter)
    confusions = Counter()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        expected = expected_language(path.parent.name)
        if expected is None:
            continue
        try:
            text, _ = decode_payload(path.read_bytes())
        except DecodeError:
            per_language[expected]["undecodable"] += 1
            continue
        text = page_text(text)
        predicted, _score = lid.predict(text)
        per_language[expected]["pages"] += 1
        per_language[expected]["correct"] += predicted == expected
        if predicted != expected:
            confusions[(expected, predicted)] += 1
    pages = sum(c["pages"] for c in per_language.values())
    correct = sum(c["correct"] for c in per_language.values())
    return {"pages": pages, "correct": correct, "accuracy": correct / pages,
            "per_language": {k: dict(v) for k, v in sorted(per_language.items())},
            "confusions": dict(confusions.most_common())}


def main() -> None:
    result = evaluate()
    print(f"language ID (fastText lid.176.ftz) on chardet pages with a known language: "
          f"{result['correct']}/{result['pages']} = {100 * result['accuracy']:.1f}%")
    for lang, c in result["per_language"].items():
        print(f"  {lang}: {c.get('correct', 0)}/{c.get('pages', 0)}")
    print("  confusions (expected, predicted): " + ", ".join(f"{a}->{b} x{n}" for (a, b), n in
                                                              result["confusions"].items()))


if __name__ == "__main__":
    main()
