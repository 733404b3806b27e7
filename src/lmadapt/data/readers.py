"""Read a data file (.jsonl .json .csv .tsv .parquet) into records that remember where they came from.

Every record is a `Record`: a plain dict plus `.where`, the text an error message starts with
(`data/train.jsonl:7`, `data/train.parquet: row 6`). Reading never writes anything.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from ..config.text import read_utf8
from ..errors import DataError

FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


class Record(dict):
    """A record read from a file; `where` locates it for error messages (`FILE:LINE`)."""

    __slots__ = ("where", "line")

    def __init__(self, data=(), where: str = "", line: int | None = None):
        super().__init__(data)
        self.where = where
        self.line = line

    def __reduce__(self):
        return (Record, (dict(self), self.where, self.line))


def read_records(path: str | Path) -> list[Record]:
    """All records of one file, in file order. Raises `DataError` naming the file and line of bad syntax."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if suffix == ".parquet":
        return _read_parquet(path)
    text = _read_text(path)
    if suffix == ".jsonl":
        return _read_jsonl(path, text)
    if suffix == ".json":
        return _read_json(path, text)
    return _read_csv(path, text, "\t" if suffix == ".tsv" else ",")


def no_records(path: str | Path) -> DataError:
    """The error for a data file that holds no records: empty, blank lines only, `[]`, or a header only."""
    path = Path(path)
    why = (
        "the file is empty"
        if path.is_file() and path.stat().st_size == 0
        else "nothing but a header or blanks"
    )
    return DataError(f"{path}: no records ({why})")


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark (Excel writes one)."""
    return read_utf8(path, DataError, "file")


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # a \ud800-\udfff escape: valid only as half of a pair


def _loads(path: Path, line: int, text: str):
    """One JSON value; syntax errors and absurd nesting become a DataError naming the line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{line}: not valid JSON: {exc.msg} (col {exc.colno})") from None
    except RecursionError:
        raise DataError(f"{path}:{line}: not valid JSON: nested too deeply") from None
    _check_unicode(path, line, text, value)
    return value


def _check_unicode(path: Path, line: int, text: str, value) -> None:
    """JSON may escape half a surrogate pair (\\ud800), which is no character: reject it here, not when printed."""
    if not _SURROGATE.search(text):
        return
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("utf-8", "backslashreplace").decode("ascii")
        raise DataError(f"{path}:{line}: not valid text: {bad} is half of a UTF-16 surrogate pair") from None


def _object(path: Path, line: int, value) -> Record:
    if not isinstance(value, dict):
        raise DataError(f"{path}:{line}: expected a JSON object {{...}}, got {type(value).__name__}")
    return Record(value, f"{path}:{line}", line)


def _read_jsonl(path: Path, text: str) -> list[Record]:
    records = []
    # split on "\n" only: str.splitlines would also break on U+2028, which JSON allows inside strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        records.append(_object(path, number, _loads(path, number, line)))
    return records


def _read_json(path: Path, text: str) -> list[Record]:
    """A top-level JSON list of objects; each record keeps the line of its opening brace."""
    decoder = json.JSONDecoder()
    n = len(text)

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    def fail(i: int, msg: str):
        line = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        raise DataError(f"{path}:{line}: not valid JSON: {msg} (col {col})")

    i = skip(0)
    if i == n:
        return []
    if text[i] == "{":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # one object per line: JSON Lines under a .json name
                return _read_jsonl(path, text)
            raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (col {exc.colno})") from None
        except RecursionError:
            raise DataError(f"{path}:1: not valid JSON: nested too deeply") from None
        _check_unicode(path, 1, text, whole)
        keys = ", ".join(_short(key) for key in list(whole)[:5])
        raise DataError(
            f"{path}:1: expected a JSON list of records [{{...}}, ...], got one object (keys {keys})"
        )
    if text[i] != "[":
        fail(i, "expected a JSON list of records [{...}, ...]")
    records, line, counted = [], 1, 0
    i = skip(i + 1)
    if i < n and text[i] == "]":
        return []
    while True:
        line += text.count("\n", counted, i)  # counted incrementally: whole-file cost stays linear
        counted = i
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (col {exc.colno})") from None
        except RecursionError:
            raise DataError(f"{path}:{line}: not valid JSON: nested too deeply") from None
        _check_unicode(path, line, text[i:end], value)
        records.append(_object(path, line, value))
        i = skip(end)
        if i < n and text[i] == "]":
            break
        if i >= n or text[i] != ",":
            fail(i, "expected ',' or ']' after a record")
        i = skip(i + 1)
    if skip(i + 1) != n:
        fail(skip(i + 1), "extra data after the list")
    return records


def _read_csv(path: Path, text: str, delimiter: str) -> list[Record]:
    csv.field_size_limit(2**31 - 1)  # abstracts and reviews can exceed the 128 KiB default
    # newline="": csv sees the raw line ends, so quoted newlines stay inside their cell
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise DataError(f"{path}:1: bad header row: {exc}") from None
    header = [name.strip() for name in header]
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}:1: column {name!r} appears twice in the header")
        seen.add(name)
    records = []
    while True:
        start = reader.line_num + 1  # a quoted cell may span lines: name the row's first physical line
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}:{start}: bad CSV row: {exc}") from None
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            raise DataError(f"{path}:{start}: {len(row)} cells, but the header has {len(header)} columns")
        # a short row leaves its last columns out, which validation reports as missing fields by name
        records.append(Record(zip(header, row, strict=False), f"{path}:{start}", start))
    return records


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for corrupt or non-parquet files
        raise DataError(f"{path}: not a readable parquet file: {exc}") from None
    return [Record(row, f"{path}: row {index}", index) for index, row in enumerate(rows)]
