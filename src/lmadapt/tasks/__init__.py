"""Encoder tasks: one module per task type, each a `Task` (fields, features, head, decoding, metrics).

task = get_task(recipe.task)
labels = task.fit_labels(train_records)
encoded = task.encode(records, tokenizer, max_length)
preds = task.decode(run_inference(model, encoded.features, task.collator(tokenizer)), encoded, len(records))
metrics = task.score([task.gold(r) for r in records], preds)
"""

from __future__ import annotations

from ..errors import RecipeError
from .base import Encoded, Task, build_model, run_inference, split_trainer_outputs
from .classify import ClassifyTask
from .keywords import KeywordsTask
from .pair import PairTask
from .span import SpanTask
from .tag import TagTask

TASKS: dict[str, type[Task]] = {
    "classify": ClassifyTask,
    "pair": PairTask,
    "tag": TagTask,
    "keywords": KeywordsTask,
    "span": SpanTask,
}

__all__ = ["TASKS", "Encoded", "Task", "build_model", "get_task", "run_inference", "split_trainer_outputs"]


def get_task(task_cfg) -> Task:
    """The task object for a recipe's `task:` section (a RecipeError for non-encoder task types)."""
    cls = TASKS.get(task_cfg.type)
    if cls is None:
        raise RecipeError(
            f"task type '{task_cfg.type}' is not an encoder task for stage finetune "
            f"(available: {', '.join(TASKS)})"
        )
    return cls(task_cfg)
