"""`method: freeze` with `lm_head: true`: the LM head trains (alone with `unfreeze_top: 0`), a head weight tied
to the input embeddings stays frozen, and the pretrain stage's head warm-up leaves the encoder untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    BertConfig,
    BertForMaskedLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from lmadapt.errors import RecipeError
from lmadapt.methods import apply_method
from lmadapt.methods.freeze import FreezeMethod
from lmadapt.stages import run_stage
from test_pretrain import recipe as pretrain_recipe
from test_pretrain import (
    tiny_bert,  # noqa: F401  (the fixture: a tiny BertModel, no MLM head)
    write_corpus,
)

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def tiny_mlm() -> BertForMaskedLM:
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=100, max_position_embeddings=64, **SMALL))


def tiny_llama(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100, max_position_embeddings=64, num_key_value_heads=2, tie_word_embeddings=tied, **SMALL
    )
    return LlamaForCausalLM(config)


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def train_steps(model, steps: int = 3) -> None:
    """Adam without weight decay: a parameter with no gradient stays bit-identical."""
    ids = torch.randint(1, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
        opt.step()


def test_mlm_head_alone_trains_and_the_tied_decoder_stays_frozen():
    model = apply_method(tiny_mlm(), FreezeMethod(lm_head=True), "masked_lm")
    names = trainable(model)
    assert names == {
        "cls.predictions.bias",
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias",
    }
    embeddings = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is embeddings and not embeddings.requires_grad
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]) == (name not in names), name


@pytest.mark.parametrize("tied", [True, False])
def test_causal_lm_head_with_the_top_layer(tied):
    model = apply_method(tiny_llama(tied), FreezeMethod(unfreeze_top=1, lm_head=True), "causal_lm")
    names = trainable(model)
    assert ("lm_head.weight" in names) == (not tied)
    assert any(".layers.1." in n for n in names) and not any(".layers.0." in n for n in names)
    assert "model.embed_tokens.weight" not in names


def test_untied_causal_lm_head_alone():
    model = apply_method(tiny_llama(False), FreezeMethod(lm_head=True), "causal_lm")
    assert trainable(model) == {"lm_head.weight"}


def test_nothing_to_train_is_still_a_recipe_error():
    with pytest.raises(RecipeError, match="method 'freeze'.*unfreeze_top must be >= 1.*lm_head"):
        apply_method(tiny_mlm(), FreezeMethod(), "masked_lm")


def test_pretrain_head_warm_up_leaves_the_encoder_untouched(tmp_path, tiny_bert):  # noqa: F811
    """minilm-l6 ships no MLM head: the warm-up trains the fresh one, the encoder is saved bit for bit."""
    task = {"objective": "mlm", "pseudo_perplexity_examples": 0}
    head_only = {"type": "freeze", "unfreeze_top": 0, "lm_head": True}
    data = write_corpus(tmp_path, n_train=60, n_eval=10)
    run = run_stage(pretrain_recipe(tmp_path, tiny_bert, task, data, head_only, max_steps=20, lr=1e-2))
    saved = load_file(str(run / "model" / "model.safetensors"))
    original = load_file(str(Path(tiny_bert) / "model.safetensors"))
    for key, value in original.items():
        assert torch.equal(saved[f"bert.{key}"], value), key
    assert "cls.predictions.transform.dense.weight" in saved
    log = (run / "log.txt").read_text()
    assert "method freeze: " in log
    final = json.loads((run / "metrics.json").read_text())["final"]["eval"]
    assert final["mlm_loss"] < final["mlm_loss_before"]
