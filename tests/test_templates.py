"""Templates: records -> messages -> text, and a loss mask that covers exactly the assistant tokens."""

from __future__ import annotations

import re

import pytest

from lmadapt.errors import DataError, RecipeError
from lmadapt.templates import (
    ALPACA_SYSTEM,
    IGNORE,
    encode_chat,
    render,
    render_prompt,
    resolve_template,
    to_messages,
)
from tiny_lm import tiny_tokenizer

CONV = [
    {"role": "system", "content": "you are a helpful bot"},
    {"role": "user", "content": "hello how are you"},
    {"role": "assistant", "content": "I am fine, thank you"},
    {"role": "user", "content": "what is the capital of france?"},
    {"role": "assistant", "content": "paris"},
]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def answer_spans(text: str, pattern: str) -> list[tuple[int, int]]:
    """Character spans of the assistant answers in rendered text, found independently of the encoder."""
    return [m.span(1) for m in re.finditer(pattern, text, flags=re.S)]


def check_mask_token_by_token(tok, ids, labels, text, spans):
    """Every token is labelled iff it lies inside an answer span; decoding the tokens rebuilds the text."""
    assert tok.decode(ids) == text
    pos = 0
    labelled_text = ""
    for i, (tid, lab) in enumerate(zip(ids, labels, strict=True)):
        piece = tok.decode([tid])
        inside = any(a <= pos and pos + len(piece) <= b for a, b in spans)
        assert (lab == tid) == inside, f"token {i} {piece!r} at {pos}: labelled={lab != IGNORE}"
        assert lab in (tid, IGNORE)
        if inside:
            labelled_text += piece
        pos += len(piece)
    assert labelled_text == "".join(text[a:b] for a, b in spans)


def test_chatml_mask_covers_exactly_every_assistant_turn(tok):
    ids, labels = encode_chat(tok, CONV, "model")
    text = render(tok, CONV, "model", add_generation_prompt=False)
    spans = answer_spans(text, r"<\|im_start\|>assistant\n(.*?<\|im_end\|>\n)")
    assert len(spans) == 2
    check_mask_token_by_token(tok, ids, labels, text, spans)
    assert "I am fine, thank you<|im_end|>\n" in tok.decode(
        [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE]
    )


def test_alpaca_and_plain_masks_token_by_token(tok):
    for template, pattern in (
        ("alpaca", r"### Response:\n(.*?</s>\n\n)"),
        ("plain", r"Assistant: (.*?</s>\n)"),
    ):
        ids, labels = encode_chat(tok, CONV, template)
        text = render(tok, CONV, template, add_generation_prompt=False)
        spans = answer_spans(text, pattern)
        assert [text[a:b] for a, b in spans][1].startswith("paris</s>")
        check_mask_token_by_token(tok, ids, labels, text, spans)


def test_prompt_is_prefix_of_training_text(tok):
    # what the engine feeds at inference is exactly what preceded the answer in training
    for template in ("model", "alpaca", "plain"):
        prompt = render_prompt(tok, CONV[:4], template)
        full = render(tok, CONV, template, add_generation_prompt=False)
        assert full.startswith(prompt) and full[len(prompt) :].startswith("paris")


def test_alpaca_records_become_messages():
    record = {
        "instruction": "Add",
        "input": "1 2",
        "output": "3",
        "history": [["hi", "hello"]],
        "system": "S",
    }
    assert to_messages(record) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "Add\n\n1 2"},
        {"role": "assistant", "content": "3"},
    ]
    assert to_messages({"instruction": "Go", "input": "", "output": "ok"}, system="sys")[0] == {
        "role": "system",
        "content": "sys",
    }


def test_auto_template_and_default_alpaca_system():
    plain_tok = tiny_tokenizer(chat_template=None)
    assert resolve_template(plain_tok, "auto") == "alpaca"
    assert resolve_template(tiny_tokenizer(), "auto") == "model"
    with pytest.raises(RecipeError, match="no chat template"):
        resolve_template(plain_tok, "model")
    text = render_prompt(plain_tok, [{"role": "user", "content": "hi"}])
    assert text == f"{ALPACA_SYSTEM}\n\n### Instruction:\nhi\n\n### Response:\n"


def test_truncation_and_inconsistent_template(tok):
    ids, labels = encode_chat(tok, CONV, "model", max_length=10)
    assert len(ids) == len(labels) == 10
    last_only = "{{ messages[-1]['content'] }}"  # renders only the last message: prefixes are not kept
    bad = tiny_tokenizer(chat_template=last_only)
    with pytest.raises(DataError, match="prefix"):
        encode_chat(bad, CONV, "model")
