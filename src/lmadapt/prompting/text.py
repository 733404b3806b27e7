"""Prompt text helpers shared by every prompting mode: fill templates, fit long fields, read answers back."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..config.prompt import MASK
from ..config.prompt import PLACEHOLDER as _PLACEHOLDER
from ..generative import parse_label


def default_template(fields: Sequence[str], with_mask: bool = False) -> str:
    """One line per text field ('Title: {title}'), then 'Answer: {mask}' for the verbalizer."""
    lines = [f"{name.replace('_', ' ').capitalize()}: {{{name}}}" for name in fields]
    if with_mask:
        lines.append("Answer: " + MASK)
    return "\n".join(lines)


def placeholders(template: str) -> list[str]:
    """Field names a template refers to (without `mask`), in order."""
    return [m for m in dict.fromkeys(_PLACEHOLDER.findall(template)) if m != "mask"]


def fill(template: str, values: Mapping[str, object], keep_mask: bool = True) -> str:
    """Replace {field} placeholders by record values; {mask} stays (or becomes `values['mask']`).

    A value's own literal "{mask}" is written "{ mask }", so the template's slot stays the only one."""

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name == "mask" and keep_mask:
            return MASK
        if name not in values:
            raise KeyError(name)
        # a record's own "{mask}" is text, not the slot: keep it from being taken for one
        return str(values[name]).replace(MASK, "{ mask }")

    return _PLACEHOLDER.sub(sub, template)


def truncate_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """Cut `text` after `max_tokens` tokens, at the original characters (no decode round trip)."""
    if max_tokens <= 0:
        return ""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]]


def fit_record(tokenizer, template: str, record: Mapping[str, object], budget: int) -> dict[str, str]:
    """Shorten the longest fields of `record` until the filled template fits in `budget` tokens.

    Cutting fields (not the whole prompt) keeps the template's words and the {mask} slot intact.
    """
    names = placeholders(template)
    values = {n: str(record.get(n, "")) for n in names}
    overhead = len(tokenizer(fill(template, dict.fromkeys(names, "")), add_special_tokens=False)["input_ids"])
    lengths = {n: len(tokenizer(v, add_special_tokens=False)["input_ids"]) for n, v in values.items()}
    room = budget - overhead
    while names and sum(lengths.values()) > max(room, 0):
        longest = max(lengths, key=lengths.get)
        excess = sum(lengths.values()) - max(room, 0)
        keep = max(lengths[longest] - excess, 0)
        values[longest] = truncate_tokens(tokenizer, values[longest], keep)
        lengths[longest] = keep
    return values


def match_label(text: str, labels: Sequence[str]) -> str | None:
    """The label a generated answer names: the earliest label named (whole word, any case), else None.

    `lmadapt.generative.parse_label` with `first_named`: an answer naming several labels ("Animals, not
    humans") reads as the first, where a generate task's score would call it unclear.
    """
    return parse_label(text, labels, first_named=True)
