"""`pair`: two texts -> one label (paraphrase, entailment, title/abstract match...).

The texts are encoded as one sequence pair ([CLS] a [SEP] b [SEP] for BERT); only the longer one is cut.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..config.base import Section
from ..config.fields import unique_labels
from .base import Task
from .classify import ClassifyTask


class PairConfig(Section):
    type: Literal["pair"] = "pair"
    text_a: str = Field("text_a")
    text_b: str = Field("text_b")
    label: str = Field("label")
    labels: list[str] | None = None
    id: str | None = None

    _distinct = field_validator("labels")(unique_labels)


class PairTask(ClassifyTask):
    default_metrics = ("accuracy", "f1_macro")
    multi_label = False  # type: ignore[assignment]

    def fields(self, with_gold: bool = True) -> dict[str, str]:
        fields = {self.cfg.text_a: "str", self.cfg.text_b: "str"} | self.id_fields()
        if with_gold:
            fields[self.cfg.label] = "label"
        return self.gold_fields(fields, self.cfg.label if with_gold else None)

    def texts(self, record: dict) -> tuple[str, str]:
        return record[self.cfg.text_a], record[self.cfg.text_b]

    def text(self, record: dict) -> str:
        return "\n".join(self.texts(record))

    def tokenize(self, tokenizer, record: dict, max_length: int) -> dict:
        a, b = self.texts(record)
        return tokenizer(a, b, truncation="longest_first", max_length=max_length)

    model_kwargs = Task.model_kwargs


CONFIG, TASK = PairConfig, PairTask
