"""How the engine holds a model for generation: float32, or bfloat16 the way llama.cpp's bf16 GGUF means it.

Decoding a small model on a CPU is bound by reading the weights once per step, so bf16 weights (half the
bytes) are the lever. Casting the whole model to bf16 also rounds the residual stream, the norms, attention
and the logits to 8 bits of mantissa, and greedy decoding then breaks near-ties differently: over 50
AlpacaEval prompts (SmolLM2-135M-Instruct, 64 tokens) only 32% of the continuations equal float32's. Here
`bfloat16` is what llama.cpp's bf16 does instead: the linear layers' weights are bf16 and their inputs are
rounded to bf16 for the matmul, while every activation stays float32 and the output projection (the logits)
stays float32: 68% identical, against 72% for llama.cpp's own bf16 vs f32 on the same prompts (the numbers
and the command: docs/performance.md).

Speed on a CPU comes from oneDNN: a bf16 weight reordered once into its blocked layout
(`mkldnn._reorder_linear_weight`) is multiplied by the same kernel as `F.linear` (bit-identical results) but
reads it near memory bandwidth: SmolLM2-135M's linears for one token 8.2 ms against 14.4. The output
projection gets the same bf16 product for every logit, and the RERANK best of each row are then recomputed
in float32 from the float32 weight, so greedy decoding picks float32's token unless it was not among bf16's
16 best (7.7 ms -> 1.4 ms for a 49k vocabulary).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "Bf16Linear",
    "Bf16Head",
    "Int8Linear",
    "for_generation",
    "generation_precision",
    "GENERATION_DTYPES",
]

GENERATION_DTYPES = ("float32", "bfloat16", "int8")
RERANK = 16  # logits per row the output projection recomputes in float32
EXACT_ROWS = 4096  # past this many rows (a long prefill's every position) the head is plain float32


@functools.cache
def _onednn_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _bf16_matmul(module: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x @ weight.T with x rounded to bf16 (fp32 accumulation), through the module's reordered copy of
    `weight` where oneDNN runs bf16 on this CPU (else a cached bf16 copy); float32 out."""
    xb = x.to(torch.bfloat16)
    onednn = x.device.type == "cpu" and _onednn_bf16()
    key = (weight._version, weight.data_ptr(), weight.device)
    packed = module.__dict__.get("_packed")
    if packed is None or packed[0] != key:  # made once; again if the weight is changed, replaced or moved
        bf16 = weight.detach().to(torch.bfloat16)
        packed = (key, torch.ops.mkldnn._reorder_linear_weight(bf16, 1) if onednn else bf16)
        module.__dict__["_packed"] = packed  # not a buffer: never saved, never moved
    if not onednn:
        return F.linear(xb, packed[1]).to(x.dtype)
    return torch.ops.mkldnn._linear_pointwise(xb, packed[1], None, "none", [], "").to(x.dtype)


class Bf16Linear(nn.Linear):
    """A Linear whose weight is bf16: float32 in, float32 out, the matmul in bf16 (fp32 accumulation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _bf16_matmul(self, self.weight, x)
        return y if self.bias is None else y + self.bias


class Bf16Head(nn.Linear):
    """The output projection (weight kept float32, often tied to the embeddings): every logit from the bf16
    product, then each row's RERANK best recomputed in float32, so the top of the distribution, which greedy
    decoding and top-k/top-p sampling read, is float32's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > EXACT_ROWS or self.out_features <= RERANK:
            return F.linear(x, self.weight, self.bias)
        approx = _bf16_matmul(self, self.weight, x)
        best = approx.topk(RERANK, dim=-1).indices
        exact = (self.weight[best] @ x.unsqueeze(-1)).squeeze(-1)
        if self.bias is not None:
            approx, exact = approx + self.bias, exact + self.bias[best]
        return approx.scatter(-1, best, exact)


class Int8Linear(nn.Linear):
    """A Linear whose weight is int8 with one bf16 scale per output row (weight-only quantization, symmetric,
    round to nearest): float32 in, float32 out, through torch's own CPU kernel for it
    (`aten._weight_int8pack_mm`, bf16 activations), which reads a quarter of float32's bytes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        y = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def quantize(self) -> None:
        weight = self.weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("qweight", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        del self.weight  # only the int8 copy is kept


def for_generation(model, dtype: str):
    """`model` (float32, PEFT-wrapped or not) made ready to generate in `dtype` (GENERATION_DTYPES); returns
    it. bfloat16 / int8: every plain Linear but the output projection becomes a Bf16Linear / Int8Linear, in
    place (int8 merges a PEFT adapter first: its layers would wrap the quantized ones), and the output
    projection a Bf16Head."""
    if dtype not in GENERATION_DTYPES:
        raise ValueError(f"dtype {dtype!r}: one of {', '.join(GENERATION_DTYPES)}")
    model = model.float()
    if dtype == "float32":
        return model
    if dtype == "int8" and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if type(head) is nn.Linear:
        head.__class__ = Bf16Head
    for module in model.modules():
        if type(module) is not nn.Linear:  # exact type: PEFT layers wrap a Linear; the head is a Bf16Head now
            continue
        if dtype == "int8":
            module.__class__ = Int8Linear
            module.quantize()
        else:
            module.weight = nn.Parameter(module.weight.detach().to(torch.bfloat16), requires_grad=False)
            module.__class__ = Bf16Linear
    model.lmadapt_generation_dtype = dtype
    return model


def generation_precision(model) -> str:
    """What `for_generation` made of `model`: "bfloat16" (bf16 matmuls) or the dtype of its weights."""
    return getattr(model, "lmadapt_generation_dtype", str(model.dtype).removeprefix("torch."))
