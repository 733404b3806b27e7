"""`lmadapt data check FILE`: read and validate one data file, summarize its records and fields."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .fields import SHAPES, guess_shape, validate_records
from .readers import no_records, read_records


def check_file(path: str | Path, shape: str | None = None) -> dict:
    """Read `path` (and validate it as `shape`, if given); a summary: count, shape, fields and their types.

    Raises `DataError` naming the file, line and field of the first bad record, or saying it has none.
    """
    if shape is not None and shape not in SHAPES:
        from ..errors import DataError

        raise DataError(f"--shape: unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")
    records = read_records(path)
    if not records:
        raise no_records(path)
    if shape is not None:
        validate_records(records, SHAPES[shape])
    present: Counter = Counter()
    types: dict[str, Counter] = {}
    for record in records:
        for name, value in record.items():
            present[name] += 1
            types.setdefault(name, Counter())[_type_name(value)] += 1
    return {
        "path": str(path),
        "count": len(records),
        "shape": shape,
        "guessed_shape": guess_shape(records[0]) if records and shape is None else None,
        "fields": {name: {"present": present[name], "types": dict(types[name])} for name in present},
    }


def summary_lines(summary: dict) -> list[str]:
    """The summary as lines for the terminal."""
    lines = [f"{summary['path']}: {summary['count']} records"]
    if summary["shape"]:
        lines.append(f"valid as shape {summary['shape']!r}: {', '.join(SHAPES[summary['shape']])}")
    elif summary["guessed_shape"]:
        lines.append(f"first record looks like shape {summary['guessed_shape']!r} (check it with --shape)")
    for name, info in summary["fields"].items():
        types = ", ".join(f"{kind} {n}" for kind, n in info["types"].items())
        lines.append(f"  {name}: in {info['present']}/{summary['count']} ({types})")
    return lines


def _type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "string" if value.strip() else "empty string"
    if isinstance(value, dict):
        return "object"
    return {"bool": "boolean", "tuple": "list"}.get(type(value).__name__, type(value).__name__)
