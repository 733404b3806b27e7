"""Token-by-token decoding over one KV cache that sequences join and leave at any step (continuous batching).

    batch = DecodeBatch(model, pad_id)
    batch.add([Sequence(prompt_ids, Decoding(max_new_tokens=64), eos_ids, tokenizer)])
    while batch.sequences:
        for seq, delta in batch.step():      # one new token for every sequence; finished ones leave
            print(delta, seq.finish_reason)

Why not `model.generate`: on a CPU the model's matmuls for one token of a 135M model take ~2 ms, while
`generate`'s per-step machinery (logits processors, stopping criteria re-decoding the whole row, cache
bookkeeping) cost tens; and `generate` cannot take a new request into a running batch. Here a step is one
forward of the model over the last token of every row (left-padded rows, explicit position ids, a 2-D
attention mask), then per-row token choice. Rows that finish are cut out of the cache; a row that joins is
prefilled alone and its cache left-padded to the batch's length, so nothing is recomputed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from .kv import RoomyCache, set_layer

__all__ = ["Decoding", "Sequence", "DecodeBatch", "choose_token", "run_sequences"]


@dataclass(frozen=True)
class Decoding:
    """How one sequence is decoded. `seed` None: a fresh random seed (sampling only)."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = 0


class Sequence:
    """One prompt being continued: its new token ids, the text so far (cut at a stop string), and why it ended.

    `finish_reason` is None while running, then "stop" (EOS or a stop string), "length" (max_new_tokens) or
    "cancelled". `take_delta()` hands out the text not handed out yet, holding back a tail that may still turn
    into a stop string or is an incomplete UTF-8 character.
    """

    def __init__(self, prompt_ids: Seq[int], decoding: Decoding, eos_ids: Seq[int], tokenizer):
        self.prompt_ids = list(prompt_ids)
        self.decoding = decoding
        self.eos_ids = frozenset(eos_ids)
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in decoding.stop if s)
        self.new_ids: list[int] = []
        self.text = ""
        self.finish_reason: str | None = None
        self._emitted = 0
        self._safe = 0
        self.generator = None
        if decoding.do_sample:
            seed = decoding.seed if decoding.seed is not None else int.from_bytes(os.urandom(6), "little")
            self.generator = torch.Generator().manual_seed(seed)
        self._seen = None  # token ids the repetition penalty applies to (prompt + new), a tensor

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        if self.finish_reason is None:
            self.finish_reason = "cancelled"

    def push(self, token: int) -> None:
        """Record the chosen token; end the sequence at EOS, a stop string or the token budget."""
        if token in self.eos_ids:
            self.finish_reason = "stop"
            self._safe = len(self.text)
            return
        self.new_ids.append(token)
        full = self.tokenizer.decode(self.new_ids, skip_special_tokens=True)
        cut = _earliest(full, self.stop)
        if cut is not None:
            self.text, self._safe, self.finish_reason = full[:cut], cut, "stop"
            return
        self.text = full
        if len(self.new_ids) >= self.decoding.max_new_tokens:
            self.finish_reason, self._safe = "length", len(full)
            return
        safe = len(full) - _held_back(full, self.stop)
        self._safe = max(self._emitted, safe)

    def take_delta(self) -> str:
        delta = self.text[self._emitted : self._safe]
        self._emitted = max(self._emitted, self._safe)
        return delta


def _earliest(text: str, stop: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stop: tuple[str, ...]) -> int:
    """Characters at the end of `text` not safe to hand out yet: a partial UTF-8 character, or a suffix that
    is the start of a stop string."""
    hold = 0
    while hold < len(text) and text[len(text) - 1 - hold] == "\ufffd":
        hold += 1
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


def choose_token(logits: torch.Tensor, seq: Sequence) -> int:
    """The next token for `seq` from its float32 logits [vocab]: repetition penalty, then greedy argmax, or
    temperature -> top-k -> top-p -> a draw from the sequence's own generator (transformers' order)."""
    d = seq.decoding
    if d.repetition_penalty != 1.0:
        if seq._seen is None:
            seq._seen = torch.tensor(sorted(set(seq.prompt_ids)), dtype=torch.long)
        if seq.new_ids:
            seq._seen = torch.unique(torch.cat([seq._seen, torch.tensor(seq.new_ids[-1:])]))
        picked = logits.index_select(0, seq._seen)
        picked = torch.where(picked < 0, picked * d.repetition_penalty, picked / d.repetition_penalty)
        logits = logits.index_copy(0, seq._seen, picked)
    if not d.do_sample:
        return int(logits.argmax())
    logits = logits / max(d.temperature, 1e-4)  # below that it is argmax anyway, and 1/t must stay finite
    if d.top_k and d.top_k < logits.numel():
        kth = torch.topk(logits, d.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if d.top_p < 1.0:
        ordered, index = torch.sort(logits, descending=True)
        probs = ordered.softmax(-1)
        drop = probs.cumsum(-1) - probs > d.top_p  # keep the fewest tokens whose mass reaches top_p
        drop[0] = False
        logits = logits.index_put((index[drop],), torch.tensor(float("-inf")))
    probs = logits.softmax(-1)
    if not bool(torch.isfinite(probs).all()):  # logits that were inf already: nothing to draw from
        return int(logits.argmax())
    return int(torch.multinomial(probs, 1, generator=seq.generator))


class DecodeBatch:
    """Sequences decoding together over one KV cache (kv.RoomyCache: a DynamicCache with room, rows left-padded)."""

    def __init__(self, model, pad_id: int):
        self.model = model
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.sequences: list[Sequence] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # [rows, cached length], 1 where a real token is cached
        self.positions: torch.Tensor | None = None  # [rows] position id of each row's next token
        self.logits: torch.Tensor | None = (
            None  # [rows, vocab] float32: what each row's next token comes from
        )

    def __len__(self) -> int:
        return len(self.sequences)

    @torch.inference_mode()
    def add(self, seqs: Seq[Sequence]) -> None:
        """Prefill `seqs` (together, left-padded) and merge them into the running batch."""
        if not seqs:
            return
        width = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):  # left padding: every prompt ends where generation starts
            ids[row, width - len(s.prompt_ids) :] = torch.tensor(s.prompt_ids, dtype=torch.long)
            mask[row, width - len(s.prompt_ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = RoomyCache()
        out = self.model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device), cache=cache, use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        logits = out.logits[:, -1, :].float()
        next_positions = mask.sum(-1).to(self.device)
        if not self.sequences:
            self.cache, self.mask, self.positions, self.logits = (
                cache,
                mask.to(self.device),
                next_positions,
                logits,
            )
        else:
            self._merge(cache, mask.to(self.device), next_positions, logits)
        self.sequences.extend(seqs)

    def _merge(self, cache, mask, positions, logits) -> None:
        have, new = self.mask.shape[1], mask.shape[1]
        width = max(have, new)
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)])
            set_layer(old, keys, torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)]))
        self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(mask, width, dim=1)])
        self.positions = torch.cat([self.positions, positions])
        self.logits = torch.cat([self.logits, logits])

    @torch.inference_mode()
    def step(self, emit=None) -> list[tuple[Sequence, str]]:
        """Choose every row's next token, hand (sequence, new text) for each to `emit` (before the next
        forward, so a streamed token is not held back by it), drop finished rows, then run the model over
        the rows left. Returns the deltas (finished rows included, with their last text)."""
        if not self.sequences:
            return []
        plain = [not s.decoding.do_sample and s.decoding.repetition_penalty == 1.0 for s in self.sequences]
        best = self.logits.argmax(-1).tolist() if any(plain) else []  # greedy rows: one argmax for all
        tokens = []
        for i, seq in enumerate(self.sequences):
            if seq.done:  # cancelled from outside: the row leaves below
                tokens.append(self.pad_id)
                continue
            token = best[i] if plain[i] else choose_token(self.logits[i], seq)
            seq.push(token)
            tokens.append(token)
        deltas = [(s, s.take_delta()) for s in self.sequences]
        if emit is not None:
            emit(deltas)
        keep = [i for i, s in enumerate(self.sequences) if not s.done]
        if len(keep) < len(self.sequences):
            self._keep(keep)
            tokens = [tokens[i] for i in keep]
        if self.sequences:
            self._forward(torch.tensor(tokens, dtype=torch.long).unsqueeze(1))
        return deltas

    def drop_cancelled(self) -> list[Sequence]:
        """Cut out rows cancelled from outside (between steps); returns them."""
        gone = [s for s in self.sequences if s.done]
        if gone:
            self._keep([i for i, s in enumerate(self.sequences) if not s.done])
        return gone

    def _keep(self, rows: list[int]) -> None:
        self.sequences = [self.sequences[i] for i in rows]
        if not rows:
            self.cache = self.mask = self.positions = self.logits = None
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        mask = self.mask.index_select(0, index)
        first = int(mask.any(0).nonzero()[0])  # columns no kept row uses are cut off the front
        for layer in self.cache.layers:
            keys = layer.keys.index_select(0, index)[:, :, first:]
            set_layer(layer, keys, layer.values.index_select(0, index)[:, :, first:])
        self.mask = mask[:, first:]
        self.positions = self.positions.index_select(0, index)
        self.logits = self.logits.index_select(0, index)

    def _forward(self, tokens: torch.Tensor) -> None:
        ones = torch.ones((len(self.sequences), 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self.model(
            input_ids=tokens.to(self.device), attention_mask=self.mask,
            position_ids=self.positions.unsqueeze(1), cache=self.cache, use_cache=True,
        )  # fmt: skip
        self.logits = out.logits[:, -1, :].float()
        self.positions = self.positions + 1


def _pad_left(t: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    """`t` padded with zeros at the start of `dim` to `width`."""
    size = t.shape[dim]
    if size == width:
        return t
    shape = list(t.shape)
    shape[dim] = width - size
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def run_sequences(model, pad_id: int, seqs: Seq[Sequence], batch_size: int = 8) -> None:
    """Decode every sequence to its end, at most `batch_size` at a time, shortest prompts first; the place of a
    row that finishes is taken by the next prompt at once (prefilled and merged into the running batch)."""
    order = sorted(seqs, key=lambda s: len(s.prompt_ids))
    batch = DecodeBatch(model, pad_id)
    start = 0
    while start < len(order) or batch.sequences:
        free = max(1, batch_size) - len(batch)
        if free > 0 and start < len(order):
            batch.add(order[start : start + free])
            start += free
        batch.step()
