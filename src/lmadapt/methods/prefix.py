"""`prefix`: trained key/value prefixes in every attention layer (PEFT prefix tuning).

The prefix lives in the attention cache, so token positions are unchanged and token_cls/span work; the
model must accept an attention cache (`cache`, or `past_key_values` before transformers 5.24). PEFT has no
masked-LM class for prompt-learning methods.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..config.base import Section
from .base import Method, hidden_size, method_error
from .peft_common import peft_kwargs, wrap

if TYPE_CHECKING:
    from torch import nn

CACHE_NAMES = ("past_key_values", "cache")  # transformers 5.24 renamed the argument to `cache`


class PrefixMethod(Section):
    type: Literal["prefix"] = "prefix"
    num_virtual_tokens: int = Field(20, ge=1)
    projection: bool = Field(False, description="Reparameterise the prefix through an MLP.")


def _params(module: nn.Module) -> set[str]:
    return set(inspect.signature(module.forward).parameters)


def _accepts_cache(model: nn.Module) -> bool:
    """PEFT passes the prefix as an attention cache to the model or its backbone; one must take it."""
    from torch import nn

    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
    candidates = [model] + ([backbone] if isinstance(backbone, nn.Module) else [])
    return any(_params(m) & set(CACHE_NAMES) for m in candidates)


def take_past_key_values(model: nn.Module) -> None:
    """Let this model instance take the prefix under its old name, passing it on as `cache`.

    PEFT (0.21) gives a task model the prefix only if its forward names `past_key_values`, and otherwise
    refuses ("Model does not support past key values"); transformers 5.24 task heads take `**kwargs` and
    their backbone names it `cache`. Only this instance's forward gains the keyword; the model is unchanged.
    """
    if "past_key_values" in _params(model):
        return
    plain = model.forward

    def forward(*args, past_key_values=None, **kwargs):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return plain(*args, **kwargs)

    model.forward = forward


def apply(model: nn.Module, cfg: PrefixMethod, task_type: str, inference: bool = False) -> nn.Module:
    from peft import PrefixTuningConfig

    if not _accepts_cache(model):
        raise method_error("prefix", f"{type(model).__name__} does not accept an attention cache")
    take_past_key_values(model)
    config = PrefixTuningConfig(
        num_virtual_tokens=cfg.num_virtual_tokens,
        prefix_projection=cfg.projection,
        encoder_hidden_size=hidden_size(model),
        **peft_kwargs(model, task_type, "prefix", inference),
    )
    return wrap(model, config, "prefix")


CONFIG = PrefixMethod
METHOD = Method(
    name="prefix",
    apply=apply,
    storage="peft",
    injects_inputs=True,
    tasks=frozenset({"seq_cls", "token_cls", "span", "causal_lm"}),
    why_not={"masked_lm": "PEFT has no masked-LM model class for prompt-learning methods"},
)
