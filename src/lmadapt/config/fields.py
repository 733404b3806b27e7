"""Field types the task sections share (lmadapt/tasks/<type>.py): record field names and label lists."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

Name = Annotated[str, StringConstraints(min_length=1)]  # a record field name
FieldNames = Annotated[list[Name], Field(min_length=1)]


def as_list(value):
    """`text: title` is shorthand for `text: [title]` (use with field_validator(..., mode="before"))."""
    return [value] if isinstance(value, str) else value


def unique_labels(labels):
    """A label list must not name a label twice (use with field_validator)."""
    if labels is not None:
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"labels must be distinct; given more than once: {', '.join(twice)}")
    return labels
