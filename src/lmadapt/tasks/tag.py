"""`tag`: one BIO tag per word (NER, keyword mentions), with a token-classification head.

Words are split into subwords by the tokenizer; the word's tag goes on its first subword and the rest get
-100 (ignored by the loss). Predictions are read back at each word's first subword, so the prediction has
exactly one tag per input word; words cut off by `max_length` are predicted "O".
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from ..config.base import Section
from ..config.fields import unique_labels
from ..metrics import entity_metrics
from .base import Encoded, Task, label_error

IGNORE = -100


class TagConfig(Section):
    type: Literal["tag"] = "tag"
    tokens: str = Field("tokens", description="Field with the list of words.")
    tags: str = Field("tags", description="Field with one BIO tag per word.")
    labels: list[str] | None = Field(None, description="Tag set; default: from train.")
    id: str | None = None

    _distinct = field_validator("labels")(unique_labels)


def align_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Word labels -> subword labels: the label on each word's first subword, IGNORE elsewhere."""
    out, previous = [], None
    for wid in word_ids:
        out.append(word_labels[wid] if wid is not None and wid != previous else IGNORE)
        previous = wid
    return out


def words_from_subwords(word_ids: list[int | None], values: np.ndarray, n_words: int, default) -> list:
    """Subword values -> one value per word (from its first subword); words with no subword get `default`."""
    out = [default] * n_words
    seen = set()
    for pos, wid in enumerate(word_ids):
        if wid is not None and wid not in seen:
            seen.add(wid)
            out[wid] = values[pos]
    return out


class TagTask(Task):
    task_type = "token_cls"
    head = "AutoModelForTokenClassification"
    default_metrics = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
    best_metric = "entity_f1"

    def fields(self, with_gold: bool = True) -> dict[str, str]:
        fields = {self.cfg.tokens: "str_list"} | self.id_fields()
        if with_gold:
            fields[self.cfg.tags] = "tags"
        return self.gold_fields(fields, self.cfg.tags if with_gold else None)

    def words(self, record: dict) -> list[str]:
        return list(record[self.cfg.tokens])

    def gold(self, record: dict) -> list[str]:
        return list(record[self.cfg.tags])

    def fit_labels(self, train: list[dict]) -> list[str]:
        if not self.labels:
            seen = {tag for record in train for tag in self.gold(record)} | {"O"}
            # O first, then each entity type's B- before its I-
            self.labels = sorted(seen, key=lambda t: (t != "O", t[2:], t[:1]))
        return self.labels

    def word_targets(self, record: dict) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        tags = self.gold(record)
        if len(tags) != len(self.words(record)):
            raise label_error(
                self.cfg.tags, f"{len(tags)} tags for {len(self.words(record))} words", self.labels
            )
        for tag in tags:
            if tag not in index:
                raise label_error(self.cfg.tags, tag, self.labels)
        return [index[t] for t in tags]

    def encode(self, records: list[dict], tokenizer, max_length: int, with_gold: bool = True) -> Encoded:
        features, extra = [], []
        for record in records:
            enc = tokenizer(
                self.words(record), is_split_into_words=True, truncation=True, max_length=max_length
            )
            word_ids = enc.word_ids()
            feat = dict(enc)
            if with_gold:
                feat["labels"] = align_labels(word_ids, self.word_targets(record))
            features.append(feat)
            extra.append({"word_ids": word_ids, "n_words": len(self.words(record))})
        return Encoded(features, list(range(len(records))), extra)

    def collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)

    def decode(self, outputs: list[np.ndarray], encoded: Encoded, n_records: int) -> list[list[str]]:
        preds = []
        for logits, info in zip(outputs, encoded.extra, strict=True):
            ids = logits.argmax(-1)
            word_ids = words_from_subwords(info["word_ids"], ids, info["n_words"], default=None)
            preds.append(["O" if i is None else self.labels[int(i)] for i in word_ids])
        return preds

    def score(self, golds: list, preds: list) -> dict[str, float]:
        return entity_metrics(golds, preds)


CONFIG, TASK = TagConfig, TagTask
