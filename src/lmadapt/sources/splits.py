"""Deterministic train/validation/test splits and the counts a manifest records."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

SPLIT_SEED = 0


def split_records(
    records: list[dict],
    fractions: Mapping[str, float],
    *,
    seed: int = SPLIT_SEED,
    stratify: Callable[[dict], object] | None = None,
) -> dict[str, list[dict]]:
    """Shuffle with a fixed seed and cut into named splits.

    `fractions` maps split names to shares; the first split (train) takes what rounding leaves, so every
    record lands in exactly one split. With `stratify`, each group (e.g. label) is cut separately, which
    keeps label shares equal across splits.
    """
    names = list(fractions)
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    groups: dict[object, list[int]] = {}
    for i in order:
        groups.setdefault(stratify(records[i]) if stratify else None, []).append(i)
    assigned: dict[int, str] = {}
    for members in groups.values():
        start = 0
        for name in reversed(names[1:]):  # small splits first: each gets round(share * n)
            n = round(fractions[name] * len(members))
            for i in members[start : start + n]:
                assigned[i] = name
            start += n
        for i in members[start:]:
            assigned[i] = names[0]
    # Keep the shuffled order inside each split, so no split is sorted by label.
    return {name: [records[i] for i in order if assigned[i] == name] for name in names}


def label_counts(records: Iterable[dict], labels_of: Callable[[dict], Iterable[object]]) -> dict[str, int]:
    """How often each label occurs, most common first."""
    counts = Counter(str(label) for rec in records for label in labels_of(rec))
    return dict(counts.most_common())
