"""What each stage reads of a recipe: a section or key that the chosen stage ignores is a recipe error.

The table mirrors the stage modules (lmadapt/stages/finetune.py, and baselines/tfidf.py that stands in for
it; stages/sft.py; stages/prompt.py): when a stage starts reading a key, allow it here. Only keys the recipe
writes count (`model_fields_set`), and only with a value other than the default: a run's config.yaml spells
out every key, at its default where the stage does not read it, and loads again.
"""

from __future__ import annotations

from pydantic import BaseModel

from .train import TrainConfig

EVERY = None  # the stage reads every key of the section
SFT_TRAIN = ("packing", "chunked_loss", "loss_chunk", "bf16_frozen")  # stages/sft.py: packing, loss, bf16

# stage -> section -> the keys of that section the stage reads: EVERY, or a tuple (empty: the whole
# section is ignored)
READS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "finetune": {
        "method": EVERY,
        "prompt": (),
        "train": tuple(k for k in TrainConfig.model_fields if k not in SFT_TRAIN),
        "eval": EVERY,
    },
    "sft": {"method": EVERY, "prompt": (), "train": EVERY, "eval": ("metrics", "every")},
    "prompt": {"method": (), "prompt": EVERY, "train": ("max_length", "seed"), "eval": ("metrics",)},
}

# (stage, section) -> why the stage ignores (that part of) the section
WHY = {
    ("finetune", "prompt"): "trains the model rather than prompting it",
    ("finetune", "train"): "does not read it (a setting of stage sft's training loop)",
    ("sft", "prompt"): "trains the model rather than prompting it",
    ("sft", "eval"): "keeps no best checkpoint and never stops early (of eval: it reads metrics and every)",
    ("prompt", "method"): "trains nothing",
    ("prompt", "train"): "trains nothing (of train: it reads only max_length and seed)",
    ("prompt", "eval"): "trains nothing (of eval: it reads only metrics)",
}


def stage_problems(recipe) -> list[tuple[tuple, str]]:
    """Sections and keys the recipe sets that its stage ignores, as (key path, message) pairs."""
    stage, found = recipe.stage, []
    for section, reads in READS[stage].items():
        if reads == ():
            ignored = [(section,)] if written(recipe, section) else []
        elif reads is EVERY:
            ignored = []
        else:
            part = getattr(recipe, section)
            ignored = [
                (section, key) for key in type(part).model_fields if key not in reads and written(part, key)
            ]
        for loc in ignored:
            path = ".".join(loc)
            readers = "/".join(s for s in READS if s != stage and _reads(s, loc))
            instead = f" or use stage {readers}" if readers else ""
            found.append((loc, f"stage {stage} {WHY[stage, section]}: remove '{path}'{instead}"))
    return found


def written(model: BaseModel, key: str) -> bool:
    """The recipe sets `key` of `model` (it is in model_fields_set) to something other than its default."""
    if key not in model.model_fields_set:
        return False
    default = type(model).model_fields[key].get_default(call_default_factory=True)
    return _plain(getattr(model, key)) != _plain(default)


def _reads(stage: str, loc: tuple[str, ...]) -> bool:
    reads = READS[stage][loc[0]]
    return reads is EVERY or (len(loc) > 1 and loc[1] in reads)


def _plain(value):
    return value.model_dump() if isinstance(value, BaseModel) else value
