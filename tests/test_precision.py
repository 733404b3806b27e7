"""Generation precision: bf16 matmuls with float32 activations and a float32 output projection (precision.py)."""

from __future__ import annotations

import pytest
import torch

from lmadapt.errors import LmadaptError
from lmadapt.infer.engine import load_engine
from lmadapt.infer.precision import RERANK, Bf16Head, Bf16Linear, for_generation, generation_precision
from tiny_lm import save_tiny, tiny_llama, tiny_tokenizer


def test_bf16_linear_rounds_only_the_matmul_operands():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(3, 64)
    expected = x.bfloat16().float() @ layer.weight.detach().bfloat16().float().T + layer.bias.detach()
    fp32 = layer(x).detach()
    for_generation(torch.nn.Sequential(layer), "bfloat16")
    assert isinstance(layer, Bf16Linear) and layer.weight.dtype == torch.bfloat16
    y = layer(x)
    assert y.dtype == torch.float32 and layer.bias.dtype == torch.float32
    # the product of bf16 operands accumulated in fp32, rounded to bf16 once: within bf16's half-ulp of it
    assert torch.allclose(y, expected, rtol=2**-8, atol=1e-3)
    assert not torch.equal(y, fp32)  # it is not float32 arithmetic


def test_the_reordered_weight_gives_f_linear_s_numbers_and_follows_in_place_changes():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48, bias=False)
    for_generation(torch.nn.Sequential(layer), "bfloat16")
    for rows in (1, 5):  # decode and prefill shapes
        x = torch.randn(2, rows, 64)
        assert torch.equal(layer(x), torch.nn.functional.linear(x.bfloat16(), layer.weight).float())
    with torch.no_grad():
        layer.weight.mul_(-1)  # an in-place change (e.g. an adapter merged): the reordered copy is re-made
    x = torch.randn(1, 64)
    assert torch.equal(layer(x), torch.nn.functional.linear(x.bfloat16(), layer.weight).float())


def test_the_head_s_best_logits_are_float32_s_and_the_rest_bf16_s():
    torch.manual_seed(0)
    model = tiny_llama(tiny_tokenizer())
    head = model.lm_head
    x = torch.randn(4, 3, head.in_features)
    fp32 = head(x).detach()
    assert head.out_features > 4 * RERANK
    for_generation(model, "bfloat16")
    assert type(head) is Bf16Head and head.weight.dtype == torch.float32
    with torch.no_grad():
        y = head(x)
    approx = torch.nn.functional.linear(x.bfloat16(), head.weight.bfloat16()).float()
    best = approx.topk(RERANK, dim=-1).indices  # bf16's best of each row: recomputed in float32
    assert torch.allclose(y.gather(-1, best), fp32.gather(-1, best), rtol=0, atol=1e-5)
    assert not torch.allclose(approx.gather(-1, best), fp32.gather(-1, best), rtol=0, atol=1e-5)
    assert torch.equal(y.argmax(-1), fp32.argmax(-1))
    rest = torch.ones_like(y, dtype=torch.bool).scatter(-1, best, False)
    assert torch.equal(y[rest], approx[rest])  # the others: bf16's


def test_the_output_projection_and_activations_stay_float32():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    ids = torch.tensor([tok("the cat sat on the mat")["input_ids"]])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    for_generation(model, "bfloat16")
    assert generation_precision(model) == "bfloat16"
    assert model.lm_head.weight.dtype == torch.float32 and type(model.lm_head) is Bf16Head
    assert model.model.embed_tokens.weight.dtype == torch.float32
    assert all(m.weight.dtype == torch.bfloat16 for m in model.modules() if isinstance(m, Bf16Linear))
    assert sum(isinstance(m, Bf16Linear) for m in model.modules()) == 2 * 7  # q k v o gate up down per layer
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, ref, atol=0.05) and not torch.equal(logits, ref)


def test_load_engine_dtype_choices(tmp_path):
    folder = save_tiny(tmp_path / "tiny")
    exact = load_engine(str(folder), dtype="float32")
    assert generation_precision(exact.model) == "float32"
    half = load_engine(str(folder), dtype="bfloat16")
    assert generation_precision(half.model) == "bfloat16"
    assert len(half.generate(["the cat"], max_new_tokens=5)) == 1
    with pytest.raises(LmadaptError, match="expected auto, float32, bfloat16 or int8"):
        load_engine(str(folder), dtype="float16")
