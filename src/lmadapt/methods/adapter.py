"""`adapter`: Houlsby bottleneck adapters after the attention output and the feed-forward output of
every layer; everything else is frozen except the task head.

Each adapter is `h + up(dropout(gelu(down(h))))` applied to the output `h` of the wrapped projection,
before the layer's residual add and norm. `up` starts at zero, so the adapted model starts out exactly
as the pretrained one. PEFT has no such method, so it is built here.

Where the adapters go, per architecture family (the first family whose two patterns both match):
- BERT-like (BERT, RoBERTa, MiniLM, ...): `*.attention.output.dense` and the FFN's `*.output.dense`
- DistilBERT: `*.attention.out_lin` and `*.ffn.lin2`
- Llama-like (Llama, Mistral, Qwen2, SmolLM2, ...): `*.self_attn.o_proj` and `*.mlp.down_proj`
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..config.base import Section
from .base import Method, freeze_all, method_error, require_head, set_trainable

if TYPE_CHECKING:
    from torch import nn

FAMILIES = {
    "bert-like": (r"\.attention\.output\.dense$", r"\.layer\.\d+\.output\.dense$"),
    "distilbert": (r"\.attention\.out_lin$", r"\.ffn\.lin2$"),
    "llama-like": (r"\.self_attn\.o_proj$", r"\.mlp\.down_proj$"),
}


class AdapterMethod(Section):
    """Bottleneck adapters (Houlsby) after attention and after the feed-forward block of every layer."""

    type: Literal["adapter"] = "adapter"
    bottleneck: int = Field(64, ge=1, description="Adapter hidden size.")
    dropout: float = Field(0.0, ge=0, lt=1)


def adapter_sites(model: nn.Module) -> list[str]:
    """Names of the linear layers that get an adapter, by the first matching family rule."""
    from torch import nn

    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for patterns in FAMILIES.values():
        groups = [[n for n in linears if re.search(p, n)] for p in patterns]
        if all(groups):
            return sorted(set().union(*groups))
    raise method_error(
        "adapter",
        f"no known layout for {type(model).__name__}: expected linear layers matching one of "
        + "; ".join(f"{fam}: {' and '.join(pats)}" for fam, pats in FAMILIES.items()),
    )


def apply(model: nn.Module, cfg: AdapterMethod, task_type: str, inference: bool = False) -> nn.Module:
    from .layers import WithAdapter

    sites = adapter_sites(model)
    freeze_all(model)
    for name in sites:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        wrapped = WithAdapter(getattr(parent, child), cfg.bottleneck, cfg.dropout)
        setattr(parent, child, wrapped)
        set_trainable(wrapped.adapter)
    for name in require_head(model, task_type, "adapter"):
        set_trainable(getattr(model, name))
    return model


CONFIG = AdapterMethod
METHOD = Method(
    name="adapter",
    apply=apply,
    storage="trainable",
    tasks=frozenset({"seq_cls", "token_cls", "span", "causal_lm", "masked_lm"}),
    why_not={},
)
