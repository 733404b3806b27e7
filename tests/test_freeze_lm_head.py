"""`method: freeze` with `lm_head: true`: the LM head trains (alone with `unfreeze_top: 0`), a head weight tied
to the input embeddings stays frozen, and the pretrain stage's head warm-up leaves the encoder untouched."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
)

from lmadapt.config import parse_recipe
from lmadapt.errors import RecipeError
from lmadapt.methods import apply_method
from lmadapt.methods.freeze import FreezeMethod
from lmadapt.stages import run_stage
from lmadapt.utils.io import write_jsonl

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


def test_pretrain_head_warm_up_leaves_the_encoder_untouched(tmp_path):
    """minilm-l6 ships no MLM head: the warm-up trains the fresh one, the encoder is saved bit for bit."""
    words = [f"w{i}" for i in range(60)]
    tokenizer = BertTokenizerFast(
        vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words])}
    )
    encoder = tmp_path / "encoder"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **SMALL)).save_pretrained(
        encoder
    )
    tokenizer.save_pretrained(encoder)
    for name, n in (("train", 60), ("eval", 10)):
        rows = [{"id": i, "text": " ".join(words[(i + j) % 20] for j in range(12)) + " ."} for i in range(n)]
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
    recipe = parse_recipe(
        {
            "model": str(encoder),
            "task": {"type": "lm", "objective": "mlm", "text": ["text"], "pseudo_perplexity_examples": 0},
            "data": {
                "train": str(tmp_path / "train.jsonl"),
                "eval": str(tmp_path / "eval.jsonl"),
                "test": None,
            },
            "method": {"type": "freeze", "unfreeze_top": 0, "lm_head": True},
            "stage": "pretrain",
            "train": {
                "max_steps": 20,
                "lr": 1e-2,
                "batch_size": 8,
                "max_length": 32,
                "seed": 0,
                "num_threads": 1,
            },
            "eval": {"every": "no"},
            "output": str(tmp_path / "run"),
        }
    )
    run = run_stage(recipe)
    saved = load_file(str(run / "model" / "model.safetensors"))
    original = load_file(str(encoder / "model.safetensors"))
    for key, value in original.items():
        assert torch.equal(saved[f"bert.{key}"], value), key
    assert "cls.predictions.transform.dense.weight" in saved
    log = (run / "log.txt").read_text()
    assert "method freeze: " in log
    final = __import__("json").loads((run / "metrics.json").read_text())["final"]["eval"]
    assert final["mlm_loss"] < final["mlm_loss_before"]
