"""Regional `torch.compile`: compile each transformer layer of the stack, not the whole model.

The layers of a stack share one code path, so one compiled graph serves all of them and compile time is that
of one layer, not of the model. Shapes are dynamic (packed and length-grouped batches change width every
step). On the CPU the gain is fused elementwise work (norms, activations, rotary, LoRA side paths) and fewer
intermediates kept for backward; matmuls run the same kernels. The compiled forwards are removed again on exit,
so generation and saving after training run the plain model.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def layer_stack(model: nn.Module) -> nn.ModuleList | None:
    """The model's repeated-layer list: the largest ModuleList of two or more modules of one class."""
    best, best_size = None, 0
    for module in model.modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(m) for m in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = module, size
    return best


@contextlib.contextmanager
def compiled_layers(model: nn.Module, enabled: bool = True):
    """Within the block each layer of the stack runs a `torch.compile`d forward; yields how many layers."""
    stack = layer_stack(model) if enabled else None
    if stack is None:
        yield 0
        return
    # An instance attribute shadows the class's forward; on exit whatever the instance had before comes back.
    before = [vars(layer).get("forward") for layer in stack]
    for layer in stack:
        layer.forward = torch.compile(layer.forward, dynamic=True)
    try:
        yield len(stack)
    finally:
        for layer, forward in zip(stack, before, strict=True):
            if forward is None:
                del layer.forward
            else:
                layer.forward = forward
