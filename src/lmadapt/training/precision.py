"""bf16 storage for frozen linear weights while training under bf16 autocast.

Autocast casts every fp32 weight to bf16 at every forward (frozen weights are not cached across steps) and
keeps that copy for backward, so a LoRA step holds the fp32 weights plus their bf16 copies and pays the casts
each step. Storing the frozen weights in bf16 for the duration of training removes both. Their exact fp32
values go to a safetensors file beside the run and come back afterwards, so evaluation, generation and saving
after training see the original weights. Trainable parameters stay fp32 (the master weights the optimizer
updates). Embeddings and a tied lm_head stay fp32 too: the residual stream starts from the embedding, and
keeping it fp32 is what keeps the loss curve on the fp32 one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from safetensors.torch import safe_open, save_file
from torch import nn


def frozen_linear_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """name -> parameter for the weights and biases of nn.Linear modules that do not train (no tied ones)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    out = {}
    for mod_name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for p_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad and id(param) not in embeddings and param.dtype == torch.float32:
                out[f"{mod_name}.{p_name}"] = param
    return out


@contextlib.contextmanager
def frozen_in_bf16(model: nn.Module, stash: Path, enabled: bool = True):
    """Within the block, frozen linear weights are bf16; on exit their exact fp32 values are back."""
    params = frozen_linear_weights(model) if enabled else {}
    if not params:
        yield 0
        return
    stash.parent.mkdir(parents=True, exist_ok=True)
    save_file({n: p.detach().contiguous() for n, p in params.items()}, str(stash))
    for p in params.values():
        p.data = p.data.to(torch.bfloat16)
    try:
        yield len(params)
    finally:
        with safe_open(str(stash), framework="pt") as f:
            for name, p in params.items():
                p.data = f.get_tensor(name)
        stash.unlink()
