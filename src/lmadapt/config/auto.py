"""`stage: auto`: `lmadapt auto` written as a recipe, for the YAML-first user (`lmadapt train auto.yaml`).

    stage: auto
    data: {train: data/train.csv, test: data/test.csv}      # files; eval is carved from train when absent
    task: {text: [title, abstract], label: label}            # optional: auto reads them from the data
    auto: {budget: 20m, metric: f1_macro}
    output: runs/auto

Every key is the same as an `lmadapt auto` option; nothing else of a training recipe (model, method, train)
belongs here: auto chooses those, and writes the winning training recipe to OUTPUT/winner.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import Field, field_validator

from ..errors import RecipeError
from .base import Section

Metric = Literal["f1_macro", "accuracy", "f1_micro"]
METRICS = get_args(Metric)


def parse_budget(text: str) -> float:
    """'20m', '90s', '1h30m', '45' (seconds) -> seconds."""
    parts = re.fullmatch(
        r"\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s?)?\s*", text
    )
    if not text.strip() or parts is None or not any(parts.groups()):
        raise RecipeError(f"--budget {text!r}: expected a duration such as 20m, 90s or 1h30m")
    h, m, s = (float(g or 0) for g in parts.groups())
    seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise RecipeError(f"--budget {text!r}: must be more than 0 seconds")
    return seconds


class AutoData(Section):
    train: str = Field(description="Training records: a .jsonl .json .csv .tsv or .parquet file.")
    eval: str | None = Field(None, description="Evaluation records (default: a stratified 20% of train).")
    test: str | None = Field(None, description="Test records, scored once, for the winner only.")


class AutoTask(Section):
    type: Literal["classify", "pair"] | None = Field(None, description="Default: read from the data.")
    text: list[str] | None = Field(None, description="Text field(s) (default: read from the data).")
    label: str | None = Field(None, description="Label field (default: read from the data).")

    @field_validator("text", mode="before")
    @classmethod
    def _one_text(cls, value):
        return [value] if isinstance(value, str) else value


class AutoSection(Section):
    budget: str = Field(description="Wall-clock budget for everything: 20m, 90s, 1h30m.")
    metric: Metric = Field("f1_macro", description="Eval metric ranked by.")
    models: list[str] = Field(default_factory=list, description="Also try these models (names or folders).")
    trials: int | None = Field(None, ge=1, description="Stop once the study holds this many trials.")
    heartbeat: int = Field(10, ge=1, description="Seconds between a worker's heartbeats.")
    seed: int = 0
    refit: bool = Field(
        True, description="Train the winner again on train + eval before test (when time allows)."
    )

    storage: str | None = Field(
        None,
        description="Optuna database URL shared by workers on several machines (default OUTPUT/study.db).",
    )

    @field_validator("budget", mode="before")
    @classmethod
    def _duration(cls, value):
        value = str(value)
        try:
            parse_budget(value)
        except RecipeError as exc:
            raise ValueError(str(exc).removeprefix("--budget ")) from None
        return value


class AutoRecipe(Section):
    """A `stage: auto` recipe: data files, optional task fields, the search's budget, the output folder."""

    stage: Literal["auto"]
    data: AutoData
    task: AutoTask = Field(default_factory=AutoTask)
    auto: AutoSection
    output: str = Field("runs/auto", min_length=1, description="Study, trials, leaderboard, winner.")


def recipe_stage(path: str | Path) -> str | None:
    """The `stage:` a recipe file names, read before the recipe is validated (None when it names none, or
    the file cannot be read as a mapping: the full validation then says what is wrong)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return None
    return raw.get("stage") if isinstance(raw, dict) and isinstance(raw.get("stage"), str) else None
