"""A reward model: any causal LM (or encoder) with a scalar head; the score of prompt + answer is one number.

    model, tokenizer = build_reward_model("smollm2-135m-instruct")        # *ForSequenceClassification, 1 label
    ids = encode_answer(tokenizer, prompt, answer, "auto", max_length=512)
    batch = pad_rows([ids, ...], tokenizer.pad_token_id, side="right")
    scores = reward_scores(model, batch["input_ids"], batch["attention_mask"])   # one float per row

Decoders are scored at the **last real token**, found from the attention mask, never from the pad id:
transformers' own pooling looks for the last token that is not `pad_token_id`, which is wrong when the pad
token is the EOS token that ends every answer (SmolLM2, Llama). Position ids come from the mask too, so a
row scores the same under left and right padding. Encoders (BERT) keep their own [CLS] pooling (pad right).
With LoRA the head is in `modules_to_save` (lmadapt.methods, task type seq_cls): it is saved with the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import LmadaptError
from ..templates import encode_chat

__all__ = [
    "build_reward_model",
    "encode_answer",
    "pad_rows",
    "last_token_index",
    "reward_scores",
    "score_texts",
    "load_reward_run",
]


def build_reward_model(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer): the pretrained model with a fresh one-output head; the pad id is set."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..sources import resolve_model

    where = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(  # a classifier head of another size is
            where, num_labels=1, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True,  # replaced by a fresh one-output head
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        raise LmadaptError(f"{name_or_path}: cannot load it with a scalar (reward) head: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def encode_answer(tokenizer, prompt, answer: str, template: str, max_length: int) -> list[int]:
    """Token ids of prompt + answer as one conversation (the assistant's turn ends it).

    A string prompt is the user's turn. Longer than `max_length`: the start is cut, so the answer's end, where
    the score is read, stays."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    ids, _ = encode_chat(tokenizer, [*messages, {"role": "assistant", "content": answer}], template)
    return ids[-max_length:]


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> dict:
    """{input_ids, attention_mask} tensors of token rows padded to the longest, on `side`."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        at = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, at] = torch.tensor(list(row), dtype=torch.long)
        mask[i, at] = 1
    return {"input_ids": ids, "attention_mask": mask}


def last_token_index(attention_mask):
    """Index of each row's last real token (the rightmost 1), whichever side the padding is on."""
    import torch

    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


def _score_head(model):
    """The decoder's `score` head (through a PEFT wrapper); None for encoders, which pool on their own."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "score", None)


def reward_scores(model, input_ids, attention_mask):
    """One float score per row (a 1-D tensor that carries gradients)."""
    import torch

    head = _score_head(model)
    if head is None:  # encoder: [CLS] pooling + classifier; pad on the right
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, output_hidden_states=True
    )
    last = last_token_index(attention_mask)
    hidden = out.hidden_states[-1][torch.arange(len(last), device=last.device), last]
    weight = next(head.parameters())
    return head(hidden.to(weight.dtype))[:, 0].float()  # under bf16 autocast the states may be bf16


def score_texts(model, tokenizer, prompts, answers, template: str, max_length: int, batch_size: int = 8):
    """Scores of (prompt, answer) pairs, in order (batched, no gradients)."""
    import torch

    rows = [
        encode_answer(tokenizer, p, a, template, max_length) for p, a in zip(prompts, answers, strict=True)
    ]
    device = next(model.parameters()).device
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = pad_rows(rows[start : start + batch_size], tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            scores += reward_scores(model, batch["input_ids"], batch["attention_mask"]).tolist()
    return scores


def load_reward_run(run_dir: str | Path, trust_remote_code: bool = False):
    """(model in eval mode, tokenizer, recipe) of a complete stage-rm run: base model + its trained head."""
    from ..methods import load_trained
    from ..runs import RunDir

    run = RunDir.open_complete(run_dir, "a reward from a reward model")
    recipe = run.read_config(trust_remote_code)
    if recipe.stage != "rm":
        raise LmadaptError(f"{run_dir}: a {recipe.stage} run; a reward needs a run of stage rm")
    if not ((run.path / "model").is_dir() or (run.path / "adapter").is_dir()):
        raise LmadaptError(f"{run_dir}: the rm run saved no trained weights (it trained nothing)")
    model, tokenizer = build_reward_model(
        recipe.model.name, recipe.model.dtype, recipe.model.trust_remote_code
    )
    model = load_trained(model, recipe.method, run.path, "seq_cls")
    return model.eval(), tokenizer, recipe
