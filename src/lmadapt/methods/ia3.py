"""`ia3`: learned rescaling vectors on keys, values and feed-forward activations (PEFT IA3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..config.base import Section
from .base import Method, method_error
from .peft_common import check_targets, peft_kwargs, wrap

if TYPE_CHECKING:
    from torch import nn


class Ia3Method(Section):
    type: Literal["ia3"] = "ia3"
    target: list[str] | None = Field(None, description="Modules to rescale; default: PEFT's choice.")
    feedforward: list[str] | None = Field(None, description="Which of `target` are feed-forward modules.")


def apply(model: nn.Module, cfg: Ia3Method, task_type: str, inference: bool = False) -> nn.Module:
    from peft import IA3Config

    check_targets(model, cfg.target, "ia3")
    if cfg.feedforward is not None and cfg.target is None:
        raise method_error("ia3", "`feedforward` names a subset of `target`, so `target` must be set too")
    if cfg.target is not None and not set(cfg.feedforward or []) <= set(cfg.target):
        extra = sorted(set(cfg.feedforward) - set(cfg.target))
        raise method_error("ia3", f"feedforward modules {extra} are not in target {cfg.target}")
    config = IA3Config(
        target_modules=cfg.target,  # None: PEFT's default (BERT key/value/output.dense, Llama k/v/down_proj)
        # with explicit targets, none is feed-forward unless named (PEFT would guess from its own table)
        feedforward_modules=(cfg.feedforward or []) if cfg.target is not None else None,
        **peft_kwargs(model, task_type, "ia3", inference),
    )
    return wrap(model, config, "ia3")


CONFIG = Ia3Method
METHOD = Method(
    name="ia3",
    apply=apply,
    storage="peft",
    tasks=frozenset({"seq_cls", "token_cls", "span", "causal_lm", "masked_lm"}),
    why_not={},
)
