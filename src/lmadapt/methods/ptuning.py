"""`ptuning`: P-tuning, virtual-token embeddings produced by a small MLP/LSTM encoder (PEFT PromptEncoder).

Like `prompt`, the virtual tokens shift positions, so token_cls and span are not supported.
"""

from __future__ import annotations

from peft import PromptEncoderConfig, PromptEncoderReparameterizationType
from torch import nn

from .base import Method
from .peft_common import peft_kwargs, wrap
from .prompt import POSITION_TASKS_WHY

ENCODERS = {
    "mlp": PromptEncoderReparameterizationType.MLP,
    "lstm": PromptEncoderReparameterizationType.LSTM,
}


def apply(model: nn.Module, cfg, task_type: str, inference: bool = False) -> nn.Module:
    config = PromptEncoderConfig(
        num_virtual_tokens=cfg.num_virtual_tokens,
        encoder_hidden_size=cfg.encoder_hidden_size,
        encoder_reparameterization_type=ENCODERS[cfg.encoder_type],
        **peft_kwargs(model, task_type, "ptuning", inference),
    )
    return wrap(model, config, "ptuning")


METHOD = Method(
    name="ptuning",
    apply=apply,
    storage="peft",
    injects_inputs=True,
    tasks=frozenset({"seq_cls", "causal_lm"}),
    why_not={
        "token_cls": POSITION_TASKS_WHY,
        "span": POSITION_TASKS_WHY,
        "masked_lm": "PEFT has no masked-LM model class for prompt-learning methods",
    },
)
