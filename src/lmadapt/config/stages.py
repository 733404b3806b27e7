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
# stages/rm.py: no packing, no chunked LM loss, no frozen-bf16 stash, no compile, no length grouping
RM_TRAIN = tuple(k for k in TrainConfig.model_fields if k not in (*SFT_TRAIN, "compile", "group_by_length"))

# stages/pretrain.py: the shared TrainingArguments (no sft packing / chunked loss / bf16 stash, no compile)
PRETRAIN_TRAIN = tuple(k for k in TrainConfig.model_fields if k not in (*SFT_TRAIN, "compile"))

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
    "rm": {"method": EVERY, "prompt": (), "train": RM_TRAIN, "eval": ("every",), "reward": ()},
    "pretrain": {"method": EVERY, "prompt": (), "train": PRETRAIN_TRAIN, "eval": ("every",), "reward": ()},
}
for _stage in ("finetune", "sft", "prompt"):
    READS[_stage]["reward"] = ()
# stages/ppo.py: its own loop; of train: the optimizer, prompt length, seed, checkpoints, threads, eval batch
PPO_TRAIN = ("lr", "weight_decay", "max_grad_norm", "max_length", "seed", "save_every", "keep_checkpoints",
             "num_threads", "batch_size", "eval_batch_size")  # fmt: skip
# stages/dpo.py, grpo.py: TRL trainers on the shared TrainingArguments (no packing, chunked loss, compile)
TRL_TRAIN = RM_TRAIN
SFT_ONLY = (
    "does not read it (of train: packing, chunked_loss, loss_chunk, bf16_frozen, compile and group_by_length "
    "are settings of stage sft)"
)
READS["ppo"] = {"method": EVERY, "prompt": (), "train": PPO_TRAIN, "eval": (), "reward": EVERY}
READS["dpo"] = {"method": EVERY, "prompt": (), "train": TRL_TRAIN, "eval": (), "reward": ()}
READS["grpo"] = {"method": EVERY, "prompt": (), "train": TRL_TRAIN, "eval": (), "reward": EVERY}
for _stage in READS:  # each alignment section belongs to its own stage only
    for _section in ("ppo", "dpo", "grpo"):
        READS[_stage][_section] = EVERY if _section == _stage else ()

# (stage, section) -> why the stage ignores (that part of) the section
WHY = {
    ("finetune", "prompt"): "trains the model rather than prompting it",
    ("finetune", "train"): "does not read it (a setting of stage sft's training loop)",
    ("sft", "prompt"): "trains the model rather than prompting it",
    ("sft", "eval"): "keeps no best checkpoint and never stops early (of eval: it reads metrics and every)",
    ("prompt", "method"): "trains nothing",
    ("prompt", "train"): "trains nothing (of train: it reads only max_length and seed)",
    ("prompt", "eval"): "trains nothing (of eval: it reads only metrics)",
    ("finetune", "reward"): "has no reward to maximise",
    ("pretrain", "prompt"): "trains the model rather than prompting it",
    ("pretrain", "train"): "does not read it (of train: packing, chunked_loss, loss_chunk, bf16_frozen and "
    "compile are settings of stage sft)",
    (
        "pretrain",
        "eval",
    ): "always reports the objective's held-out metrics before and after (of eval: it reads only every)",
    ("pretrain", "reward"): "has no reward to maximise",
    ("sft", "reward"): "has no reward to maximise",
    ("prompt", "reward"): "has no reward to maximise",
    ("rm", "prompt"): "trains a reward model rather than prompting one",
    ("rm", "train"): "does not read it (packing, chunked_loss, loss_chunk, bf16_frozen, compile and "
    "group_by_length are settings of stage sft)",
    ("rm", "eval"): "always reports pairwise accuracy and margin (of eval: it reads only every)",
    ("rm", "reward"): "learns a reward rather than maximising one",
    ("ppo", "prompt"): "trains the policy rather than prompting it",
    ("ppo", "train"): (
        "does not read it (of train: lr, weight_decay, max_grad_norm, max_length, seed, save_every, "
        "keep_checkpoints, num_threads, batch_size, eval_batch_size; steps and batches are set in ppo:)"
    ),
    ("ppo", "eval"): (
        "evaluates on data.test before and after (ppo.eval_every, ppo.eval_prompts say how often and on "
        "how many)"
    ),
    ("dpo", "prompt"): "trains the policy rather than prompting it",
    ("dpo", "train"): SFT_ONLY,
    ("dpo", "eval"): "reports held-out reward accuracy and margin before and after training",
    ("dpo", "reward"): "learns from preference pairs, not from a reward",
    ("grpo", "prompt"): "trains the policy rather than prompting it",
    ("grpo", "train"): SFT_ONLY,
    ("grpo", "eval"): "evaluates on data.test before and after (grpo.eval_prompts says on how many)",
}
for _stage in READS:
    for _section in ("ppo", "dpo", "grpo"):
        if _section != _stage:
            WHY[_stage, _section] = f"does not read it (the {_section}: section belongs to stage {_section})"


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
    return found + baseline_problems(recipe)


# baseline method -> the task types it serves (lmadapt/baselines/<method>.py; it stands in for finetune)
BASELINE_TASKS = {"tfidf": ("classify", "pair", "tag", "span"), "keyphrase": ("keywords",)}


def baseline_problems(recipe) -> list[tuple[tuple, str]]:
    """A baseline method under another stage than finetune, or for a task type it does not serve."""
    method, task = recipe.method.type, recipe.task.type
    if method not in BASELINE_TASKS:
        return []
    if recipe.stage != "finetune":
        why = f"method {method} is a baseline that runs as stage finetune, not {recipe.stage}"
        return [(("stage",), why)]
    if task not in BASELINE_TASKS[method]:
        *others, last = BASELINE_TASKS[method]
        serves = f"{', '.join(others)} and {last}" if others else last
        return [(("method", "type"), f"method {method} serves {serves} tasks, not task type '{task}'")]
    return []


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
