"""Field kinds, record validation, and the named record shapes the stages read.

A task asks for fields as `{field name: kind}`; `validate_records` checks every record against it and
returns normalized copies (labels as strings, JSON-encoded CSV cells parsed, optional fields filled).
Kinds: str, label, labels, str_list, tags, messages, span, history, chat, responses, scores, any;
a trailing "?" makes any kind optional (a missing value becomes "", [] or None). A `Fields` mapping can also
name the only values a field may hold (a recipe's `task.labels`, the keys of `task.label_map`), so a record
outside them fails when read, naming its file and line, not later inside training.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import DataError

ROLES = ("system", "user", "assistant", "tool")


class _Bad(Exception):
    """A value does not fit its kind; the optional detail says which part of it."""


# ------------------------------------------------------------------------------------------- converters
def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad()
    return value


def _label(value) -> str:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise _Bad()


def _json_cell(value):
    """CSV/TSV cells hold lists and objects as JSON text: parse them; other values pass unchanged."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise _Bad(f"the cell's JSON does not parse: {exc.msg} at char {exc.pos}") from None
    return value


def _list(value) -> list:
    value = _json_cell(value)
    if not isinstance(value, list | tuple):
        raise _Bad()
    return list(value)


def _items(value, convert: Callable[[Any], Any]) -> list:
    out = []
    for index, item in enumerate(_list(value)):
        try:
            out.append(convert(item))
        except _Bad as exc:
            raise _Bad(f"item {index}: {exc}" if str(exc) else f"item {index} is {describe(item)}") from None
    return out


def _labels(value) -> list[str]:
    return _items(value, _label)


def _str_list(value) -> list[str]:
    return _items(value, _text)


def _message(item) -> dict:
    if not isinstance(item, Mapping):
        raise _Bad(f"got {describe(item)}, not {{role, content}}")
    role, content = item.get("role"), item.get("content")
    if role not in ROLES:
        raise _Bad(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise _Bad(f"content is {describe(content)}")
    return dict(item)


def _messages(value) -> list[dict]:
    out = _items(value, _message)
    if not out:
        raise _Bad("no messages")
    return out


def _span(value) -> dict:
    value = _json_cell(value)
    if not isinstance(value, Mapping):
        raise _Bad()
    text = value.get("text")
    start = value.get("start", value.get("answer_start"))
    if isinstance(text, list) and isinstance(start, list) and text and len(text) == len(start):
        text, start = text[0], start[0]  # SQuAD layout {text: [...], answer_start: [...]}: the first answer
    if not isinstance(text, str) or not text:
        raise _Bad(f"text is {describe(text)}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise _Bad(f"start is {describe(start)}")
    return {"text": text, "start": start}


def _pair(item) -> list[str]:
    if not isinstance(item, list | tuple) or len(item) != 2 or not all(isinstance(x, str) for x in item):
        raise _Bad(f"got {describe(item)}")
    return list(item)


def _history(value) -> list[list[str]]:
    return _items(value, _pair)


def _chat(value):
    value = _json_cell(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return _messages(value)
    raise _Bad()


def _responses(value) -> list[str]:
    out = _str_list(value)
    if len(out) < 2:
        raise _Bad(f"{len(out)} response(s)")
    return out


def _number(item) -> float:
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise _Bad()
    return float(item)


def _scores(value) -> list[float]:
    return _items(value, _number)


def _any(value):
    return value


# kind -> (converter, what the message says was expected, default when optional and missing)
KINDS: dict[str, tuple[Callable[[Any], Any], str, Any]] = {
    "str": (_text, "a non-empty string", ""),
    "label": (_label, "a label (string, integer or boolean)", ""),
    "labels": (_labels, "a list of labels", []),
    "str_list": (_str_list, "a list of non-empty strings", []),
    "tags": (_str_list, "a list of tags (non-empty strings)", []),
    "messages": (_messages, "a non-empty list of {role, content} messages", []),
    "span": (_span, "an answer span {text: str, start: int}", None),
    "history": (_history, "a list of [user, assistant] string pairs", []),
    "chat": (_chat, "a non-empty string or a list of {role, content} messages", ""),
    "responses": (_responses, "a list of at least 2 non-empty response strings, best first", []),
    "scores": (_scores, "a list of numbers (one score per response)", []),
    "any": (_any, "a value", None),
}


def describe(value) -> str:
    """A short phrase for a found value: `string 'abc'`, `list of 3`, `null`."""
    if value is None:
        return "null"
    if isinstance(value, str):
        if not value.strip():
            return "an empty string" if not value else "a blank string"
        short = value if len(value) <= 40 else value[:37] + "..."
        return f"string {short!r}"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"{type(value).__name__} {value}"
    if isinstance(value, list | tuple):
        return f"list of {len(value)}"
    if isinstance(value, Mapping):
        keys = ", ".join(map(str, list(value)[:5]))
        return f"object {{{keys}}}"
    return type(value).__name__


def check_kinds(fields: Mapping[str, str]) -> None:
    """Raise ValueError for a kind that does not exist (a programming error, not a data error)."""
    for name, kind in fields.items():
        if kind.removesuffix("?") not in KINDS:
            raise ValueError(
                f"field {name!r}: unknown kind {kind!r}; kinds: {', '.join(KINDS)} (and 'kind?')"
            )


# ------------------------------------------------------------------------------------------- validation
class Fields(dict):
    """`{field name: kind}`, plus for some fields the only values allowed and where that list comes from.

    `Fields({"text": "str", "label": "label"}, allowed={"label": (["neg", "pos"], "task.labels")})`: a label,
    or each item of a labels / tags list, must be one of the allowed values.
    """

    def __init__(self, kinds=(), allowed: Mapping[str, tuple[Sequence[str], str]] | None = None):
        super().__init__(kinds)
        self.allowed = {name: (list(values), source) for name, (values, source) in (allowed or {}).items()}


def validate_record(record: Mapping, fields: Mapping[str, str], where: str) -> dict:
    """One record checked against `fields`; a normalized copy (other fields kept as they are)."""
    out = dict(record)
    for name, kind in fields.items():
        base = kind.removesuffix("?")
        convert, expected, default = KINDS[base]
        value = record.get(name)
        empty = value is None or (isinstance(value, str) and not value.strip())
        if kind.endswith("?") and empty:
            out[name] = [] if default == [] else default  # a fresh list per record
            continue
        if name not in record:
            raise DataError(f"{where}: field {name!r}: missing{_missing_hint(name, record)}")
        if value is None:
            raise DataError(f"{where}: field {name!r}: missing (null)")
        try:
            out[name] = convert(value)
        except _Bad as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise DataError(
                f"{where}: field {name!r}: expected {expected}, got {describe(value)}{detail}"
            ) from None
    _check_allowed(out, getattr(fields, "allowed", {}), where)
    _cross_check(out, fields, where)
    return out


def _check_allowed(out: dict, allowed: Mapping[str, tuple[list[str], str]], where: str) -> None:
    for name, (values, source) in allowed.items():
        value = out.get(name)
        for item in value if isinstance(value, list) else [value]:
            if item in (None, "") or item in values:
                continue
            shown = ", ".join(values[:20]) + (", ..." if len(values) > 20 else "")
            close = difflib.get_close_matches(str(item), values, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(f"{where}: field {name!r}: {describe(item)} is not in {source} ({shown}){hint}")


def _missing_hint(name: str, record: Mapping) -> str:
    keys = [str(k) for k in record]
    if not keys:
        return " (the record is empty)"
    close = difflib.get_close_matches(name, keys, n=1)
    shown = ", ".join(k if len(k) <= 40 else k[:37] + "..." for k in keys[:12]) + (
        ", ..." if len(keys) > 12 else ""
    )
    return f" (record has {shown}" + (f"; did you mean {close[0]!r}?)" if close else ")")


def _one(fields: Mapping[str, str], base: str) -> str | None:
    names = [name for name, kind in fields.items() if kind.removesuffix("?") == base]
    return names[0] if len(names) == 1 else None


def _cross_check(out: dict, fields: Mapping[str, str], where: str) -> None:
    """Checks that need two fields: one tag per token; one score per response (then best first)."""
    tags, tokens = _one(fields, "tags"), _one(fields, "str_list")
    if tags and tokens and len(out[tags]) != len(out[tokens]):
        raise DataError(f"{where}: field {tags!r}: {len(out[tags])} tags for {len(out[tokens])} {tokens!r}")
    scores, responses = _one(fields, "scores"), _one(fields, "responses")
    if scores and responses and out[scores]:
        if len(out[scores]) != len(out[responses]):
            found = f"{len(out[scores])} scores for {len(out[responses])} {responses!r}"
            raise DataError(f"{where}: field {scores!r}: {found}")
        order = sorted(range(len(out[scores])), key=lambda i: -out[scores][i])  # stable: ties keep order
        out[responses] = [out[responses][i] for i in order]
        out[scores] = [out[scores][i] for i in order]


def validate_records(records: Sequence[Mapping], fields: Mapping[str, str], where: str = "") -> list[dict]:
    """Validate every record (stopping at the first bad one); records' own `.where` locates errors."""
    check_kinds(fields)
    return [
        validate_record(record, fields, getattr(record, "where", "") or f"{where}: record {index}")
        for index, record in enumerate(records)
    ]


# ------------------------------------------------------------------------------------------- shapes
# The record shapes the stages read: role (= default field name) -> kind.
SHAPES: dict[str, dict[str, str]] = {
    "text": {"text": "str"},  # raw text (pretraining)
    "classify": {"text": "str", "label": "label"},  # text(+more text fields) + label
    "multi_label": {"text": "str", "label": "labels"},
    "pair": {"text_a": "str", "text_b": "str", "label": "label"},
    "tag": {"tokens": "str_list", "tags": "tags"},
    "keywords": {"text": "str", "keywords": "str_list"},
    "span": {"context": "str", "question": "str", "answer": "span"},
    "alpaca": {
        "instruction": "str",
        "input": "str?",
        "output": "str",
        "system": "str?",
        "history": "history?",
    },
    "messages": {"messages": "messages"},
    "preference": {"prompt": "chat", "chosen": "chat", "rejected": "chat"},
    "ranked": {"prompt": "chat", "responses": "responses", "scores": "scores?"},
}

# most specific first, so a record with prompt/chosen/rejected is not taken for something looser
_GUESS_ORDER = (
    "ranked",
    "preference",
    "messages",
    "alpaca",
    "span",
    "tag",
    "pair",
    "keywords",
    "classify",
    "multi_label",
    "text",
)


def shape_fields(shape: str, id: str | None = None, **names: str | Sequence[str] | None) -> dict[str, str]:
    """The `{field: kind}` mapping of a named shape under the recipe's field names.

    `shape_fields("classify", text=["title", "abstract"], label="label")` ->
    `{"title": "str", "abstract": "str?", "label": "label"}`: after the first of several text fields the
    rest are optional. A role set to None is left out; `id` adds an identifier field (kind "label").
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown record shape {shape!r}; shapes: {', '.join(SHAPES)}")
    roles = SHAPES[shape]
    unknown = set(names) - set(roles)
    if unknown:
        raise ValueError(f"shape {shape!r} has no role {sorted(unknown)[0]!r}; roles: {', '.join(roles)}")
    fields: dict[str, str] = {}
    for role, kind in roles.items():
        chosen = names.get(role, role)
        if chosen is None:
            continue
        first, *rest = [chosen] if isinstance(chosen, str) else list(chosen)
        fields[first] = kind
        for name in rest:
            fields[name] = kind if kind.endswith("?") else kind + "?"
    if id:
        fields[id] = "label"
    return fields


def guess_shape(record: Mapping) -> str | None:
    """The first named shape (most specific first) whose default fields this record satisfies, or None."""
    for shape in _GUESS_ORDER:
        fields = SHAPES[shape]
        if any(name not in record for name, kind in fields.items() if not kind.endswith("?")):
            continue
        try:
            validate_record(record, fields, "")
        except DataError:
            continue
        return shape
    return None
