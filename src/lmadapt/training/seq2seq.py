"""Encoder-decoder (T5 family) training pieces: sft examples (prompt -> encoder, answer -> decoder labels) and
T5's span-corruption objective.

Span corruption (Raffel et al. 2020, T5's `random_spans_noise_mask` and `noise_span_to_unique_sentinel`):
of a block of `n` tokens, round(n * noise_density) are dropped, in round(dropped / mean_span_length) spans
(at least one). Span and gap lengths are random partitions; the block starts with kept text and ends with a
dropped span. The encoder input is the block with each dropped span replaced by one sentinel
(<extra_id_0>, <extra_id_1>, ... in order), then EOS; the decoder target is each dropped span after its
sentinel, then EOS:

    the cat sat on the mat and the dog   ->  inputs  "the <extra_id_0> on the mat <extra_id_1> dog </s>"
                                              targets "<extra_id_0> cat sat <extra_id_1> and the </s>"

Training corrupts each batch afresh in the training step (torch's global RNG, restored on --resume);
held-out blocks are corrupted once, from a seed, so the loss before and after training uses the same spans.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import RecipeError

IGNORE = -100
SENTINEL = "<extra_id_{}>"


# --- sft ------------------------------------------------------------------------------------------------
def source_ids(tokenizer, text: str) -> list[int]:
    """Encoder input ids of `text`, as the tokenizer encodes a source (T5's end with </s>)."""
    return tokenizer(text)["input_ids"]


def target_ids(tokenizer, text: str) -> list[int]:
    """Decoder labels of `text`: its tokens, then EOS (the decoder learns where the answer ends)."""
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def split_last_answer(messages: Sequence[dict]) -> tuple[list[dict], str] | None:
    """(the messages before the last assistant turn, that turn's text); None without one after a prompt."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if not last:
        return None
    return [dict(m) for m in messages[:last]], str(messages[last]["content"])


# --- span corruption ------------------------------------------------------------------------------------
def sentinel_ids(tokenizer, needed: int, name: str = "the model") -> list[int]:
    """Ids of <extra_id_0> .. <extra_id_{needed-1}>; a RecipeError when the tokenizer lacks them."""
    ids = []
    for k in range(needed):
        token = SENTINEL.format(k)
        tid = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(tid, int) or tid == tokenizer.unk_token_id or tid is None:
            raise RecipeError(
                f"task.objective span_corruption: the tokenizer of {name!r} has {k} sentinel tokens "
                f"(<extra_id_0>..); blocks of train.max_length tokens need {needed}: lower train.max_length "
                "or use a T5-family tokenizer"
            )
        ids.append(tid)
    return ids


def noise_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(dropped tokens, dropped spans) for a block of `length` tokens (T5's rounding; at least one of each,
    and at least one kept token per span)."""
    noise = min(max(int(round(length * noise_density)), 1), length - 1)
    spans = max(int(round(noise / mean_span_length)), 1)
    return noise, min(spans, noise, length - noise)


def random_spans_noise_mask(
    length: int, noise_density: float = 0.15, mean_span_length: float = 3.0, generator=None
) -> list[bool]:
    """Which of `length` tokens are dropped: kept and dropped runs alternate, kept first, dropped last."""
    if length < 2:
        raise ValueError("span corruption needs blocks of at least 2 tokens")
    noise, spans = noise_counts(length, noise_density, mean_span_length)
    dropped = _random_partition(noise, spans, generator)
    kept = _random_partition(length - noise, spans, generator)
    mask: list[bool] = []
    for k, d in zip(kept, dropped, strict=True):
        mask += [False] * k + [True] * d
    return mask


def _random_partition(total: int, parts: int, generator) -> list[int]:
    """`total` split into `parts` positive lengths, uniformly over the ways to place the cuts."""
    cuts = sorted((torch.randperm(total - 1, generator=generator)[: parts - 1] + 1).tolist())
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def corrupt_spans(ids: Sequence[int], mask: Sequence[bool], sentinels: Sequence[int], eos_id: int):
    """(encoder input ids, decoder target ids) of `ids` with the `mask`ed spans dropped (see the module doc)."""
    inputs, targets, span, previous = [], [], -1, False
    for token, dropped in zip(ids, mask, strict=True):
        if dropped and not previous:
            span += 1
            inputs.append(sentinels[span])
            targets.append(sentinels[span])
        (targets if dropped else inputs).append(token)
        previous = dropped
    return [*inputs, eos_id], [*targets, eos_id]


class SpanCorrupter:
    """Corrupt blocks of token ids: `corrupter.feature(ids)` -> {input_ids, labels}; `corrupter.batch(
    input_ids, attention_mask)` -> a padded batch of them. `seed` gives it its own generator, else torch's
    global RNG."""

    def __init__(self, tokenizer, sentinels, noise_density=0.15, mean_span_length=3.0, seed=None):
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.sentinels = list(sentinels)
        self.noise_density, self.mean_span_length = noise_density, mean_span_length
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def feature(self, ids: Sequence[int]) -> dict:
        mask = random_spans_noise_mask(len(ids), self.noise_density, self.mean_span_length, self.generator)
        inputs, targets = corrupt_spans(ids, mask, self.sentinels, self.eos_id)
        return {"input_ids": inputs, "labels": targets}

    def batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids.cpu(), attention_mask.cpu(), strict=True)]
        features = [self.feature(r) for r in rows]
        return {k: v.to(input_ids.device) for k, v in pad_seq2seq(features, self.pad_id).items()}


def corrupt_once(features: list[dict], corrupter: SpanCorrupter) -> list[dict]:
    """Held-out blocks corrupted once (with a seeded corrupter)."""
    return [corrupter.feature(f["input_ids"]) for f in features]


def pad_seq2seq(features: list[dict], pad_id: int) -> dict:
    """input_ids (pad) + attention_mask and labels (-100), each padded on the right to its own width."""
    width = max(len(f["input_ids"]) for f in features)
    out = {
        "input_ids": [f["input_ids"] + [pad_id] * (width - len(f["input_ids"])) for f in features],
        "attention_mask": [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features],
    }
    if "labels" in features[0]:
        longest = max(len(f["labels"]) for f in features)
        out["labels"] = [f["labels"] + [IGNORE] * (longest - len(f["labels"])) for f in features]
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


class Seq2SeqCollator:
    """Pads encoder-decoder examples ({input_ids, labels}) with `pad_seq2seq`."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        return pad_seq2seq(features, self.pad_id)
