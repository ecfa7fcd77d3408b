"""Charset handling on real legacy-encoded pages (chardet's test corpus) and on made-up bad payloads."""

from __future__ import annotations

import pytest

from data_pipeline.sources.decode import DecodeError, decode_payload, declared_charset

TEXT = "Árvíztűrő tükörfúrógép — Съешь же ещё этих мягких французских булок"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-8-sig"])
def test_unicode_with_and_without_bom(codec):
    text = "<html><body>" + TEXT + " plain ASCII words here to look like a page</body></html>"
    assert decode_payload(text.encode(codec))[0] == text


def test_wrong_declared_charset_prefers_valid_utf8():
    data = TEXT.encode("utf-8")
    assert decode_payload(data, "text/html; charset=iso-8859-1")[0] == TEXT


def test_undeclared_legacy_charset_is_detected():
    text = "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 5
    assert decode_payload(text.encode("koi8-r"))[0] == text
    assert decode_payload(text.encode("cp1251"), "text/html; charset=windows-1251")[0] == text


def test_meta_charset_is_read():
    assert declared_charset(None, b'<html><head><meta charset="Shift_JIS">') == "Shift_JIS"
    assert declared_charset("text/html; charset=UTF-8", b"") == "UTF-8"


@pytest.mark.parametrize("payload", [bytes(range(256)) * 8, b"\x89PNG\r\n\x1a\n" + bytes(4000), b"\x00" * 500])
def test_binary_is_an_error(payload):
    with pytest.raises(DecodeError) as info:
        decode_payload(payload, "text/html")
    assert info.value.reason == "binary_payload"


def test_chardet_corpus_decodes(chardet_pages):
    files = sorted(p for p in chardet_pages.rglob("*") if p.is_file())
    assert len(files) == 426
    failed = []
    for path in files:
        try:
            decode_payload(path.read_bytes())
        except DecodeError as exc:
            failed.append((path.relative_to(chardet_pages).as_posix(), exc.reason))
    # The only failure is a file of 1,100 NUL bytes, which is not text in any charset.
    assert failed == [("ascii/_mozilla_bug638318_text.html", "binary_payload")]
