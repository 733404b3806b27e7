"""The recipe: one YAML file, validated strictly into typed sections.

`load_recipe(path, overrides)` is the only entry point commands use. Every problem in a recipe is reported at
once, each with its path, the bad value, the YAML line and (for unknown keys) the closest valid key.

The `Recipe` class itself is in recipe.py, loaded on first use: its `method:` and `task:` sections come from
lmadapt.methods and lmadapt.tasks (see recipe.py), which this package must not import to be imported.
"""

from __future__ import annotations

import contextlib
import difflib
import reprlib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import RecipeError
from .base import section_tag
from .text import read_utf8

if TYPE_CHECKING:
    from .recipe import Recipe

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


def __getattr__(name: str):
    """`lmadapt.config.Recipe`, loaded on first use (PEP 562; see recipe.py for why)."""
    if name == "Recipe":
        return _recipe_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _recipe_class() -> type[Recipe]:
    from .recipe import Recipe

    return Recipe


def apply_overrides(raw: dict, overrides: list[str] | None, source: str = "") -> dict:
    """Apply dotted `key.sub=value` overrides (values parsed as YAML) to a raw recipe dict.

    `source` (the recipe file) starts the messages of malformed overrides.
    """
    at = f"{source}: " if source else ""
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"{at}override {item!r}: expected dotted.key=value (e.g. train.lr=1e-4)")
        key, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if text else None
        except (yaml.YAMLError, RecursionError) as exc:
            raise RecipeError(
                f"{at}override {item!r}: the value is not valid YAML: {_yaml_problem(exc)}"
            ) from None
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


def _yaml_index(text: str) -> tuple[dict[tuple, int], list[tuple[int, str]]]:
    """Map each key path in a YAML document to its 1-based line; also list keys given twice in one mapping.

    YAML keeps the last of two equal keys without a word, so `lr:` written twice silently drops one value.
    """
    lines: dict[tuple, int] = {}
    twice: list[tuple[int, str]] = []  # (line, message)
    walked: set[int] = set()  # an alias points at a node walked already: once is enough (and stays linear)

    def walk(node, path):
        if id(node) in walked:
            return
        walked.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, value_node in node.value:
                key = _key(key_node)
                sub = (*path, key)
                line = key_node.start_mark.line + 1
                if key in seen:
                    where = ".".join(map(str, sub))
                    twice.append((line, f"key '{where}' is given twice (first on line {seen[key]})"))
                else:
                    seen[key] = line
                lines[sub] = line
                walk(value_node, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    with contextlib.suppress(yaml.YAMLError, RecursionError):  # safe_load reports those with their line
        walk(yaml.compose(text), ())
    return lines, twice


def _key(node) -> Any:
    """A mapping key as safe_load builds it (`1:` is the int 1, `lr:` the string 'lr')."""
    if not isinstance(node, yaml.ScalarNode):
        return str(node.value)
    if node.tag == "tag:yaml.org,2002:str":
        return node.value
    try:
        key = yaml.safe_load(node.value)
    except yaml.YAMLError:
        return node.value
    return key if isinstance(key, str | int | float | bool) or key is None else node.value


_REPR = reprlib.Repr()  # attributes, not keywords: Python 3.11
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 5, 5, 60, 60


def _short(value: Any, limit: int = 80) -> str:
    """A bounded repr: a YAML alias can make a value that is huge when spelled out, but small in memory."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _models_in(annotation) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation can hold (through Optional, unions, Annotated, lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _is_plain_union(annotation) -> bool:
    """A union of two or more non-None types without a discriminator: pydantic names its branch in the loc."""
    if typing.get_origin(annotation) is typing.Annotated:
        return False  # our discriminated unions (method, task) are Annotated; their tags are handled apart
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(members) >= 2


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[tuple, list[type[BaseModel]]]:
    """Follow a pydantic error location from the root model.

    Returns the location as the YAML spells it (discriminator tags such as 'lora' in method.lora.r dropped,
    and the branch names of a plain union such as 'int' in eval.every.int) and the models that can sit at
    its end.
    """
    shown: list = []
    candidates: list[type[BaseModel]] = [root]
    branch_next = False
    for part in loc:
        if branch_next and isinstance(part, str):
            branch_next = False
            continue
        branch_next = False
        if isinstance(part, str) and not any(part in m.model_fields for m in candidates):
            tagged = [m for m in candidates if section_tag(m) == part]
            if tagged:
                candidates = tagged
                continue
        shown.append(part)
        if isinstance(part, str):
            branch_next = any(
                _is_plain_union(m.model_fields[part].annotation) for m in candidates if part in m.model_fields
            )
            candidates = [
                sub
                for m in candidates
                if part in m.model_fields
                for sub in _models_in(m.model_fields[part].annotation)
            ]
    return tuple(shown), candidates


def _line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The YAML line of `loc`, else of its nearest parent that has one."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _where(source: str, lines: dict[tuple, int], loc: tuple, overridden, exact: bool = False) -> str:
    """`FILE:LINE` of a key path; `FILE (override a.b)` when a CLI override set it (or a section above it)."""
    for path in overridden:
        if loc[: len(path)] == path:
            return f"{source} (override {'.'.join(map(str, path))}=...)"
    line = lines.get(loc) if exact else _line_of(lines, loc)
    return f"{source}:{line}" if line else source


def _error_messages(
    exc: ValidationError, source: str, lines: dict[tuple, int], root: type[BaseModel], overridden=()
) -> list[str]:
    messages: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] in ("extra_forbidden", "invalid_key"):
            parent, candidates = _walk(loc[:-1], root)
            loc = (*parent, loc[-1])
        else:
            loc, candidates = _walk(loc, root)
        ctx = err.get("ctx") or {}
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # a bad or missing `type:`
            loc = (*loc, str(ctx.get("discriminator", "type")).strip("'"))
        path = ".".join(str(p) for p in loc) or "(top level)"
        where = _where(
            source, lines, loc, overridden, exact=err["type"] in ("extra_forbidden", "invalid_key")
        )
        chosen = str(err["loc"][-2]) if len(err["loc"]) > 1 else ""
        members = [m for m in candidates if _tag_of(m) == chosen]
        owners = [_tag_of(m) for m in candidates if str(loc[-1]) in m.model_fields] if members else []
        if err["type"] == "extra_forbidden" and owners:
            # a key of another `type:` of this section (e.g. after `backend.type=openai` on a local backend)
            valid = sorted(members[0].model_fields)
            messages.append(f"{where}: '{path}' is a setting of type {' / '.join(owners)}, not of type "
                            f"{chosen}: remove it (valid for {chosen}: {', '.join(valid)})")  # fmt: skip
        elif err["type"] == "extra_forbidden":
            valid = sorted({k for m in (members or candidates) for k in m.model_fields})
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{'.'.join(map(str, loc[:-1] + (close[0],)))}'?" if close else ""
            messages.append(f"{where}: unknown key '{path}'{hint} (valid here: {', '.join(valid)})")
        elif err["type"] == "invalid_key":
            parent = ".".join(map(str, loc[:-1])) or "(top level)"
            messages.append(f"{where}: key {_short(loc[-1])} under {parent}: keys must be names (strings)")
        elif err["type"] == "union_tag_invalid":
            tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
            close = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            messages.append(
                f"{where}: {path}: unknown type {ctx.get('tag')!r}{hint} (choose one of: {', '.join(tags)})"
            )
        elif err["type"] == "union_tag_not_found":
            messages.append(f"{where}: {path}: missing; this section needs a `type:`")
        else:
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {_short(value)})"
            message = err["msg"].removeprefix("Value error, ")  # our own validators' words, as written
            head = f"{where}: {path}: "
            earlier = next((i for i, m in enumerate(messages) if m.startswith(head)), None)
            if earlier is None:
                messages.append(f"{head}{message}{shown}")
            else:  # each branch of a union failed: one problem, said once
                messages[earlier] = messages[earlier].removesuffix(shown) + f"; or: {message}{shown}"
    return messages


def _tag_of(section: type[BaseModel]) -> str | None:
    from .base import section_tag

    return section_tag(section)


def _report(source: str, what: str, messages: list[str]) -> RecipeError:
    head = f"{source}: {len(messages)} problem(s) in the {what}:"
    return RecipeError("\n".join([head, *("  - " + m for m in messages)]))


def parse_config(
    raw: Any,
    root: type[M],
    source: str,
    text: str | None = None,
    what: str = "recipe",
    overrides: list[str] | None = None,
) -> M:
    """Validate a raw mapping into `root`, raising RecipeError that lists every problem with its YAML line
    (or the CLI override, among `overrides`, that set it).

    Beyond each field's own checks, a root may define `problems()`: checks across sections (a prompt
    template's placeholders against the task's fields), as `(key path, message)` pairs.
    """
    if not isinstance(raw, dict):
        shown = "nothing" if raw is None else type(raw).__name__
        raise RecipeError(f"{source}: a {what} must be a mapping of sections (key: value lines), got {shown}")
    lines, twice = _yaml_index(text or "")
    overridden = [tuple(item.partition("=")[0].strip().split(".")) for item in overrides or []]
    messages = [f"{source}:{line}: {message}" for line, message in twice]
    try:
        config = root.model_validate(raw)
    except ValidationError as exc:
        found = _error_messages(exc, source, lines, root, overridden)
        raise _report(source, what, messages + found) from None
    except RecursionError:
        raise RecipeError(f"{source}: the {what} is nested too deeply") from None
    for loc, message in getattr(config, "problems", list)():
        messages.append(f"{_where(source, lines, loc, overridden)}: {'.'.join(map(str, loc))}: {message}")
    if messages:
        raise _report(source, what, messages)
    return config


def load_config(
    path: str | Path, root: type[M], overrides: list[str] | None = None, what: str = "recipe"
) -> M:
    """Read a YAML file, apply dotted overrides and validate it into `root` (a recipe, a synth config...)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: {what} file not found")
    text = _read_text(path, what)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}{_yaml_line(exc, text)}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise RecipeError(f"{path}: not valid YAML: nested too deeply") from None
    if raw is None:
        example = ", e.g. model: and task:" if what == "recipe" else ""
        raise RecipeError(f"{path}: the {what} is empty (expected key: value lines{example})")
    raw = apply_overrides(raw, overrides, str(path)) if isinstance(raw, dict) else raw
    return parse_config(raw, root, str(path), text, what, overrides)


def _read_text(path: Path, what: str) -> str:
    return read_utf8(path, RecipeError, what)


def _yaml_line(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return f":{mark.line + 1}"
    position = getattr(exc, "position", None)  # a ReaderError (a control character) has only a position
    return f":{text.count(chr(10), 0, position) + 1}" if isinstance(position, int) else ""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"control character {exc.character!r} is not allowed"
    return str(getattr(exc, "problem", None) or exc)


def parse_recipe(raw: Any, source: str = "<recipe>", text: str | None = None) -> Recipe:
    """Validate a raw mapping into a Recipe, raising RecipeError that lists every problem."""
    return parse_config(raw, _recipe_class(), source, text)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    return load_config(path, _recipe_class(), overrides)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe, as written into the run folder."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
