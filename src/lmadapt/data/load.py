"""`load_split`: one split of a dataset (a file, a split of a folder or catalog dataset, or a Hub split),
read, validated against the fields a task needs, and optionally subset."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

from ..errors import DataError
from .fields import check_kinds, validate_records
from .readers import FORMATS, Record, no_records, read_records


def load_split(
    source: str | None,
    split: str | None,
    fields: Mapping[str, str],
    *,
    limit: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """Records of one split, validated against `fields` ({name: kind}); `None` split -> [].

    `split` is a file path (.jsonl .json .csv .tsv .parquet) or a split name inside `source` (a catalog
    dataset, a folder holding `{split}.jsonl` etc., or a Hub id). `limit` keeps a seeded random subset in
    the original order. Raises `DataError("FILE:LINE: field 'x': expected ..., got ...")`, and for a split
    file that holds no records (an empty split is a mistake; leave the split out with `null` instead).
    """
    if split is None:
        return []
    check_kinds(fields)
    records = validate_records(_read_split(source, split), fields)
    return subset(records, limit, seed)


def subset(records: list, limit: int | None, seed: int = 0) -> list:
    """At most `limit` records drawn with `seed`, in their original order (all of them when fewer)."""
    if limit is None or limit >= len(records):
        return records
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in keep]


def split_file(folder: str | Path, split: str) -> Path:
    """The file of `split` in a folder: the first of `{split}.jsonl|.json|.csv|.tsv|.parquet` that exists."""
    folder = Path(folder)
    for suffix in FORMATS:
        path = folder / f"{split}{suffix}"
        if path.is_file():
            return path
    if (folder / split).is_file():  # a file name given relative to the folder
        return folder / split
    available = available_splits(folder)
    listed = ", ".join(available) if available else f"none (no {'/'.join(FORMATS)} files)"
    raise DataError(f"{folder}: no split {split!r}; available splits: {listed}")


def available_splits(folder: str | Path) -> list[str]:
    """Names of the split files in a folder (`train` for train.jsonl), sorted; manifest.json is not one."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FORMATS]
    return sorted({p.stem for p in files if p.name != "manifest.json"})


def _read_file(path: Path) -> list[Record]:
    records = read_records(path)
    if not records:
        raise no_records(path)
    return records


def _read_split(source: str | None, split: str) -> list[Record]:
    path = Path(split).expanduser()
    # a stray file named like a split (`./train`) must not shadow the source's split
    if path.is_file() and (source is None or path.suffix.lower() in FORMATS):
        return _read_file(path)
    if source is None:
        if path.suffix.lower() in FORMATS or "/" in split:
            raise DataError(f"{split}: no such file")
        raise DataError(f"{split!r} is not a file, and data.source is empty: give a file path or a source")
    from ..sources import resolve_dataset  # sources sits below data; imported here to keep imports light

    resolved = resolve_dataset(source)
    folder = Path(resolved).expanduser()
    if folder.is_dir():
        return _read_file(split_file(folder, split))
    if folder.is_file():
        raise DataError(f"{source}: data.source is a file; give files as the train/eval/test splits instead")
    if path.suffix.lower() in FORMATS:
        raise DataError(f"{split}: no such file")
    return _read_hub(resolved, split)


def _read_hub(repo: str, split: str) -> list[Record]:
    """A Hub dataset split (where the Hub is reachable); class-label ids become their names."""
    try:
        import datasets

        ds = datasets.load_dataset(repo, split=split)
    except Exception as exc:  # offline, unknown repo, unknown split: all end the same way for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{repo!r} is not a catalog dataset (`lmadapt data list`) or an existing folder, and Hub dataset "
            f"{repo!r} split {split!r} could not be loaded: {first}"
        ) from None
    names = _class_names(ds.features)
    records = []
    for index, row in enumerate(ds):
        for column, labels in names.items():
            value = row.get(column)
            if isinstance(value, int):
                row[column] = labels[value] if 0 <= value < len(labels) else value
            elif isinstance(value, list):
                row[column] = [labels[v] if isinstance(v, int) and 0 <= v < len(labels) else v for v in value]
        records.append(Record(row, f"{repo}[{split}]: row {index}", index))
    return records


def _class_names(features) -> dict[str, list[str]]:
    """Columns holding ClassLabel ids (or lists of them) -> their label names."""
    from datasets import ClassLabel

    out = {}
    for column, feature in features.items():
        inner = getattr(feature, "feature", feature)  # Sequence / List of ClassLabel
        if isinstance(inner, ClassLabel):
            out[column] = list(inner.names)
    return out
