"""`full`: train every parameter; saved as a whole model in `model/`."""

from __future__ import annotations

from torch import nn

from .base import Method, set_trainable


def apply(model: nn.Module, cfg, task_type: str, inference: bool = False) -> nn.Module:
    set_trainable(model)
    return model


METHOD = Method(
    name="full",
    apply=apply,
    storage="full",
    tasks=frozenset({"seq_cls", "token_cls", "span", "causal_lm", "masked_lm"}),
    why_not={},
)
