"""Prompt templates for decoder models: records -> chat messages -> text -> token ids + assistant-only labels.

Templates: "model" (the tokenizer's own chat template), "alpaca" and "plain" (named, for models without one);
"auto" picks "model" when the tokenizer has a chat template, else "alpaca".

The label mask is built by rendering the conversation incrementally: for each assistant turn, the prompt up to
it (with the generation prompt) and the conversation including it are rendered; the text between the two is
that turn's answer. The conversation is tokenized segment by segment (prompt, answer, next prompt, ...), so the
answer tokens are exactly what the model must produce after the prompt the inference engine feeds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .errors import DataError, RecipeError

TEMPLATES = ("auto", "model", "alpaca", "plain")
ALPACA_SYSTEM = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
IGNORE = -100  # label of tokens the loss skips


def resolve_template(tokenizer, template: str = "auto") -> str:
    """The concrete template name: "auto" -> "model" if the tokenizer has a chat template, else "alpaca"."""
    if template not in TEMPLATES:
        raise RecipeError(f"template {template!r}: choose one of {', '.join(TEMPLATES)}")
    has_own = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        return "model" if has_own else "alpaca"
    if template == "model" and not has_own:
        raise RecipeError("template 'model': this tokenizer has no chat template; use 'alpaca' or 'plain'")
    return template


def to_messages(record: Mapping, system: str | None = None) -> list[dict]:
    """An Alpaca record ({instruction, input, output, system?, history?}) or a {messages} record -> messages.

    `system` is used when the record has no system prompt of its own.
    """
    if "messages" in record:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    else:
        messages = []
        for user, assistant in record.get("history") or []:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        prompt = record["instruction"]
        if record.get("input"):
            prompt = f"{prompt}\n\n{record['input']}"
        messages.append({"role": "user", "content": prompt})
        if record.get("output") is not None:
            messages.append({"role": "assistant", "content": record["output"]})
        if record.get("system"):
            messages.insert(0, {"role": "system", "content": record["system"]})
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def render(tokenizer, messages: Sequence[Mapping], template: str, add_generation_prompt: bool) -> str:
    """Conversation text under a concrete template ("model", "alpaca" or "plain")."""
    if template == "model":
        return tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
    eos = tokenizer.eos_token or ""
    if template == "alpaca":
        system, head, user_tag, bot_tag, sep = (
            ALPACA_SYSTEM,
            "",
            "### Instruction:\n",
            "### Response:\n",
            "\n\n",
        )
    elif template == "plain":
        system, head, user_tag, bot_tag, sep = None, "", "User: ", "Assistant: ", "\n"
    else:
        raise RecipeError(f"template {template!r}: expected 'model', 'alpaca' or 'plain'")
    parts = [head]
    rest = list(messages)
    if rest and rest[0]["role"] == "system":
        system = rest.pop(0)["content"]
    if system:
        parts.append(system + sep)
    for m in rest:
        if m["role"] == "user":
            parts.append(f"{user_tag}{m['content']}{sep}")
        elif m["role"] == "assistant":
            parts.append(f"{bot_tag}{m['content']}{eos}{sep}")
        else:
            raise DataError(f"message role {m['role']!r}: expected system, user or assistant")
    if add_generation_prompt:
        parts.append(bot_tag)
    return "".join(parts)


def render_prompt(tokenizer, messages: Sequence[Mapping], template: str = "auto") -> str:
    """The text a model continues to answer the last user message."""
    return render(tokenizer, messages, resolve_template(tokenizer, template), add_generation_prompt=True)


def encode_text(tokenizer, text: str, first: bool = True) -> list[int]:
    """Token ids of `text`; the first segment gets the tokenizer's BOS unless the text already starts with it."""
    if not first:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token
    ids = tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
    eos_id = tokenizer.eos_token_id
    if ids and eos_id is not None and ids[-1] == eos_id and not text.endswith(tokenizer.eos_token or "\0"):
        ids = ids[:-1]  # some tokenizers append EOS by default: a prompt must not end the sequence
    return ids


def encode_chat(
    tokenizer, messages: Sequence[Mapping], template: str = "auto", max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """(input_ids, labels): labels equal the ids on every assistant turn's tokens and -100 elsewhere.

    Raises DataError when the template does not render prefixes consistently (the mask would be wrong).
    """
    template = resolve_template(tokenizer, template)
    segments: list[tuple[str, bool]] = []  # (text, is_answer)
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], template, add_generation_prompt=True)
        full = render(tokenizer, messages[: i + 1], template, add_generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise DataError(
                f"template {template!r} does not render the conversation prefix by prefix (turn {i}); "
                "use task.template: alpaca or plain"
            )
        segments += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    whole = render(tokenizer, messages, template, add_generation_prompt=False)
    if not whole.startswith(done):
        raise DataError(f"template {template!r} does not render the conversation prefix by prefix")
    segments.append((whole[len(done) :], False))
    input_ids: list[int] = []
    labels: list[int] = []
    for text, is_answer in segments:
        if not text:
            continue
        ids = encode_text(tokenizer, text, first=not input_ids)
        input_ids += ids
        labels += ids if is_answer else [IGNORE] * len(ids)
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return input_ids, labels


def fit_fields(
    record: Mapping, fields: Sequence[str], tokenizer, measure: Callable[[Mapping], int], max_length: int
) -> tuple[dict, str]:
    """`record` with its input `fields` shortened so that `measure(record)` (its token count) <= max_length.

    Only `fields` are cut, never the instruction or the answer: the last non-empty field first, at a token
    boundary (a character a byte-level BPE splits over several tokens goes whole), and emptied before an
    earlier field is cut. Returns (record, status): "fits" (unchanged), "cut" (an input was shortened) or
    "too_long": even with every input empty it does not fit, and the record comes back unchanged.
    """
    record = dict(record)
    over = measure(record) - max_length
    if over <= 0:
        return record, "fits"
    bare = {**record, **{f: "" for f in fields if record.get(f)}}
    if bare == record or measure(bare) > max_length:
        return record, "too_long"
    while over > 0:
        field = next(f for f in reversed(fields) if record.get(f))
        text = str(record[field])
        record[field] = _cut_tokens(tokenizer, text, over)
        over = measure(record) - max_length
    return record, "cut"


def _cut_tokens(tokenizer, text: str, count: int) -> str:
    """`text` without its last `count` tokens (at least one character shorter; "" when it has no more)."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = [start for start, _ in enc["offset_mapping"]]
    else:  # a Python tokenizer has no offsets: cut in proportion
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        starts = [len(text) * i // max(n, 1) for i in range(n)]
    keep = len(starts) - count
    cut = starts[keep] if keep > 0 else 0
    return text[: min(cut, len(text) - 1)]
