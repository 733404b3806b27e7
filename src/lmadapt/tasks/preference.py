"""`preference`: which answer to a prompt is better; pairs (chosen / rejected) or K-wise rankings.

Record layouts read (any field names, set in the task section):

- pairs: `{prompt, chosen, rejected}` (TRL's layout; the catalog's dpo-en / dpo-zh);
- LLaMA-Factory's raw DPO files (`dpo_en_demo.json`): `{conversations: [{from, value}], chosen: {from, value},
  rejected: {from, value}}` with `task: {type: preference, prompt: conversations}`;
- rankings: `{prompt, responses: [best, ..., worst]}`, K >= 2 responses, K may differ from prompt to prompt;
  with `scores:` (one number per response, higher is better) the responses are sorted by score, and equal
  scores are ties: no pair is formed between them (a task metric often scores two samples the same).

A prompt is a string (taken as the user turn) or a list of messages ({role, content}, or ShareGPT's
{from, value}); a response is a string, one message, or a conversation whose last turn is the answer.

    records = load_preferences(recipe)["train"]   # validated, normalised: see `preference_records`
    records[0] == {"prompt": [{"role": "user", ...}], "responses": [best, ..., worst], "scores": [...] | None}

Stage rm trains a reward model on them (all C(K,2) pairs of a prompt in one batch element); stage dpo reads
the same records (`pairs_of` lists the (chosen, rejected) pairs a ranking implies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field, model_validator

from ..config.base import Section
from ..config.fields import Name
from ..errors import DataError

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant"}
SHAREGPT_ROLES |= {"assistant": "assistant", "observation": "tool", "function_call": "assistant"}


class PreferenceConfig(Section):
    """Preference data: a prompt with a chosen and a rejected answer, or with K answers ranked best first."""

    type: Literal["preference"] = "preference"
    prompt: Name = Field(
        "prompt",
        description="Field with the prompt: a string, or messages ({role, content} or {from, value}).",
    )
    chosen: Name = Field("chosen", description="Pairs: field with the preferred answer.")
    rejected: Name = Field("rejected", description="Pairs: field with the other answer.")
    responses: Name | None = Field(
        None,
        description="Rankings: field with K >= 2 answers, best first (set this instead of chosen/rejected).",
    )
    scores: Name | None = Field(
        None,
        description="Rankings: field with one score per answer (higher is better); answers are ordered by it "
        "and equal scores form no pair.",
    )
    template: Literal["auto", "model", "alpaca", "plain"] = Field(
        "auto", description="How prompt + answer become text (auto: the model's chat template, else alpaca)."
    )
    system: str | None = Field(None, description="System prompt added to every prompt without one.")
    id: Name | None = Field(None, description="Field with a record id (kept in predictions).")

    @model_validator(mode="after")
    def _pairs_or_rankings(self):
        if self.responses is None and self.scores is not None:
            raise ValueError("scores belongs to rankings: set responses (the field with the K answers) too")
        if self.responses is not None and (self.chosen, self.rejected) != ("chosen", "rejected"):
            raise ValueError("set either responses (rankings) or chosen/rejected (pairs), not both")
        return self

    @property
    def ranked(self) -> bool:
        return self.responses is not None


CONFIG = PreferenceConfig


def record_fields(cfg: PreferenceConfig) -> dict[str, str]:
    """The fields (and kinds) the data reader checks; the shapes themselves are checked by `preference_records`."""
    if cfg.ranked:
        fields = {cfg.prompt: "any", cfg.responses: "any"}
        if cfg.scores:
            fields[cfg.scores] = "scores?"
    else:
        fields = {cfg.prompt: "any", cfg.chosen: "any", cfg.rejected: "any"}
    if cfg.id:
        fields[cfg.id] = "label"
    return fields


def load_preferences(recipe) -> dict[str, list[dict]]:
    """train / eval / test preference records of a recipe (`data:` splits, `max_*` subsets), normalised."""
    from ..data.splits import load_splits

    splits = load_splits(recipe, record_fields(recipe.task))
    return {name: preference_records(records, recipe.task) for name, records in splits.items()}


def preference_records(records: Sequence[Mapping], cfg: PreferenceConfig) -> list[dict]:
    """Normalised records: `{prompt: str | messages, responses: [best..worst], scores: [..] | None, id?}`.

    Pairs become K=2 rankings. A malformed record is a DataError naming its file and line (`record.where`).
    """
    out = []
    for index, record in enumerate(records):
        where = getattr(record, "where", "") or f"record {index}"
        prompt = _prompt(record.get(cfg.prompt), cfg, where)
        if cfg.ranked:
            raw = record.get(cfg.responses)
            if not isinstance(raw, list) or len(raw) < 2:
                raise DataError(f"{where}: field {cfg.responses!r}: expected a list of at least 2 answers")
            responses = [_response(r, f"{cfg.responses}[{i}]", where) for i, r in enumerate(raw)]
        else:
            responses = [_response(record.get(cfg.chosen), cfg.chosen, where)]
            responses.append(_response(record.get(cfg.rejected), cfg.rejected, where))
        scores = None
        if cfg.scores and record.get(cfg.scores):
            scores = [float(s) for s in record[cfg.scores]]
            if len(scores) != len(responses):
                raise DataError(
                    f"{where}: field {cfg.scores!r}: {len(scores)} scores for {len(responses)} answers"
                )
            order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep their order
            responses, scores = [responses[i] for i in order], [scores[i] for i in order]
        row = {"prompt": prompt, "responses": responses, "scores": scores}
        if cfg.id:
            row["id"] = record[cfg.id]
        out.append(row)
    return out


def pairs_of(record: Mapping) -> list[tuple[int, int]]:
    """(better, worse) index pairs a normalised record implies: every i < j, except ties in its scores and
    two answers of the same text (nothing to learn from: the reward cannot tell them apart)."""
    k, scores, answers = len(record["responses"]), record.get("scores"), record["responses"]
    return [
        (i, j) for i in range(k) for j in range(i + 1, k)
        if (scores is None or scores[i] > scores[j]) and answers[i].strip() != answers[j].strip()
    ]  # fmt: skip


def same_answers(record: Mapping) -> bool:
    """Whether two of the record's answers are the same text."""
    texts = [a.strip() for a in record["responses"]]
    return len(set(texts)) < len(texts)


def prompt_messages(prompt: str | list[dict]) -> list[dict]:
    """A normalised prompt as chat messages (a string is the user's turn)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _prompt(value, cfg: PreferenceConfig, where: str):
    field = cfg.prompt
    if isinstance(value, str) and value.strip():
        prompt = value
    elif isinstance(value, list) and value:
        prompt = [_message(m, f"{field}[{i}]", where) for i, m in enumerate(value)]
        if prompt[-1]["role"] != "user":
            raise DataError(f"{where}: field {field!r}: the prompt must end with a user turn")
    else:
        raise DataError(f"{where}: field {field!r}: expected a non-empty string or a list of messages")
    if cfg.system:
        messages = prompt_messages(prompt)
        if messages[0]["role"] != "system":
            prompt = [{"role": "system", "content": cfg.system}, *messages]
    return prompt


def _message(value, field: str, where: str) -> dict:
    """{role, content} or ShareGPT's {from, value} -> {role, content}."""
    if isinstance(value, Mapping):
        role = value.get("role", SHAREGPT_ROLES.get(value.get("from")))
        content = value.get("content", value.get("value"))
        if role in ("system", "user", "assistant", "tool") and isinstance(content, str):
            return {"role": role, "content": content}
    raise DataError(
        f"{where}: field {field!r}: expected a message {{role, content}} or {{from, value}}, got {value!r:.60}"
    )


def _response(value, field: str, where: str) -> str:
    """An answer: a string, one assistant message, or a conversation ending with the assistant's answer."""
    if isinstance(value, list) and value:
        value = value[-1]
    if isinstance(value, Mapping):
        message = _message(value, field, where)
        if message["role"] != "assistant":
            raise DataError(
                f"{where}: field {field!r}: the answer is a {message['role']} turn, not assistant"
            )
        value = message["content"]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {field!r}: expected a non-empty answer (string or message)")
    return value
