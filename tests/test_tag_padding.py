"""Token-level heads read each row's outputs from its start, so their tokenizer must pad on the right, even
where the model's own tokenizer pads on the left (Gemma 3's, as the catalog's gemma3-270m ships it)."""

from __future__ import annotations

import numpy as np

from lmadapt.config import parse_recipe
from lmadapt.tasks import build_model, get_task, run_inference
from tiny_lm import save_tiny_gemma3


def test_left_padding_tokenizer_gives_the_same_tags_batched_as_alone(tmp_path):
    save_tiny_gemma3(tmp_path, padding_side="left")
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
