"""`keywords`: keyword extraction as BIO tagging of keyword mentions, decoded back to a keyword list.

Training: the text (title + abstract) is split into words (runs of letters/digits, or single punctuation
marks); every gold keyword found in it (case-insensitive, whole words) is tagged B-KW I-KW... Prediction:
the tagged spans are cut from the original text and deduplicated (normalised). The score is keyword-set F1
against ALL gold keywords, including those that never appear in the text, which no extractor can find;
`keyword_recall_ceiling` reports the share of gold keywords that do appear.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from ..config.base import Section
from ..config.fields import FieldNames, as_list
from ..metrics import keyword_metrics, normalize_keyword
from .base import Encoded
from .tag import TagTask, words_from_subwords

WORD = re.compile(r"\w+|[^\w\s]")
LABELS = ["O", "B-KW", "I-KW"]


class KeywordsConfig(Section):
    """Keyword extraction as BIO tagging of keyword mentions in the text, decoded back to a keyword list."""

    type: Literal["keywords"] = "keywords"
    text: FieldNames = Field(["title", "abstract"], description="Field(s) the keywords are found in.")
    keywords: str = Field("keywords", description="Field with the list of gold keywords.")
    id: str | None = None

    _list = field_validator("text", mode="before")(as_list)


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) for each word or punctuation mark of `text`."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def keyword_tags(words: list[str], keywords: list[str]) -> list[str]:
    """BIO tags marking every whole-word, case-insensitive occurrence of each keyword (longest first)."""
    lower = [w.lower() for w in words]
    tags = ["O"] * len(words)
    phrases = {tuple(w.lower() for w, _, _ in split_words(k)) for k in keywords}
    for phrase in sorted((p for p in phrases if p), key=len, reverse=True):
        n = len(phrase)
        for i in range(len(lower) - n + 1):
            if tuple(lower[i : i + n]) == phrase and all(t == "O" for t in tags[i : i + n]):
                tags[i : i + n] = ["B-KW"] + ["I-KW"] * (n - 1)
    return tags


def spans_from_tags(tags: list[str]) -> list[tuple[int, int]]:
    """(first, last) word index of each tagged span; a stray I-KW starts a span too."""
    spans, start = [], None
    for i, tag in enumerate([*tags, "O"]):
        if tag == "B-KW" or (tag == "I-KW" and start is None) or tag == "O":
            if start is not None:
                spans.append((start, i - 1))
                start = None
            if tag != "O":
                start = i
    return spans


class KeywordsTask(TagTask):
    default_metrics = ("keyword_f1", "keyword_precision", "keyword_recall", "keyword_f1_micro")
    best_metric = "keyword_f1"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.labels = list(LABELS)

    def fields(self, with_gold: bool = True) -> dict[str, str]:
        first, *rest = self.cfg.text
        fields = {first: "str"} | {name: "str?" for name in rest} | self.id_fields()
        if with_gold:
            fields[self.cfg.keywords] = "str_list"
        return fields

    def text(self, record: dict) -> str:
        return "\n".join(record.get(name) or "" for name in self.cfg.text)

    def words(self, record: dict) -> list[str]:
        return [w for w, _, _ in split_words(self.text(record))]

    def gold(self, record: dict) -> list[str]:
        return list(record[self.cfg.keywords])

    def fit_labels(self, train: list[dict]) -> list[str]:
        return self.labels

    def findings(self, splits: dict[str, list[dict]]) -> tuple[dict, list[str]]:
        return {}, []  # the gold values are keywords, not tags: the BIO tags are made from them

    def word_targets(self, record: dict) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[t] for t in keyword_tags(self.words(record), self.gold(record))]

    def encode(self, records: list[dict], tokenizer, max_length: int, with_gold: bool = True) -> Encoded:
        encoded = super().encode(records, tokenizer, max_length, with_gold)
        for info, record in zip(encoded.extra, records, strict=True):
            info["text"] = self.text(record)
        return encoded

    def decode(self, outputs: list[np.ndarray], encoded: Encoded, n_records: int) -> list[list[str]]:
        preds = []
        for logits, info in zip(outputs, encoded.extra, strict=True):
            ids = words_from_subwords(info["word_ids"], logits.argmax(-1), info["n_words"], default=None)
            tags = ["O" if i is None else self.labels[int(i)] for i in ids]
            words = split_words(info["text"])
            found, seen = [], set()
            for first, last in spans_from_tags(tags):
                phrase = info["text"][words[first][1] : words[last][2]]
                key = normalize_keyword(phrase)
                if key and key not in seen:
                    seen.add(key)
                    found.append(phrase)
            preds.append(found)
        return preds

    def score(self, golds: list, preds: list) -> dict[str, float]:
        return keyword_metrics(golds, preds)

    def report(self, golds: list, preds: list) -> dict:
        return {"note": "keyword-set F1 against all gold keywords, including those absent from the text"}


def recall_ceiling(task: KeywordsTask, records: list[dict]) -> float:
    """Share of gold keywords that appear (whole words, any case) in their record's text."""
    total = found = 0
    for record in records:
        words = task.words(record)
        for keyword in task.gold(record):
            total += 1
            found += any(t != "O" for t in keyword_tags(words, [keyword]))
    return found / total if total else 0.0


CONFIG, TASK = KeywordsConfig, KeywordsTask
