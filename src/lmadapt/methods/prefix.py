"""`prefix`: trained key/value prefixes in every attention layer (PEFT prefix tuning).

The prefix lives in the attention cache, so token positions are unchanged and token_cls/span work; the
model must accept `past_key_values`. PEFT has no masked-LM class for prompt-learning methods.
"""

from __future__ import annotations

import inspect

from peft import PrefixTuningConfig
from torch import nn

from .base import Method, hidden_size, method_error
from .peft_common import peft_kwargs, wrap


def _accepts_cache(model: nn.Module) -> bool:
    """PEFT passes the prefix as `past_key_values` to the model or its backbone; one must take it."""
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
    candidates = [model] + ([backbone] if isinstance(backbone, nn.Module) else [])
    return any("past_key_values" in inspect.signature(m.forward).parameters for m in candidates)


def apply(model: nn.Module, cfg, task_type: str, inference: bool = False) -> nn.Module:
    if not _accepts_cache(model):
        raise method_error("prefix", f"{type(model).__name__} does not accept past_key_values")
    config = PrefixTuningConfig(
        num_virtual_tokens=cfg.num_virtual_tokens,
        prefix_projection=cfg.projection,
        encoder_hidden_size=hidden_size(model),
        **peft_kwargs(model, task_type, "prefix", inference),
    )
    return wrap(model, config, "prefix")


METHOD = Method(
    name="prefix",
    apply=apply,
    storage="peft",
    injects_inputs=True,
    tasks=frozenset({"seq_cls", "token_cls", "span", "causal_lm"}),
    why_not={"masked_lm": "PEFT has no masked-LM model class for prompt-learning methods"},
)
