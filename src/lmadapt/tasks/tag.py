"""`tag`: one tag per word (NER, chunks, keyword mentions, part of speech), with a token-classification head.

Words are split into subwords by the tokenizer; the word's tag goes on its first subword and the rest get
-100 (ignored by the loss). Predictions are read back at each word's first subword, so the prediction has
exactly one tag per input word; words cut off by `max_length` are predicted "O" (or, in a tag set without
"O", its first tag: the most frequent one in train).

The tag scheme is read from the training tags (`tag_scheme`): BIO (IOB2), IOB1 and BIOES mark entities, and
are scored by entity (seqeval); any other tag set (part of speech...) is "plain", scored token by token
(accuracy, macro F1, per-tag F1 in report.json). The label set is train's tags unless `labels:` lists it. An
eval/test tag train never shows is no error: the run log warns with its count, and its tokens count as wrong
(the model cannot predict it; they carry no eval loss).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from ..config.base import Section
from ..config.fields import unique_labels
from ..metrics import entity_metrics, flat_tags, per_class_report, token_metrics
from .base import ATTENTION, Attention, Encoded, Task, label_error

IGNORE = -100
ENTITY_SCHEMES = ("IOB2", "IOB1", "BIOES")  # tag schemes that mark entities; any other tag set is "plain"


class TagConfig(Section):
    type: Literal["tag"] = "tag"
    tokens: str = Field("tokens", description="Field with the list of words.")
    tags: str = Field(
        "tags", description="Field with one tag per word (BIO, IOB1, BIOES, or any tag set such as POS)."
    )
    labels: list[str] | None = Field(None, description="Tag set; default: from train.")
    id: str | None = None
    attention: Attention = ATTENTION

    _distinct = field_validator("labels")(unique_labels)


def tag_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """The tagging scheme of these tag sequences: "IOB2" (BIO: every entity starts with B-), "IOB1" (an
    entity may start with I-), "BIOES" (E- ends an entity, S- is a one-word entity), or "plain" for any other
    tag set (part of speech...). Entity tags are O, or B/I/E/S alone or followed by -TYPE."""
    prefixes, starts_inside = set(), False
    for tags in sequences:
        previous = "O"
        for tag in tags:
            if tag != "O":
                prefix, _, kind = tag.partition("-")
                if prefix not in ("B", "I", "E", "S") or (tag != prefix and not kind):
                    return "plain"
                prefixes.add(prefix)
                starts_inside |= prefix == "I" and previous not in (f"B-{kind}", f"I-{kind}", "B", "I")
            previous = tag
    if prefixes & {"E", "S"}:
        return "BIOES"
    return "IOB1" if starts_inside else "IOB2"


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

    def __init__(self, cfg):
        super().__init__(cfg)
        self.scheme: str | None = None  # read from the training tags by fit_labels

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
        sequences = [self.gold(record) for record in train]
        self.scheme = tag_scheme(sequences or [self.labels or []])
        if self.scheme not in ENTITY_SCHEMES:
            self.default_metrics = ("token_accuracy", "f1_macro", "precision_macro", "recall_macro")
            self.best_metric = "token_accuracy"
        if not self.labels:
            counts = Counter(tag for tags in sequences for tag in tags)
            if self.scheme in ENTITY_SCHEMES:  # O first, then each entity type's B- before its I-
                self.labels = sorted(set(counts) | {"O"}, key=lambda t: (t != "O", t[2:], t[:1]))
            else:  # most frequent first: words cut off by max_length are predicted as the first tag
                self.labels = sorted(counts, key=lambda t: (-counts[t], t))
        return self.labels

    def findings(self, splits: dict[str, list[dict]]) -> tuple[dict, list[str]]:
        found, notes = {"tag_scheme": self.scheme}, [f"tag scheme: {self.scheme} ({self.scheme_note()})"]
        known = set(self.labels or [])
        for name in ("eval", "test"):
            unseen = Counter(t for r in splits.get(name) or [] for t in self.gold(r) if t not in known)
            if unseen:
                found.setdefault("unseen_tags", {})[name] = dict(unseen.most_common())
                shown = ", ".join(f"{tag!r} x{n}" for tag, n in unseen.most_common())
                notes.append(
                    f"warning: data.{name}: {sum(unseen.values())} tokens have tags that train never shows "
                    f"({shown}); the model cannot predict them, so they are scored as wrong"
                )
        return found, notes

    def scheme_note(self) -> str:
        if self.scheme in ENTITY_SCHEMES:
            return "entity tags: scored by entity, seqeval"
        return "not an entity scheme: scored by token, accuracy and macro F1"

    def word_targets(self, record: dict) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        tags = self.gold(record)
        if len(tags) != len(self.words(record)):
            raise label_error(
                self.cfg.tags, f"{len(tags)} tags for {len(self.words(record))} words", self.labels
            )
        return [index.get(t, IGNORE) for t in tags]  # a tag train never shows: no loss (scored as wrong)

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
        cut_off = "O" if "O" in self.labels else self.labels[0]  # the tag of words past max_length
        for logits, info in zip(outputs, encoded.extra, strict=True):
            ids = logits.argmax(-1)
            word_ids = words_from_subwords(info["word_ids"], ids, info["n_words"], default=None)
            preds.append([cut_off if i is None else self.labels[int(i)] for i in word_ids])
        return preds

    def score(self, golds: list, preds: list) -> dict[str, float]:
        if (self.scheme or tag_scheme(golds)) in ENTITY_SCHEMES:
            return entity_metrics(golds, preds)
        return token_metrics(golds, preds)

    def report(self, golds: list, preds: list) -> dict:
        scheme = self.scheme or tag_scheme(golds)
        if scheme in ENTITY_SCHEMES:
            return {"tag_scheme": scheme}
        gold, pred = flat_tags(golds, preds)
        labels = list(self.labels or []) + sorted(set(gold) - set(self.labels or []))  # unseen tags too
        return {"tag_scheme": scheme, "per_class": per_class_report(gold, pred, labels)}


CONFIG, TASK = TagConfig, TagTask
