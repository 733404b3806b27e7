"""Generative tasks (`task: {type: generate}`): instruction + record -> prompt, gold -> target text, outputs scored.

Metrics:
- label_f1: the output is parsed into one of `labels`; accuracy/F1 over all examples, an unparseable output
  counts as wrong and is counted (`unparseable`, `unparseable_rate`), never dropped.
- keyword_f1: the output is split on commas/semicolons (also the Chinese ones) and scored by keyword-set F1
  (`lmadapt.metrics.keyword_metrics`).
- rouge_l: ROUGE-L F1; words for alphabetic text, one token per character for CJK.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .metrics import classification_metrics, keyword_metrics, rouge_l, rouge_tokens

__all__ = [
    "record_fields",
    "prompt_messages",
    "target_text",
    "parse_label",
    "parse_keywords",
    "rouge_tokens",
    "rouge_l",
    "score_outputs",
]


def record_fields(task) -> dict[str, str]:
    """Field kinds the reader validates for a generate task.

    label_f1: a gold value must be a key of `label_map` (or, without one, one of `labels`), so a record the
    task cannot map fails when read, naming its file and line.
    """
    from .data import Fields

    fields = {name: ("str" if i == 0 else "str?") for i, name in enumerate(task.text)}
    kind = "str_list" if task.metric == "keyword_f1" else ("label" if task.metric == "label_f1" else "str")
    fields[task.target] = kind
    if task.id:
        fields[task.id] = "label"
    allowed = {}
    if task.metric == "label_f1" and task.label_map:
        allowed[task.target] = (list(task.label_map), "task.label_map")
    elif task.metric == "label_f1" and task.labels:
        allowed[task.target] = (list(task.labels), "task.labels")
    return Fields(fields, allowed=allowed)


def prompt_messages(task, record: Mapping) -> list[dict]:
    """The user turn (instruction, then the input fields) with the optional system prompt."""
    text = "\n".join(str(record[f]) for f in task.text if record.get(f))
    messages = [{"role": "user", "content": f"{task.instruction}\n{text}"}]
    return ([{"role": "system", "content": task.system}] if task.system else []) + messages


def target_text(task, record: Mapping) -> str:
    """What the model should answer: the mapped label, comma-joined keywords, or the text itself."""
    gold = record[task.target]
    if task.metric == "keyword_f1":
        return ", ".join(gold)
    if task.metric == "label_f1" and task.label_map:
        return task.label_map[str(gold)]
    return str(gold)


def parse_label(output: str, labels: Sequence[str], first_named: bool = False) -> str | None:
    """The label a generated output names; the one label parser (the prompt stage's `match_label` too).

    A label counts where it stands as a whole word, in any case; of labels named at the same place the
    longest wins ('non-spam' over 'spam'). The label the output starts with is the answer. Otherwise, when
    several labels are named: None (unclear), or with `first_named` the earliest one ("The answer is Animals,
    not humans." -> Animals). None when no label is named.
    """
    text = output.strip()
    named: dict[str, int] = {}  # label -> where it is first named; longest labels first
    for label in sorted(labels, key=len, reverse=True):
        found = re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text, flags=re.IGNORECASE)
        if found and label not in named:
            named[label] = found.start()
    if not named:
        return None
    earliest = min(named, key=named.get)  # ties: the first in `named`, the longest
    if named[earliest] == 0 or first_named or len(named) == 1:
        return earliest
    return None


_KEYWORD_SPLIT = re.compile(r"[,;，；、\n]+")


def parse_keywords(output: str) -> list[str]:
    """Comma/semicolon separated keywords (Chinese separators too), stripped, duplicates dropped."""
    seen: dict[str, None] = {}
    for part in _KEYWORD_SPLIT.split(output):
        part = part.strip().strip(".").strip()
        if part:
            seen.setdefault(part, None)
    return list(seen)


def score_outputs(task, records: Sequence[Mapping], outputs: Sequence[str]) -> tuple[dict, list]:
    """(metrics, parsed predictions) of generated `outputs` against the records' gold targets."""
    if task.metric == "label_f1":
        labels = list(task.labels or sorted({target_text(task, r) for r in records}))
        gold = [target_text(task, r) for r in records]
        parsed = [parse_label(o, labels) for o in outputs]
        metrics = classification_metrics(gold, [p or "" for p in parsed], labels, positive=labels[0])
        bad = sum(p is None for p in parsed)
        metrics |= {"unparseable": bad, "unparseable_rate": bad / max(len(parsed), 1)}
        return metrics, parsed
    if task.metric == "keyword_f1":
        parsed = [parse_keywords(o) for o in outputs]
        metrics = keyword_metrics([r[task.target] for r in records], parsed)
        metrics["empty_outputs"] = sum(not p for p in parsed)
        return metrics, parsed
    scores = [rouge_l(target_text(task, r), o) for r, o in zip(records, outputs, strict=True)]
    return {"rouge_l": sum(scores) / max(len(scores), 1)}, list(outputs)
