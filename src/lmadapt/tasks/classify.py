"""`classify`: one text (or several fields joined) -> one label, or a set of labels when multi_label.

Single-label uses cross-entropy and predicts the argmax; multi-label uses BCE
(`problem_type="multi_label_classification"`) and predicts every label whose sigmoid is above 0.5.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from ..config.base import Section
from ..config.fields import FieldNames, as_list, unique_labels
from ..metrics import classification_metrics, confusion, multilabel_metrics, per_class_report
from .base import Encoded, Task, label_error


class ClassifyConfig(Section):
    type: Literal["classify"] = "classify"
    text: FieldNames = Field(["text"], description="Field(s) joined into the input text.")
    label: str = Field("label", description="Field holding the label (a list of labels when multi_label).")
    labels: list[str] | None = Field(None, description="Label set in order; default: sorted labels of train.")
    multi_label: bool = Field(False, description="Each example may carry several labels.")
    id: str | None = Field(None, description="Field copied into predictions (e.g. for a submission CSV).")
    separator: str = Field("\n", description="Joins several text fields.")

    _list = field_validator("text", mode="before")(as_list)
    _distinct = field_validator("labels")(unique_labels)


class ClassifyTask(Task):
    task_type = "seq_cls"
    head = "AutoModelForSequenceClassification"
    default_metrics = ("accuracy", "f1_macro", "f1_micro")
    best_metric = "f1_macro"

    @property
    def multi_label(self) -> bool:
        return bool(getattr(self.cfg, "multi_label", False))

    def fields(self, with_gold: bool = True) -> dict[str, str]:
        first, *rest = self.cfg.text
        fields = {first: "str"} | {name: "str?" for name in rest} | self.id_fields()
        if with_gold:
            fields[self.cfg.label] = "labels" if self.multi_label else "label"
        return self.gold_fields(fields, self.cfg.label if with_gold else None)

    def text(self, record: dict) -> str:
        return self.cfg.separator.join(record.get(name) or "" for name in self.cfg.text)

    def gold(self, record: dict):
        value = record[self.cfg.label]
        return sorted(map(str, value)) if self.multi_label else str(value)

    def fit_labels(self, train: list[dict]) -> list[str]:
        if not self.labels:
            seen = set()
            for record in train:
                gold = self.gold(record)
                seen.update(gold if self.multi_label else [gold])
            self.labels = sorted(seen)
        return self.labels

    def model_kwargs(self) -> dict:
        kwargs = super().model_kwargs()
        if self.multi_label:
            kwargs["problem_type"] = "multi_label_classification"
        return kwargs

    def target(self, record: dict):
        index = {label: i for i, label in enumerate(self.labels)}
        gold = self.gold(record)
        for value in gold if self.multi_label else [gold]:
            if value not in index:
                raise label_error(f"{self.cfg.label}", value, self.labels)
        if self.multi_label:
            vec = [0.0] * len(self.labels)
            for value in gold:
                vec[index[value]] = 1.0
            return vec
        return index[gold]

    def tokenize(self, tokenizer, record: dict, max_length: int) -> dict:
        return tokenizer(self.text(record), truncation=True, max_length=max_length)

    def encode(self, records: list[dict], tokenizer, max_length: int, with_gold: bool = True) -> Encoded:
        features = []
        for record in records:
            feat = dict(self.tokenize(tokenizer, record, max_length))
            if with_gold:
                feat["labels"] = self.target(record)
            features.append(feat)
        return Encoded(features, list(range(len(records))))

    def decode(self, outputs: list[np.ndarray], encoded: Encoded, n_records: int) -> list:
        preds = []
        for logits in outputs:
            if self.multi_label:
                probs = 1.0 / (1.0 + np.exp(-logits))
                preds.append([label for label, p in zip(self.labels, probs, strict=True) if p > 0.5])
            else:
                preds.append(self.labels[int(np.argmax(logits))])
        return preds

    def score(self, golds: list, preds: list) -> dict[str, float]:
        if self.multi_label:
            return multilabel_metrics(golds, preds, self.labels)
        return classification_metrics(golds, preds, self.labels)

    def report(self, golds: list, preds: list) -> dict:
        if self.multi_label:
            return {}
        return {
            "labels": self.labels,
            "per_class": per_class_report(golds, preds, self.labels),
            "confusion": confusion(golds, preds, self.labels),
        }


CONFIG, TASK = ClassifyConfig, ClassifyTask
