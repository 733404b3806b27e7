"""Reward sources: one callable per recipe `reward:` section (lmadapt/config/reward.py), shared by stages ppo and
grpo and by `lmadapt rank`'s scorer.

The interface every source has::

    reward = build_reward(recipe.reward, task=recipe.task)
    scores = reward(prompts, completions, records)      # -> list[float], one per completion

- `prompts[i]`: the prompt completion i answers, a string (the user's turn) or a list of {role, content}
  messages (what `prompt_messages` of lmadapt.generative or of lmadapt.tasks.preference gives);
- `completions[i]`: the generated answer text (without the prompt);
- `records[i]`: the data record the prompt came from (holds the gold answer for metric rewards).
Several completions of one prompt simply repeat its prompt and record.

Sources:
- `{type: rm, run: RUN}`: a stage-rm run folder; its scalar head's score of prompt + answer, read at the last
  real token, rendered with the rm run's own template (so it scores what it was trained on).
- `{type: metric, name: label_correct | keyword_f1 | rouge_l, gold: FIELD}`: the task metric of each
  answer against `record[gold]`; with a generate task, metric, gold, labels and label_map default to the
  task's (its metric label_f1 -> label_correct: 1.0 when the answer names the expected label, else 0.0).
- `{type: python, function: package.module:function}`: **imports and runs your code** in this process; it
  is called as `function(prompts=..., completions=..., records=...)` and must return one finite number per
  completion. Only a recipe that names it imports it.
`reward.name` says what it is (for logs and provenance).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence

from ..errors import LmadaptError, RecipeError
from ..generative import parse_keywords, parse_label
from ..metrics import keyword_set_f1, rouge_l

__all__ = ["Reward", "build_reward", "metric_scores"]


class Reward:
    """A reward source: `reward(prompts, completions, records) -> list[float]`, with a `name`."""

    def __init__(self, name: str, score: Callable[[list, list[str], list[dict]], list[float]]):
        self.name = name
        self._score = score

    def __call__(self, prompts: Sequence, completions: Sequence[str], records: Sequence[dict]) -> list[float]:
        if not len(prompts) == len(completions) == len(records):
            raise ValueError(
                f"reward {self.name}: {len(prompts)} prompts, {len(completions)} completions, "
                f"{len(records)} records (one each per completion)"
            )
        if not completions:
            return []
        scores = self._score(list(prompts), list(completions), list(records))
        return _checked(scores, len(completions), self.name)

    def __repr__(self) -> str:
        return f"Reward({self.name})"


def build_reward(cfg, task=None, trust_remote_code: bool = False) -> Reward:
    """The reward source a `reward:` section describes; `task` fills a metric reward's defaults."""
    if cfg.type == "rm":
        return rm_reward(cfg.run, cfg.batch_size, cfg.max_length, trust_remote_code)
    if cfg.type == "metric":
        return metric_reward(cfg, task)
    if cfg.type == "python":
        return python_reward(cfg.function)
    raise RecipeError(f"reward type {cfg.type!r}: expected rm, metric or python")


# --- a reward-model run ---------------------------------------------------------------------------------
def rm_reward(run: str, batch_size: int = 8, max_length: int | None = None, trust_remote_code: bool = False):
    from ..training.reward_model import load_reward_run, score_texts

    model, tokenizer, recipe = load_reward_run(run, trust_remote_code)
    template, length = recipe.task.template, max_length or recipe.train.max_length

    def score(prompts, completions, records):
        return score_texts(model, tokenizer, prompts, completions, template, length, batch_size)

    reward = Reward(f"rm:{run}", score)
    reward.model = model  # stage ppo may move it to its device
    return reward


# --- a task metric against the gold answer ---------------------------------------------------------------
_FROM_TASK_METRIC = {"label_f1": "label_correct", "keyword_f1": "keyword_f1", "rouge_l": "rouge_l"}


def metric_reward(cfg, task=None) -> Reward:
    """A metric reward; what the section leaves out comes from a generate task (metric, target, labels)."""
    generate = task if getattr(task, "type", None) == "generate" else None
    metric = cfg.name or (generate and _FROM_TASK_METRIC[generate.metric])
    gold = cfg.gold or (generate and generate.target)
    if not metric or not gold:
        missing = " and ".join(k for k, v in (("name", metric), ("gold", gold)) if not v)
        raise RecipeError(f"reward: set {missing} (only a generate task supplies defaults)")
    label_map = cfg.label_map if cfg.label_map is not None else (generate and generate.label_map)
    labels = (
        cfg.labels
        or (generate and generate.labels)
        or (list(dict.fromkeys(label_map.values())) if label_map else None)
    )
    if metric == "label_correct" and not labels:
        raise RecipeError("reward: metric label_correct needs labels (or a label_map) to parse answers into")

    def score(prompts, completions, records):
        golds = [_gold(r, gold) for r in records]
        return metric_scores(metric, completions, golds, labels, label_map or None)

    return Reward(f"metric:{metric}:{gold}", score)


def metric_scores(metric: str, completions: Sequence[str], golds: Sequence, labels=None, label_map=None):
    """Per-answer scores in [0, 1]: label_correct (1/0), keyword_f1 (keyword-set F1), rouge_l (ROUGE-L F1)."""
    if metric == "label_correct":
        expected = [label_map.get(str(g), str(g)) if label_map else str(g) for g in golds]
        return [float(parse_label(c, labels) == e) for c, e in zip(completions, expected, strict=True)]
    if metric == "keyword_f1":
        return [
            keyword_set_f1(g if isinstance(g, list) else parse_keywords(str(g)), parse_keywords(c))[2]
            for c, g in zip(completions, golds, strict=True)
        ]
    if metric == "rouge_l":
        return [
            rouge_l(", ".join(g) if isinstance(g, list) else str(g), c)
            for c, g in zip(completions, golds, strict=True)
        ]
    raise RecipeError(f"reward metric {metric!r}: expected label_correct, keyword_f1 or rouge_l")


def _gold(record: dict, field: str):
    if field not in record or record[field] in (None, ""):
        where = getattr(record, "where", "") or "a record"
        raise LmadaptError(f"{where}: field {field!r} (reward.gold): missing; the metric reward needs it")
    return record[field]


# --- the user's own function -------------------------------------------------------------------------------
def python_reward(function: str) -> Reward:
    """Import `module:function` (this runs the module's code) and wrap it as a Reward."""
    module_name, _, attr = function.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while it loads
        raise RecipeError(f"reward.function {function!r}: cannot import {module_name}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RecipeError(f"reward.function {function!r}: {module_name} has no function {attr!r}")

    def score(prompts, completions, records):
        return fn(prompts=prompts, completions=completions, records=records)

    return Reward(f"python:{function}", score)


def _checked(scores, n: int, name: str) -> list[float]:
    try:
        out = [float(s) for s in scores]
    except (TypeError, ValueError) as exc:
        raise LmadaptError(f"reward {name}: expected a list of numbers, got {type(scores).__name__}") from exc
    if len(out) != n:
        raise LmadaptError(f"reward {name}: returned {len(out)} scores for {n} completions")
    bad = next((s for s in out if not math.isfinite(s)), None)
    if bad is not None:
        raise LmadaptError(f"reward {name}: returned a non-finite score ({bad})")
    return out
