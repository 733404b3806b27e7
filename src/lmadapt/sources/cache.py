"""The local cache: where pulled models and datasets live, and how an entry is built atomically.

Layout::

    $LMADAPT_HOME/models/NAME/       a folder `from_pretrained` loads, plus manifest.json
    $LMADAPT_HOME/models/gguf-SHA/   the same, converted from a local .gguf file whose sha256 is SHA
    $LMADAPT_HOME/datasets/NAME/     train/validation/test.jsonl plus manifest.json
    $LMADAPT_HOME/archives/FILE      downloaded package archives (sha256-checked), shared by entries
    $LMADAPT_HOME/.locks/            one lock file per entry, so two processes never build the same one

An entry is built in a hidden temporary folder beside its final place and renamed into place at the end
(`lmadapt.utils.io.atomic_path`), so the final folder either is complete or does not exist.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..utils.io import atomic_path, read_json

MANIFEST = "manifest.json"


def cache_home() -> Path:
    """The cache root: `$LMADAPT_HOME`, default `~/.cache/lmadapt` (read on every call)."""
    return Path(os.environ.get("LMADAPT_HOME") or Path.home() / ".cache" / "lmadapt").expanduser()


def entry_dir(kind: str, name: str) -> Path:
    """Final folder of a cache entry; `kind` is "models" or "datasets"."""
    return cache_home() / kind / name


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete entry, or None when the entry is absent."""
    path = Path(folder) / MANIFEST
    return read_json(path) if path.is_file() else None


@contextlib.contextmanager
def _locked(kind: str, name: str) -> Iterator[None]:
    lock_dir = cache_home() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{kind}-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another process builds the same entry
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def building(kind: str, name: str) -> Iterator[tuple[Path, Path] | None]:
    """Build one cache entry atomically.

    Yields None when the entry is already complete (pulling again is a no-op). Otherwise yields
    `(out, work)`: fill the empty folder `out` (write manifest.json last) and use `work` for scratch files.
    On success `out` is renamed to the entry's final place; on any error (or Ctrl-C) nothing is left behind.
    """
    target = entry_dir(kind, name)
    if read_manifest(target) is not None:
        yield None
        return
    with _locked(kind, name):
        if read_manifest(target) is not None:  # another process finished it while we waited
            yield None
            return
        # Leftovers of a pull killed with SIGKILL: hidden, never mistaken for an entry; tidy them now.
        for stale in target.parent.glob(f".{name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # a folder without a manifest is not an entry (e.g. copied by hand)
            shutil.rmtree(target)
        with atomic_path(target) as out:
            work = out.parent / "work"
            out.mkdir()
            work.mkdir()
            yield out, work
            shutil.rmtree(work)
