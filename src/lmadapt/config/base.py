"""Shared base for every recipe section: strict (unknown keys are errors) and documented; and the tagged
unions (`method:`, `task:`) built from the sections a package registers."""

from __future__ import annotations

import functools
import operator
import typing
from collections.abc import Sequence
from types import ModuleType
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A recipe section. Unknown keys are rejected; values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def section_tag(section: type[BaseModel]) -> str | None:
    """The `type:` value that selects `section` in a tagged union (its `type: Literal['x']` field), if any."""
    field = section.model_fields.get("type")
    args = typing.get_args(field.annotation) if field else ()
    return args[0] if len(args) == 1 else None


def registered_section(module: ModuleType) -> type[Section]:
    """The recipe section a registered module defines: `CONFIG`, selected by `type: <the module's name>`.

    A module that lacks it is named in the error, with the file to edit.
    """
    name = module.__name__.rpartition(".")[2]
    config = getattr(module, "CONFIG", None)
    if not (isinstance(config, type) and issubclass(config, Section)):
        raise TypeError(
            f"{module.__file__}: set CONFIG to this module's recipe section (a config.base.Section)"
        )
    field = config.model_fields.get("type")
    if section_tag(config) != name or field is None or field.default != name:
        raise TypeError(
            f"{module.__file__}: {config.__name__} needs the field `type: Literal[{name!r}] = {name!r}` "
            "(a recipe selects the section by the module's name)"
        )
    return config


def tagged_union(modules: Sequence[ModuleType]):
    """`Annotated[A | B | ..., discriminator 'type']` over the `CONFIG` sections of `modules`, in order."""
    sections = [registered_section(module) for module in modules]
    return Annotated[functools.reduce(operator.or_, sections), Field(discriminator="type")]
