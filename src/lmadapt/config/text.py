"""User files as text: UTF-8, with or without a byte-order mark; any other encoding is named, not guessed.

Recipes and data files both come from editors and spreadsheets: Excel writes a UTF-8 BOM (accepted), Windows
tools write UTF-16 (with or without a BOM) or a legacy code page (rejected, naming the line of the first byte
that is not UTF-8).
"""

from __future__ import annotations

import codecs

_OTHER_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",  # before UTF-16 LE: it starts with the same two bytes
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


def decode_utf8(data: bytes) -> tuple[str | None, int, str]:
    """(text, 0, "") for UTF-8 bytes; else (None, line, why) naming the 1-based line of the problem."""
    for bom, name in _OTHER_BOMS.items():
        if data.startswith(bom):
            return None, 1, f"the file is {name} (byte-order mark)"
    head = data[:4096]
    if head and head.count(b"\x00") * 4 >= len(head):  # every other byte NUL: UTF-16/32 without a BOM
        return None, 1, "the file looks like UTF-16 or UTF-32 (NUL bytes)"
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8"), 0, ""
    except UnicodeDecodeError as exc:
        at = bom + exc.start  # where in the file, BOM included
        return None, data.count(b"\n", 0, at) + 1, f"not UTF-8 text (byte {at}: {exc.reason})"


def read_utf8(path, error: type[Exception], what: str) -> str:
    """A file's text (UTF-8, a BOM allowed); `error` names the file, and the line where decoding fails."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: the {what} cannot be read: {exc.strerror or exc}") from None
    text, line, why = decode_utf8(data)
    if text is None:
        raise error(f"{path}:{line}: the {what} is not readable: {why}; save it as UTF-8")
    return text
