"""Generation for encoder-decoder models (T5 family) through transformers' `generate`.

The engine's own continuous-batching loop (decode.py) is decoder-only; for an encoder-decoder model
`generate` runs the encoder once per batch of prompts, keeps its output (and the cross-attention keys and
values, in an `EncoderDecoderCache`) and decodes step by step with the decoder's KV cache. Greedy, sampling
(temperature, top-k, top-p), beam search, repetition penalty (on the generated tokens: the prompt is the
encoder's, not the decoder's) and stop strings are the engine's options. Batches pad on the right (the
encoder sees each prompt whole; the attention mask hides the padding), prompts sorted by length. A sampled
prompt is decoded alone, from torch's RNG seeded `seed + i` (restored afterwards), so its output does not
depend on which other prompts were asked with it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["generate_seq2seq"]


def generate_seq2seq(
    model,
    tokenizer,
    encoded: Sequence[list[int]],
    eos_ids: list[int],
    *,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    top_k: int,
    num_beams: int,
    repetition_penalty: float,
    stop: list[str],
    batch_size: int,
    seed: int,
    stopping=None,
) -> list[str]:
    """The new text for each prompt (encoder input ids), cut at the first stop string."""
    import torch
    from transformers import GenerationConfig

    options = {"do_sample": do_sample, "num_beams": num_beams, "repetition_penalty": repetition_penalty}
    if do_sample:
        options |= {"temperature": temperature, "top_p": top_p, "top_k": top_k or None}
    start = model.generation_config.decoder_start_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_ids,
        decoder_start_token_id=start if start is not None else model.config.decoder_start_token_id, **options,
    )  # fmt: skip
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    step = 1 if do_sample else max(1, batch_size)
    outputs = [""] * len(encoded)
    for first in range(0, len(order), step):
        rows = order[first : first + step]
        ids, mask = _right_padded([encoded[i] for i in rows], tokenizer.pad_token_id)
        device = next(model.parameters()).device
        with torch.inference_mode(), torch.random.fork_rng(devices=_rng_devices(device)):
            if do_sample:
                torch.manual_seed(seed + rows[0])
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                stopping_criteria=stopping,
            )  # fmt: skip
        for row, i in enumerate(rows):  # each output starts with the decoder start token
            text = tokenizer.decode(out[row, 1:], skip_special_tokens=True)
            outputs[i] = _cut(text, stop)
    return outputs


def _right_padded(rows: list[list[int]], pad: int):
    import torch

    width = max(1, *(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[k, : len(r)] = 1
    return ids, mask


def _rng_devices(device) -> list:
    return [device.index or 0] if device.type == "cuda" else []


def _cut(text: str, stop: list[str]) -> str:
    end = len(text)
    for s in stop:
        i = text.find(s)
        if s and i >= 0:
            end = min(end, i)
    return text[:end]
