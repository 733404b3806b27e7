"""Token-level heads read each row's outputs from its start, so their tokenizer must pad on the right, even
where the model's own tokenizer pads on the left (Gemma 3's, as the catalog's gemma3-270m ships it)."""

from __future__ import annotations

import numpy as np
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from lmadapt.config import parse_recipe
from lmadapt.tasks import build_model, get_task, run_inference
from tiny_lm import tiny_tokenizer


def test_left_padding_tokenizer_gives_the_same_tags_batched_as_alone(tmp_path):
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
        sliding_window=64, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    recipe = parse_recipe(
        {"model": str(tmp_path), "task": {"type": "tag", "labels": ["O", "B-LOC", "I-LOC"]},
         "method": {"type": "full"}, "data": {"train": "unused.jsonl"}}
    )  # fmt: skip
    task = get_task(recipe.task)
    task.fit_labels([])
    model, tokenizer = build_model(recipe.model, task)
    assert tokenizer.padding_side == "right"
    records = [
        {"tokens": ["the", "cat", "sat", "on", "the", "mat", "today"]},
        {"tokens": ["hello"]},
        {"tokens": ["a", "b"]},
    ]
    encoded = task.encode(records, tokenizer, 32, with_gold=False)
    collator = task.collator(tokenizer)
    batched = run_inference(model, encoded.features, collator, batch_size=3)
    alone = [run_inference(model, [f], collator, batch_size=1)[0] for f in encoded.features]
    for b, a in zip(batched, alone, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5)
    assert task.decode(batched, encoded, 3) == task.decode(alone, encoded, 3)
