"""A recipe's train / eval / test records for a task, through the shared readers."""

from __future__ import annotations

from .load import load_split

SPLIT_NAMES = ("train", "eval", "test")


def load_splits(recipe, fields: dict, skip: tuple[str, ...] = ()) -> dict[str, list[dict]]:
    """train / eval / test records (validated against `fields`, subset by data.max_*); `skip`ped ones empty."""
    data = recipe.data
    limits = {"train": data.max_train, "eval": data.max_eval, "test": data.max_test}
    return {
        name: []
        if name in skip
        else load_split(data.source, getattr(data, name), fields, limit=limits[name], seed=data.seed)
        for name in SPLIT_NAMES
    }
