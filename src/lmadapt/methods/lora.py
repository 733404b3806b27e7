"""`lora`: low-rank updates on chosen linear layers (PEFT LoRA); the task head trains in full."""

from __future__ import annotations

from peft import LoraConfig
from torch import nn

from .base import Method
from .peft_common import check_targets, peft_kwargs, wrap


def apply(model: nn.Module, cfg, task_type: str, inference: bool = False) -> nn.Module:
    check_targets(model, cfg.target, "lora")
    config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target,  # None: PEFT's default for the architecture (BERT query/value, Llama q/v)
        **peft_kwargs(model, task_type, "lora", inference),
    )
    return wrap(model, config, "lora")


METHOD = Method(
    name="lora",
    apply=apply,
    storage="peft",
    tasks=frozenset({"seq_cls", "token_cls", "span", "causal_lm", "masked_lm"}),
    why_not={},
)
