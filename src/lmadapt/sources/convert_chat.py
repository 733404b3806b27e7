"""Instruction, preference and chat sources (JSON / JSONL) -> records.

Each converter returns `(records, notes)`: notes count what was left out and why, for the manifest.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import SourceError


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path.name}:{exc.lineno}: invalid JSON: {exc.msg}") from exc


def _require(path: Path, index: int, record: Any, fields: dict[str, type]) -> None:
    if not isinstance(record, dict):
        raise SourceError(f"{path.name}: record {index}: expected an object, got {type(record).__name__}")
    for field, kind in fields.items():
        if not isinstance(record.get(field), kind):
            got = type(record.get(field)).__name__ if field in record else "nothing"
            raise SourceError(
                f"{path.name}: record {index}: field {field!r}: expected {kind.__name__}, got {got}"
            )


def alpaca(path: Path) -> tuple[list[dict], dict]:
    """llamafactory's alpaca demo: a JSON list of {instruction, input, output}."""
    fields = {"instruction": str, "input": str, "output": str}
    records = []
    for i, rec in enumerate(_load_json(path)):
        _require(path, i, rec, fields)
        records.append({k: rec[k] for k in fields})
    return records, {"with_input": sum(bool(r["input"]) for r in records)}


# llamafactory's ShareGPT speaker names -> chat roles.
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


def dpo(path: Path) -> tuple[list[dict], dict]:
    """llamafactory's DPO demo: {conversations: [{from, value}], chosen: {from, value}, rejected: {...}}
    -> {prompt: [{role, content}], chosen: str, rejected: str}."""
    records, notes = [], Counter()
    for i, rec in enumerate(_load_json(path)):
        _require(path, i, rec, {"conversations": list, "chosen": dict, "rejected": dict})
        prompt = []
        for turn in rec["conversations"]:
            role = SHAREGPT_ROLES.get(turn.get("from"))
            if role is None:
                raise SourceError(f"{path.name}: record {i}: unknown speaker {turn.get('from')!r}")
            prompt.append({"role": role, "content": turn.get("value", "")})
        if not prompt or prompt[-1]["role"] != "user":
            raise SourceError(f"{path.name}: record {i}: the conversation must end with the user's turn")
        notes["multi_turn"] += sum(m["role"] == "user" for m in prompt) > 1
        notes["with_system"] += prompt[0]["role"] == "system"
        records.append(
            {"prompt": prompt, "chosen": rec["chosen"]["value"], "rejected": rec["rejected"]["value"]}
        )
    return records, dict(notes)


def self_instruct_seeds(path: Path) -> tuple[list[dict], dict]:
    """The 175 Self-Instruct seed tasks (JSONL), kept as they are after a shape check."""
    fields = {"id": str, "name": str, "instruction": str, "instances": list, "is_classification": bool}
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path.name}:{line_no}: invalid JSON: {exc.msg}") from exc
            _require(path, line_no, rec, fields)
            instances = [
                {"input": x.get("input", ""), "output": x.get("output", "")} for x in rec["instances"]
            ]
            records.append({**{k: rec[k] for k in fields}, "instances": instances})
    return records, {"classification": sum(r["is_classification"] for r in records)}


def alpacaeval(path: Path) -> tuple[list[dict], dict]:
    """AlpacaEval's example outputs: 805 {instruction, output (reference), dataset}."""
    fields = {"instruction": str, "output": str, "dataset": str}
    records = []
    for i, rec in enumerate(_load_json(path)):
        _require(path, i, rec, fields)
        records.append({k: rec[k] for k in fields})
    return records, {}


def chitchat(path: Path) -> tuple[list[dict], dict]:
    """chitchat_dataset: {uuid: {messages: [[{sender, text, timestamp}, ...] per turn], ...}}.

    A turn is one speaker's run of messages (joined by newlines). The first speaker becomes `user`, the
    other `assistant`, alternating; conversations with fewer than two turns have no reply and are left out.
    """
    records, notes = [], Counter()
    for conv_id, conv in _load_json(path).items():
        messages, speakers = [], []
        for turn in conv.get("messages", []):
            text = "\n".join(m["text"].strip() for m in turn if m.get("text", "").strip())
            if not text:
                continue
            sender = turn[0]["sender"]
            if sender not in speakers:
                speakers.append(sender)
            if len(speakers) > 2:
                raise SourceError(f"{path.name}: conversation {conv_id}: more than two speakers")
            role = "user" if sender == speakers[0] else "assistant"
            if messages and messages[-1]["role"] == role:  # an empty turn between two of the same speaker
                messages[-1]["content"] += "\n" + text
            else:
                messages.append({"role": role, "content": text})
        if len(messages) < 2:
            notes["dropped_fewer_than_two_turns"] += 1
            continue
        records.append({"id": conv_id, "messages": messages})
    return records, dict(notes)
