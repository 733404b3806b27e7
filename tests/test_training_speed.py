"""Speed levers keep the maths: chunked loss == the model's loss (value and gradients), bf16 storage of frozen
weights is undone exactly, per-batch packing keeps the batch loss, and a run with every lever still learns."""

from __future__ import annotations

import json

import pytest
import torch

from lmadapt.config import parse_recipe
from lmadapt.stages.sft import SftCollator, build_examples
from lmadapt.training.loss import causal_lm_loss_sum
from lmadapt.training.precision import frozen_in_bf16, frozen_linear_weights
from test_sft import PAIRS, sft_recipe, tiny_dir  # noqa: F401  (tiny_dir is a fixture)
from tiny_lm import tiny_llama, tiny_tokenizer


def features(tok, n=8):
    records = [{"instruction": i, "input": "", "output": o} for i, o in PAIRS[:n]]
    task = parse_recipe({"model": "x", "task": {"type": "sft"}}).task
    return build_examples(records, tok, "model", 64, task)[0]


@pytest.mark.parametrize("chunk", [5, 1024])
def test_chunked_loss_equals_model_loss_and_gradients(chunk):
    tok = tiny_tokenizer()
    model = tiny_llama(tok).train()
    batch = SftCollator(tok.pad_token_id)(features(tok))
    ref = model(**batch).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.get_decoder()(**inputs).last_hidden_state
    total, n = causal_lm_loss_sum(hidden, model.lm_head.weight, batch["labels"], chunk)
    loss = total / n
    loss.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for name, p in model.named_parameters():  # the head weight and every layer below it
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_frozen_weights_are_bf16_inside_and_exact_after(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(config)
    model.requires_grad_(False)
    model.model.layers[0].self_attn.q_proj.weight.requires_grad_(True)  # one trainable linear
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = frozen_linear_weights(model)
    assert "lm_head.weight" not in frozen  # tied to the embedding: stays fp32
    assert "model.layers.0.self_attn.q_proj.weight" not in frozen
    assert "model.layers.0.mlp.down_proj.weight" in frozen
    stash = tmp_path / "stash.safetensors"
    with frozen_in_bf16(model, stash) as n:
        assert n == len(frozen)
        assert model.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
        assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
        assert model.model.embed_tokens.weight.dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[name]), name
    assert not stash.exists()


def test_batch_packing_keeps_the_batch_loss_with_less_padding():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    task = parse_recipe({"model": "x", "task": {"type": "sft"}}).task
    records = [{"instruction": "count", "input": "", "output": "one two three " * k} for k in (1, 9, 2, 1)]
    feats = build_examples(records, tok, "model", 96, task)[0]
    plain = SftCollator(tok.pad_token_id)(feats)
    packed = SftCollator(tok.pad_token_id, pack_width=96)(feats)
    assert packed["input_ids"].numel() < 0.7 * plain["input_ids"].numel()
    same = features(tok)  # examples of equal length: packing would only add padding, so rows stay as they are
    assert SftCollator(tok.pad_token_id, pack_width=96)(same)["input_ids"].numel() <= (
        SftCollator(tok.pad_token_id)(same)["input_ids"].numel()
    )
    assert int((packed["labels"] != -100).sum()) == int((plain["labels"] != -100).sum())
    with torch.no_grad():
        assert model(**packed, use_cache=False).loss.item() == pytest.approx(
            model(**plain).loss.item(), abs=1e-5
        )


def test_every_lever_matches_the_plain_loss_curve(tmp_path, tiny_dir):  # noqa: F811
    """Same data order, same steps: batch packing + chunked loss give the plain run's loss curve, and bf16
    (autocast, frozen weights in bf16) stays within bf16 noise of it while the loss still drops."""
    from lmadapt.stages.sft import run

    curves = {}
    for name, train in {
        "plain": {"packing": "off", "chunked_loss": False, "group_by_length": False},
        "levers": {"packing": "batch", "chunked_loss": True, "loss_chunk": 16, "group_by_length": False},
        "bf16": {"packing": "batch", "chunked_loss": True, "bf16": True, "group_by_length": False},
    }.items():
        (tmp_path / name).mkdir()
        recipe = sft_recipe(tmp_path / name, tiny_dir, train=train | {"epochs": 4, "logging_steps": 1})
        metrics = json.loads((run(recipe) / "metrics.json").read_text())
        curves[name] = [h["loss"] for h in metrics["history"] if h["split"] == "train" and "loss" in h]
        assert metrics["final"]["eval"]["loss"] < 0.8 * metrics["final"]["eval"]["loss_before"]
    assert len(curves["plain"]) == len(curves["levers"]) == len(curves["bf16"]) >= 8
    assert curves["levers"] == pytest.approx(curves["plain"], rel=1e-3)
    assert curves["bf16"] == pytest.approx(curves["plain"], rel=0.05)


def test_compiled_layers_keep_the_loss_curve_and_are_gone_after(tmp_path, tiny_dir):  # noqa: F811
    """`train.compile` compiles each decoder layer while training: same loss curve; plain forwards after."""
    from lmadapt.stages.sft import run
    from lmadapt.training.compile import compiled_layers, layer_stack

    model = tiny_llama(tiny_tokenizer())
    stack = layer_stack(model)
    assert stack is model.model.layers
    with compiled_layers(model) as n:
        assert n == len(stack) and all("forward" in vars(layer) for layer in stack)
    assert not any("forward" in vars(layer) for layer in stack)

    curves = {}
    for name, extra in {"eager": {}, "compiled": {"compile": True}}.items():
        (tmp_path / name).mkdir()
        train = {"packing": "batch", "group_by_length": False, "epochs": 2, "logging_steps": 1} | extra
        metrics = json.loads(
            (run(sft_recipe(tmp_path / name, tiny_dir, train=train)) / "metrics.json").read_text()
        )
        curves[name] = [h["loss"] for h in metrics["history"] if h["split"] == "train" and "loss" in h]
    assert len(curves["compiled"]) >= 4
    assert curves["compiled"] == pytest.approx(curves["eager"], rel=1e-3)
