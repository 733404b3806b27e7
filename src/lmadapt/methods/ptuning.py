"""`ptuning`: P-tuning, virtual-token embeddings produced by a small MLP/LSTM encoder (PEFT PromptEncoder).

Like `prompt`, the virtual tokens shift positions, so token_cls and span are not supported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..config.base import Section
from .base import Method
from .peft_common import peft_kwargs, wrap
from .prompt import POSITION_TASKS_WHY

if TYPE_CHECKING:
    from torch import nn

ENCODERS = {"mlp": "MLP", "lstm": "LSTM"}  # encoder_type -> PEFT's PromptEncoderReparameterizationType


class PtuningMethod(Section):
    type: Literal["ptuning"] = "ptuning"
    num_virtual_tokens: int = Field(20, ge=1)
    encoder_hidden_size: int = Field(128, ge=1)
    encoder_type: Literal["mlp", "lstm"] = "mlp"


def apply(model: nn.Module, cfg: PtuningMethod, task_type: str, inference: bool = False) -> nn.Module:
    from peft import PromptEncoderConfig, PromptEncoderReparameterizationType

    config = PromptEncoderConfig(
        num_virtual_tokens=cfg.num_virtual_tokens,
        encoder_hidden_size=cfg.encoder_hidden_size,
        encoder_reparameterization_type=PromptEncoderReparameterizationType[ENCODERS[cfg.encoder_type]],
        **peft_kwargs(model, task_type, "ptuning", inference),
    )
    return wrap(model, config, "ptuning")


CONFIG = PtuningMethod
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
