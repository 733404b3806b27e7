"""The recipe: one YAML file, validated strictly into typed sections.

`load_recipe(path, overrides)` is the only entry point commands use. Every problem in a recipe is reported at
once, each with its path, the bad value, the YAML line and (for unknown keys) the closest valid key.
"""

from __future__ import annotations

import contextlib
import difflib
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError

from ..errors import RecipeError
from .base import Section
from .data import DataConfig
from .method import MethodConfig
from .model import ModelConfig
from .prompt import PromptConfig
from .task import TaskConfig
from .train import EvalConfig, TrainConfig

__all__ = [
    "Recipe",
    "load_recipe",
    "parse_recipe",
    "load_config",
    "parse_config",
    "recipe_to_yaml",
    "apply_overrides",
]

M = TypeVar("M", bound=BaseModel)
Stage = Literal["finetune", "sft", "prompt"]


class Recipe(Section):
    """A whole run: model, task, data, method, stage, training, evaluation, output folder."""

    model: ModelConfig
    task: TaskConfig
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig = Field(default_factory=lambda: {"type": "full"}, validate_default=True)
    stage: Stage = "finetune"
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: str = Field("runs/run", description="Run folder written by this recipe.")
    prompt: PromptConfig | None = Field(
        None, description="stage: prompt: how to ask the model (no training)."
    )


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Apply dotted `key.sub=value` overrides (values parsed as YAML) to a raw recipe dict."""
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"override {item!r}: expected dotted.key=value (e.g. train.lr=1e-4)")
        key, _, text = item.partition("=")
        value = yaml.safe_load(text) if text else None
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part == "model":  # expand the `model: name` shorthand
                child = {"name": child}
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return raw


def _yaml_lines(text: str) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                sub = (*path, key_node.value)
                lines[sub] = key_node.start_mark.line + 1
                walk(value_node, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    with contextlib.suppress(yaml.YAMLError):  # a YAML error is reported by safe_load with its own line
        walk(yaml.compose(text), ())
    return lines


def _models_in(annotation) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation can hold (through Optional, unions, Annotated, lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    args = typing.get_args(field.annotation) if field else ()
    return args[0] if len(args) == 1 else None


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[tuple, list[type[BaseModel]]]:
    """Follow a pydantic error location from the root model.

    Returns the location as the YAML spells it (discriminator tags such as 'lora' in method.lora.r dropped)
    and the models that can sit at its end.
    """
    shown: list = []
    candidates: list[type[BaseModel]] = [root]
    for part in loc:
        if isinstance(part, str) and not any(part in m.model_fields for m in candidates):
            tagged = [m for m in candidates if _tag(m) == part]
            if tagged:
                candidates = tagged
                continue
        shown.append(part)
        if isinstance(part, str):
            candidates = [
                sub
                for m in candidates
                if part in m.model_fields
                for sub in _models_in(m.model_fields[part].annotation)
            ]
    return tuple(shown), candidates


def _format_errors(
    exc: ValidationError, source: str, lines: dict[tuple, int], root: type[BaseModel], what: str
) -> str:
    messages = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            parent, candidates = _walk(loc[:-1], root)
            loc = (*parent, loc[-1])
        else:
            loc, candidates = _walk(loc, root)
        path = ".".join(str(p) for p in loc) or "(top level)"
        where = f"{source}:{lines[loc]}" if loc in lines else source
        if err["type"] == "extra_forbidden":
            valid = sorted({k for m in candidates for k in m.model_fields})
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{'.'.join(map(str, loc[:-1] + (close[0],)))}'?" if close else ""
            messages.append(f"{where}: unknown key '{path}'{hint} (valid here: {', '.join(valid)})")
        else:
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            messages.append(f"{where}: {path}: {err['msg']}{shown}")
    head = f"{source}: {len(messages)} problem(s) in the {what}:"
    return "\n".join([head, *("  - " + m for m in messages)])


def parse_config(raw: Any, root: type[M], source: str, text: str | None = None, what: str = "recipe") -> M:
    """Validate a raw mapping into `root`, raising RecipeError that lists every problem with its YAML line."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a {what} must be a mapping of sections, got {type(raw).__name__}")
    try:
        return root.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(_format_errors(exc, source, _yaml_lines(text or ""), root, what)) from None


def load_config(
    path: str | Path, root: type[M], overrides: list[str] | None = None, what: str = "recipe"
) -> M:
    """Read a YAML file, apply dotted overrides and validate it into `root` (a recipe, a synth config...)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: {what} file not found")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    raw = apply_overrides(raw, overrides) if isinstance(raw, dict) else raw
    return parse_config(raw, root, str(path), text, what)


def parse_recipe(raw: Any, source: str = "<recipe>", text: str | None = None) -> Recipe:
    """Validate a raw mapping into a Recipe, raising RecipeError that lists every problem."""
    return parse_config(raw, Recipe, source, text)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    return load_config(path, Recipe, overrides)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe, as written into the run folder."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
