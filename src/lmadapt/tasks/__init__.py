"""Tasks: one module per task type, registered once, in `MODULES`.

Each module defines its recipe section (`CONFIG`, a Section selected by `type: <module name>`) and, for an
encoder task, `TASK`: the `Task` (fields, features, head, decoding, metrics) that stages finetune and prompt
use. sft and generate have no TASK: stage sft serves them (with lmadapt.generative). The recipe's `task:`
union (`TaskConfig`) and the runtime lookup (`TASKS`) are both built from `MODULES`.

task = get_task(recipe.task)
labels = task.fit_labels(train_records)
encoded = task.encode(records, tokenizer, max_length)
preds = task.decode(run_inference(model, encoded.features, task.collator(tokenizer)), encoded, len(records))
metrics = task.score([task.gold(r) for r in records], preds)
"""

from __future__ import annotations

from ..config.base import registered_section, section_tag, tagged_union
from ..errors import RecipeError
from . import classify, generate, keywords, lm, pair, preference, sft, span, tag
from .base import Encoded, Task, build_model, run_inference, split_trainer_outputs

# The one registration of each task type (the order is the order `type:` choices are listed in errors).
MODULES = (classify, pair, tag, keywords, span, sft, generate, preference, lm)

TaskConfig = tagged_union(MODULES)  # the recipe's `task:` section (lmadapt.config.recipe)


def _registered_tasks(modules) -> dict[str, type[Task]]:
    """`type:` -> Task subclass for every module that defines `TASK`."""
    found = {}
    for module in modules:
        task = getattr(module, "TASK", None)
        if task is None:
            continue
        if not (isinstance(task, type) and issubclass(task, Task)):
            raise TypeError(f"{module.__file__}: TASK must be a subclass of lmadapt.tasks.base.Task")
        found[section_tag(registered_section(module))] = task
    return found


TASKS: dict[str, type[Task]] = _registered_tasks(MODULES)

__all__ = [
    "MODULES",
    "TASKS",
    "Encoded",
    "Task",
    "TaskConfig",
    "build_model",
    "get_task",
    "run_inference",
    "split_trainer_outputs",
]


def get_task(task_cfg) -> Task:
    """The task object for a recipe's `task:` section (a RecipeError for non-encoder task types)."""
    cls = TASKS.get(task_cfg.type)
    if cls is None:
        raise RecipeError(
            f"task type '{task_cfg.type}' is not an encoder task for stage finetune "
            f"(available: {', '.join(TASKS)})"
        )
    return cls(task_cfg)
