"""`full`: train every parameter; saved as a whole model in `model/`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ..config.base import Section
from .base import Method, set_trainable

if TYPE_CHECKING:
    from torch import nn


class FullMethod(Section):
    """Train every parameter."""

    type: Literal["full"] = "full"


def apply(model: nn.Module, cfg, task_type: str, inference: bool = False) -> nn.Module:
    set_trainable(model)
    return model


CONFIG = FullMethod
METHOD = Method(
    name="full",
    apply=apply,
    storage="full",
    tasks=frozenset({"seq_cls", "token_cls", "span", "causal_lm", "masked_lm", "seq2seq_lm"}),
    why_not={},
)
