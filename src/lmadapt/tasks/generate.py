"""`generate`: a task answered by generating text, scored by `metric` (label_f1, keyword_f1, rouge_l).

Only its recipe section lives here; stage sft trains it and lmadapt/generative.py builds its prompts and
scores its outputs, so there is no encoder `TASK`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config.base import Section
from ..config.fields import FieldNames, as_list, unique_labels


class GenerateConfig(Section):
    """A task answered by generating text: instruction + fields in, text out, scored by `metric`."""

    type: Literal["generate"] = "generate"
    instruction: str = Field(description="Instruction put before the input fields.")
    text: FieldNames = Field(["text"], description="Input field(s).")
    target: str = Field("label", description="Field with the expected output.")
    metric: Literal["label_f1", "keyword_f1", "rouge_l"] = Field("rouge_l")
    labels: list[str] | None = Field(
        None, description="For label_f1: the valid outputs; the first is the positive class of `f1`."
    )
    label_map: dict[str, str] | None = Field(
        None, description="For label_f1: gold value -> output text, e.g. {Humans: '1', Animals: '0'}."
    )
    template: Literal["auto", "model", "alpaca", "plain"] = "auto"
    system: str | None = Field(None, description="System prompt added to every example.")
    max_new_tokens: int = Field(64, ge=1, description="Generation length when evaluating.")
    id: str | None = None

    _list = field_validator("text", mode="before")(as_list)
    _distinct = field_validator("labels")(unique_labels)

    @model_validator(mode="after")
    def _outputs_are_labels(self):
        if self.label_map and self.labels:
            stray = [v for v in dict.fromkeys(self.label_map.values()) if v not in self.labels]
            if stray:
                raise ValueError(
                    f"label_map maps to {', '.join(map(repr, stray))}, which task.labels does not list "
                    f"({', '.join(self.labels)})"
                )
        return self


CONFIG = GenerateConfig
