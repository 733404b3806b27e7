"""What `lmadapt auto` makes of a user's file: the task, the fields, the script, the label balance.

Field names are never looked up in a list of known names (they can be anything, in any language); the
values decide. A column is
- an **id** when every record has a different short value;
- a **label** when its values are short scalars that repeat (at most MAX_CLASSES distinct ones);
- a **text** when its values are strings that are long or mostly distinct;
- **tokens / tags** when it holds lists of strings (one list per record, two lists of equal lengths: tag).

From those: a label and one text -> classify; a label and two texts whose names differ only by a trailing
1/2 or a/b (sentence1/sentence2, text_a/text_b, 问题1/问题2) -> pair; a label and other texts -> classify on
them joined (a title and an abstract); two texts and no label -> generate; tokens + tags -> tag. Every choice
comes with the reason, and --task / --text / --label override it.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..data import read_records, validate_records
from ..errors import DataError

MAX_CLASSES = 100  # a "label" with more distinct values is something else (an id, a free-text answer...)
TASKS = ("classify", "pair", "tag", "generate")
TRAINABLE = ("classify", "pair")  # what this version of auto adapts models for
EVAL_SHARE = 0.2  # carved from train (stratified) when no --eval is given
EVAL_MAX = 2000
MIN_TRAIN = 20  # fewer training records cannot teach anything measurable

CJK = re.compile("[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
LATIN = re.compile("[A-Za-z\u00c0-\u024f]")
LETTER = re.compile(r"[^\W\d_]")
IDENT = re.compile(r"[A-Za-z0-9_\-.:/#]{1,40}")  # an identifier: one short ASCII token, no spaces
PAIR_SUFFIX = re.compile(r"[\s_\-.]*(?:[12]|[ab]|[AB])$")


@dataclass
class Understanding:
    """The task, its fields, and what was found in the data (shown to the user and kept in plan.json)."""

    task: str
    text: list[str]
    label: str | None
    reasons: list[str]
    script: str = "latin"
    script_shares: dict[str, float] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    n_train: int = 0
    n_eval: int = 0
    n_test: int = 0

    def task_section(self) -> dict:
        """The recipe's `task:` section."""
        if self.task == "pair":
            return {"type": "pair", "text_a": self.text[0], "text_b": self.text[1], "label": self.label}
        return {"type": "classify", "text": list(self.text), "label": self.label}

    def fields(self) -> dict[str, str]:
        """{field: kind} the records are validated against."""
        first, *rest = self.text
        kinds = {first: "str"} | {name: ("str" if self.task == "pair" else "str?") for name in rest}
        return kinds | ({self.label: "label"} if self.label else {})

    def balance(self) -> str:
        total = sum(self.counts.values()) or 1
        top = sorted(self.counts.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} {v:,} ({v / total:.0%})" for k, v in top[:8])
        more = f", ... ({len(top)} labels)" if len(top) > 8 else ""
        ratio = top[0][1] / max(top[-1][1], 1)
        verdict = "balanced" if ratio <= 1.5 else f"imbalanced ({ratio:.1f}:1)"
        return f"{verdict}: {shown}{more}"


# ----------------------------------------------------------------------------------------------- reading
def read_file(path: str | Path, what: str) -> list[dict]:
    """All records of a user's file (the shared readers); an empty file is an error naming it."""
    path = Path(path)
    records = read_records(path)
    if not records:
        raise DataError(f"{what} {path}: no records (the file is empty or holds only a header)")
    return records


def _columns(records: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records[:2000]:
        seen.update(dict.fromkeys(map(str, record)))
    return list(seen)


def _is_scalar_text(value) -> bool:
    return isinstance(value, str | int | float | bool) and not (isinstance(value, str) and not value.strip())


def describe_column(records: list[dict], name: str) -> dict:
    """How a column's values look: kind (text / label / id / list / other), distinct count, mean length."""
    values = [r.get(name) for r in records]
    present = [v for v in values if v is not None and not (isinstance(v, str) and not v.strip())]
    if not present:
        return {"kind": "empty", "distinct": 0, "length": 0.0, "filled": 0.0}
    filled = len(present) / len(values)
    if all(isinstance(v, list) for v in present):
        ok = all(all(isinstance(x, str) for x in v) for v in present)
        return {"kind": "list" if ok else "other", "distinct": 0, "length": 0.0, "filled": filled}
    if not all(_is_scalar_text(v) for v in present):
        return {"kind": "other", "distinct": 0, "length": 0.0, "filled": filled}
    texts = [str(v).strip() for v in present]
    distinct = len(set(texts))
    length = sum(len(t) for t in texts) / len(texts)
    n = len(texts)
    if distinct == n and n > 1 and filled == 1.0 and all(IDENT.fullmatch(t) for t in texts):
        kind = "id"
    elif distinct <= MAX_CLASSES and distinct < max(2, 0.5 * n) and length <= 40:
        kind = "label"
    elif isinstance(present[0], str) and (length > 40 or distinct >= 0.5 * n):
        kind = "text"
    else:
        kind = "other"
    return {"kind": kind, "distinct": distinct, "length": length, "filled": filled}


def _pairs_by_name(a: str, b: str) -> bool:
    """sentence1/sentence2, text_a/text_b, q1/q2: the same name but for a trailing 1/2 or a/b."""
    sa, sb = PAIR_SUFFIX.sub("", a), PAIR_SUFFIX.sub("", b)
    return a != b and sa == sb and PAIR_SUFFIX.search(a) is not None and PAIR_SUFFIX.search(b) is not None


def understand(
    records: list[dict],
    source: str,
    task: str | None = None,
    text: list[str] | None = None,
    label: str | None = None,
) -> Understanding:
    """Propose the task and fields for `records` (overrides win), with the reason for each choice."""
    if task is not None and task not in TASKS:
        raise DataError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    columns = _columns(records)
    missing = [name for name in [*(text or []), *([label] if label else [])] if name not in columns]
    if missing:
        raise DataError(f"{source}: no field {missing[0]!r}; the records have {', '.join(columns)}")
    info = {name: describe_column(records, name) for name in columns}
    reasons: list[str] = []

    lists = [c for c in columns if info[c]["kind"] == "list"]
    if task == "tag" or (task is None and len(lists) >= 2 and not text and not label):
        reasons.append(f"fields {', '.join(lists[:2])} hold lists of strings: tokens and their tags")
        return Understanding("tag", lists[:1], lists[1] if len(lists) > 1 else None, reasons)

    if label is None:
        found = [c for c in columns if info[c]["kind"] == "label" and c not in (text or [])]
        # the fewest distinct values is the likeliest label (a category beside, say, a year or a source)
        found.sort(key=lambda c: (info[c]["distinct"], columns.index(c)))
        many = [
            c
            for c in columns
            if info[c]["kind"] in ("text", "other")
            and info[c]["length"] <= 40
            and MAX_CLASSES < info[c]["distinct"] < len(records)
        ]
        for c in many:
            reasons.append(
                f"field {c!r} has {info[c]['distinct']:,} distinct short values: too many to be "
                f"classes (at most {MAX_CLASSES})"
            )
        if found:
            label = found[0]
            d = info[label]
            reasons.append(
                f"label {label!r}: {d['distinct']} distinct short values over {len(records):,} records"
                + (f" (also label-like: {', '.join(found[1:])})" if found[1:] else "")
            )
    elif info[label]["kind"] not in ("label", "id", "text"):
        raise DataError(f"{source}: --label {label!r} holds {info[label]['kind']} values, not labels")
    else:
        reasons.append(f"label {label!r} (given)")
    if label is not None:
        _check_label(records, label, info[label], source, task)

    if text is None:
        text = [c for c in columns if c != label and info[c]["kind"] == "text"]
        if not text:
            kinds = ", ".join(f"{c} ({info[c]['kind']})" for c in columns)
            raise DataError(f"{source}: no field holds text (fields: {kinds}); name it with --text")
        shown = ", ".join(f"{c} (mean {info[c]['length']:.0f} chars)" for c in text)
        reasons.append(f"text {shown}: strings, long or mostly distinct")
    else:
        reasons.append(f"text {', '.join(text)} (given)")

    if task is None:
        if label is None:
            task = "generate"
            reasons.append("no field looks like a label: generate (the last text field from the others)")
        elif len(text) == 2 and _pairs_by_name(*text):
            task = "pair"
            reasons.append(f"two texts named alike ({text[0]} / {text[1]}): pair (the label is about both)")
        else:
            task = "classify"
            if len(text) > 1:
                reasons.append(
                    f"{len(text)} text fields, joined into one input (--task pair scores two as a pair)"
                )
    elif task == "pair" and len(text) != 2:
        raise DataError(
            f"--task pair needs two text fields, found {len(text)} ({', '.join(text)}): use --text A --text B"
        )
    if task in ("classify", "pair") and label is None:
        raise DataError(
            f"{source}: --task {task} needs a label field, and none looks like one: name it with --label"
        )
    return Understanding(task, list(text), label, reasons)


def _check_label(records: list[dict], label: str, info: dict, source: str, task: str | None) -> None:
    if task in ("tag", "generate"):
        return
    values = Counter(str(r.get(label)).strip() for r in records if r.get(label) not in (None, ""))
    if len(values) > MAX_CLASSES:
        raise DataError(
            f"{source}: label {label!r} has {len(values):,} distinct values over {len(records):,} records; "
            f"auto classifies into at most {MAX_CLASSES} classes (is it an id or a free text? choose "
            "another with --label)"
        )
    if len(values) < 2:
        only = next(iter(values), "nothing")
        raise DataError(
            f"{source}: label {label!r} has a single class ({only!r}) in every record: there is nothing "
            "to learn; add examples of the other classes"
        )


# ----------------------------------------------------------------------------------------------- facts
def script_of(texts: list[str]) -> tuple[str, dict[str, float]]:
    """'cjk' when most letters are Chinese / Japanese / Korean, 'latin' when most are Latin, else 'other'."""
    sample = "".join(texts[:2000])
    letters = len(LETTER.findall(sample)) or 1
    shares = {"cjk": len(CJK.findall(sample)) / letters, "latin": len(LATIN.findall(sample)) / letters}
    best = max(shares, key=shares.get)
    return (best if shares[best] >= 0.3 else "other"), {k: round(v, 3) for k, v in shares.items()}


def finish(
    u: Understanding, train: list[dict], eval_: list[dict], test: list[dict], source: str
) -> Understanding:
    """Validate every split against the chosen fields; fill in labels, balance and script."""
    fields = u.fields()
    train[:] = validate_records(train, fields)
    eval_[:] = validate_records(eval_, fields)
    test[:] = validate_records(test, fields)
    if len(train) < MIN_TRAIN:
        raise DataError(f"{source}: {len(train)} training records; auto needs at least {MIN_TRAIN}")
    u.counts = dict(sorted(Counter(str(r[u.label]) for r in train).items()))
    u.labels = sorted(u.counts)
    for name, split in (("--eval", eval_), ("--test", test)):
        unseen = sorted({str(r[u.label]) for r in split} - set(u.labels))
        if unseen:
            raise DataError(
                f"{name}: label(s) {', '.join(map(repr, unseen[:5]))} never occur in the training file "
                f"(its labels: {', '.join(u.labels[:20])})"
            )
    u.script, u.script_shares = script_of([" ".join(str(r.get(f) or "") for f in u.text) for r in train])
    u.n_train, u.n_eval, u.n_test = len(train), len(eval_), len(test)
    return u


def stratified_split(records: list[dict], label: str, share: float, cap: int, seed: int = 0):
    """(train, eval): `share` of each class (at most `cap` in all) held out, seeded; classes of one record
    stay in train."""
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_label.setdefault(str(r[label]), []).append(i)
    fraction = min(share, cap / len(records))
    held: set[int] = set()
    rng = random.Random(seed)
    for key in sorted(by_label):
        members = by_label[key][:]
        rng.shuffle(members)
        k = round(len(members) * fraction) if len(members) > 1 else 0
        held.update(members[: max(k, 1 if len(members) > 1 else 0)])
    train = [r for i, r in enumerate(records) if i not in held]
    eval_ = [r for i, r in enumerate(records) if i in held]
    return train, eval_
