"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash or a bad record mid-write never leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`, else delete it.

    Works for files and folders (a folder target is replaced whole).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    inner = tmp / (target.name + suffix)
    try:
        yield inner
        if target.is_dir() and not target.is_symlink():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            inner.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(inner, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records as JSON lines atomically; return how many were written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one record and flush it to disk, for resumable append-only outputs."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_appendable_jsonl(path: Path) -> list[dict]:
    """Records of an append-only JSONL file that a killed writer may have left torn (synth, rank): a torn last
    line is cut off the file, a last record without its newline gets one; a bad line before the end is a real
    corruption and raises DataError naming it."""
    from ..errors import DataError

    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records, offset = [], 0
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        if raw.strip():
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError:
                if not last:
                    raise DataError(
                        f"{path}:{i + 1}: not valid JSON; fix or delete this line to resume"
                    ) from None
                with open(path, "r+b") as f:
                    f.truncate(offset)
                break
            if last:  # the record made it but its newline did not
                with open(path, "ab") as f:
                    f.write(b"\n")
        offset += len(raw) + 1
    return records
