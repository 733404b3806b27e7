"""`reward:` where a reward comes from (stages ppo and grpo, and `lmadapt rank`'s scorer).

    reward: {type: rm, run: runs/pubmed-mesh-rm}                       # a reward-model run (stage rm)
    reward: {type: metric, name: keyword_f1, gold: keywords}               # a task metric against a gold field
    reward: {type: metric, name: label_correct, gold: label, label_map: {Humans: "1", Animals: "0"}}
    reward: {type: python, function: mypkg.rewards:brevity}             # your own function (runs your code)

lmadapt.alignment.rewards builds the callable from this section (`build_reward`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from .base import Section
from .fields import Name, unique_labels

METRICS = ("label_correct", "keyword_f1", "rouge_l")
_FUNCTION = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


class RmReward(Section):
    """The score of a reward-model run (`stage: rm`), read at the last token of prompt + answer."""

    type: Literal["rm"] = "rm"
    run: str = Field(min_length=1, description="A complete run folder of stage rm.")
    batch_size: int = Field(8, ge=1, description="Prompt + answer pairs scored per forward pass.")
    max_length: int | None = Field(
        None,
        ge=8,
        description="Tokens kept per prompt + answer (the tail); default: the rm run's max_length.",
    )


class MetricReward(Section):
    """A task metric of each answer against the record's gold answer (0..1); `name` says which metric."""

    type: Literal["metric"] = "metric"
    name: Literal["label_correct", "keyword_f1", "rouge_l"] | None = Field(
        None,
        description="label_correct: 1 if the answer names the gold label, else 0; keyword_f1: keyword-set F1 "
        "of the comma-separated answer; rouge_l: ROUGE-L F1. Default: the generate task's own metric.",
    )
    gold: Name | None = Field(None, description="Record field with the gold answer; default: task.target.")
    labels: list[str] | None = Field(
        None, description="label_correct: the valid answers; default: task.labels or the label_map values."
    )
    label_map: dict[str, str] | None = Field(
        None, description="label_correct: gold value -> expected answer; default: task.label_map."
    )

    _distinct = field_validator("labels")(unique_labels)


class PythonReward(Section):
    """Your own function `module:function`, imported and called in this process: it runs your code."""

    type: Literal["python"] = "python"
    function: str = Field(
        description="`package.module:function`, called as function(prompts=, completions=, records=) and "
        "returning one number per completion. Imported only because the recipe names it."
    )

    @field_validator("function")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not _FUNCTION.match(value):
            raise ValueError(f"expected 'package.module:function', got {value!r}")
        return value


RewardConfig = Annotated[RmReward | MetricReward | PythonReward, Field(discriminator="type")]


class RankConfig(Section):
    """`rank:` (`lmadapt rank RECIPE`): sample K answers per prompt from a policy and order them best first.

    The prompts are the records of `split` (of the recipe's `data:`), asked as the recipe's task asks them;
    the output JSONL is what `stage: rm` reads with `task: {type: preference, responses: responses, scores:
    scores}`. Appended prompt by prompt: a rerun skips prompts already ranked."""

    policy: str | None = Field(
        None, description="An sft run folder, a model folder or a catalog model; default: `model:`."
    )
    k: int = Field(4, ge=2, le=16, description="Answers sampled per prompt.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(
        1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest token set this likely."
    )
    top_k: int = Field(0, ge=0, description="Keep only the k likeliest tokens (0: off).")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Answer length limit; default: the generate task's max_new_tokens (else 128)."
    )
    batch_size: int = Field(8, ge=1, description="Prompts sampled together (each K times).")
    scorer: RewardConfig | Literal["human"] = Field(
        description="Who orders the answers: `human` (an interactive terminal prompt), or a reward section: "
        "{type: metric} (the task metric against the gold answer), {type: rm, run: RUN}, {type: python, ...}."
    )
    split: Literal["train", "eval", "test"] = Field(
        "train", description="Which of data.train/eval/test to rank."
    )
    max_prompts: int | None = Field(
        None, ge=1, description="Rank at most this many prompts (a seeded subset)."
    )
    output: str = Field(min_length=1, description="The JSONL file of rankings (appended to; resumable).")
    seed: int = Field(0, description="Sampling seed; each batch of prompts gets seed + its batch number.")

    @field_validator("output")
    @classmethod
    def _jsonl(cls, value: str) -> str:
        if not value.endswith(".jsonl"):
            raise ValueError(f"expected a .jsonl file, got {value!r}")
        return value
