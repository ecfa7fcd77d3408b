"""Bytes of a web page -> str: byte-order mark, then UTF-8, then the declared charset, then detection.

UTF-8 is tried before the declared charset because a page that decodes as strict UTF-8 and has non-ASCII
bytes is UTF-8 in practice, whatever its header says (a wrong ``charset=iso-8859-1`` is common). A page that
no charset decodes, or that looks binary, raises ``DecodeError`` with a short reason for the manifest.
"""

from __future__ import annotations

import codecs
import re

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# Control bytes that no text charset uses (ESC, SO and SI are left out: ISO-2022 encodings need them).
_CONTROL = bytes(range(0, 9)) + b"\x0b" + bytes(range(0x10, 0x1B)) + bytes(range(0x1C, 0x20))
# Labels that pages and detectors give, and the superset codec that browsers actually use for them.
_SUPERSETS = {"shift_jis": "cp932", "euc_kr": "cp949", "gb2312": "gb18030", "gbk": "gb18030",
              "big5": "big5hkscs", "iso8859-1": "cp1252", "ascii": "cp1252", "tis-620": "cp874"}


class DecodeError(ValueError):
    """The payload is not text in any charset we can identify; ``reason`` names the problem."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def declared_charset(content_type: str | None, head: bytes) -> str | None:
    """The charset named by the HTTP Content-Type header, else by a <meta> or <?xml?> tag in the page."""
    if content_type:
        m = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", content_type, re.IGNORECASE)
        if m:
            return m.group(1)
    m = _META_CHARSET.search(head[:4096]) or _XML_ENCODING.search(head[:512])
    return m.group(1).decode("ascii") if m else None


def _is_utf16_or_32(name: str | None) -> bool:
    return bool(name) and name.lower().replace("_", "-").startswith(("utf-16", "utf-32"))


def _unmarked_utf16_or_32(head: bytes) -> str | None:
    """UTF-16/32 without a BOM, told apart by where the NUL bytes fall in ASCII-heavy text."""
    n = len(head) - len(head) % 4
    if n < 8:
        return None
    nul_at = [sum(1 for i in range(k, n, 4) if head[i] == 0) / (n // 4) for k in range(4)]
    if nul_at[2] > 0.9 and nul_at[3] > 0.9 and nul_at[0] < 0.5:
        return "utf-32-le"
    if nul_at[0] > 0.9 and nul_at[1] > 0.9 and nul_at[3] < 0.5:
        return "utf-32-be"
    if nul_at[1] > 0.6 and nul_at[3] > 0.6:
        return "utf-16-le"
    if nul_at[0] > 0.6 and nul_at[2] > 0.6:
        return "utf-16-be"
    return None


def decode_payload(data: bytes, content_type: str | None = None) -> tuple[str, str]:
    """Return (text, charset used). Raise DecodeError("binary_payload" | "undecodable_charset")."""
    if not data:
        return "", "utf-8"
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(name), name
            except UnicodeDecodeError:
                raise DecodeError("undecodable_charset") from None
    declared = declared_charset(content_type, data)
    import cchardet  # faust-cchardet, a datatrove[processing] dependency

    head = data[:8192]
    if b"\x00" in head:
        # UTF-16/32 without a BOM is text with NUL bytes; anything else with NULs is binary.
        guess = declared if _is_utf16_or_32(declared) else _unmarked_utf16_or_32(head)
        if not _is_utf16_or_32(guess):
            raise DecodeError("binary_payload")
        try:
            text = data.decode(guess)
        except (UnicodeDecodeError, LookupError):
            raise DecodeError("binary_payload") from None
        if text.count("\x00") > len(text) // 20:
            raise DecodeError("binary_payload")
        return text, guess.lower()
    if sum(head.count(c) for c in _CONTROL) > len(head) // 20:
        raise DecodeError("binary_payload")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    candidates = [declared] if declared else []
    detected = cchardet.detect(data)
    if detected.get("encoding"):
        candidates.append(detected["encoding"])
    for name in candidates:
        try:
            info = codecs.lookup(name)
        except LookupError:
            continue
        if not getattr(info, "_is_text_encoding", True):  # base64, hex, rot13, zlib...: not a charset
            continue
        codec = info.name
        for attempt in (codec, _SUPERSETS.get(codec)):
            if attempt is None or attempt == "utf-8":
                continue
            try:
                return data.decode(attempt), attempt
            except (UnicodeDecodeError, LookupError):
                continue
    try:
        return data.decode("cp1252"), "cp1252"  # the web's default for unlabelled pages
    except UnicodeDecodeError:
        pass
    raise DecodeError("undecodable_charset")
