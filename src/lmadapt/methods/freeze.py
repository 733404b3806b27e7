"""`freeze`: feature extraction. The backbone is frozen; what trains depends on the task.

- seq_cls / token_cls / span: the linear task head is replaced by an MLP head
  (hidden -> head_hidden -> labels, ReLU, dropout) and trained, plus the top `unfreeze_top` layers.
  For seq_cls, `pooling: mean` (default) feeds the head the masked mean of the token states instead of the
  `[CLS]` pooler, where the backbone has a pooler (BERT-like).
  A head that is not a single Linear (e.g. RoBERTa's two-layer classifier) is kept and trained as is.
- causal_lm / masked_lm: only the top `unfreeze_top` layers (+ the final norm) train, and with
  `lm_head: true` the LM head too (the modules beside the backbone: BERT's `cls`, Llama's `lm_head`), except
  an output projection tied to the input embeddings, which stays frozen with them. One of the two must
  train something. `unfreeze_top: 0, lm_head: true` trains the head alone: the warm-up of a freshly
  initialised MLM head before full pretraining, so its random early gradients never reach the encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..config.base import Section
from .base import (
    ENCODER_TASKS,
    Method,
    find_final_norm,
    find_layers,
    freeze_all,
    method_error,
    require_head,
    set_trainable,
)

if TYPE_CHECKING:
    from torch import nn


class FreezeMethod(Section):
    """Feature extraction: backbone frozen, an MLP head trained; optionally unfreeze the top N layers."""

    type: Literal["freeze"] = "freeze"
    unfreeze_top: int = Field(0, ge=0, description="Number of top transformer layers left trainable.")
    head_hidden: int = Field(512, ge=1, description="Hidden size of the MLP head (encoder tasks).")
    head_dropout: float = Field(0.1, ge=0, lt=1)
    pooling: Literal["mean", "cls"] = Field(
        "mean", description="seq_cls: feed the head the masked mean of token states, or the [CLS] pooler."
    )
    lm_head: bool = Field(
        False,
        description="causal_lm/masked_lm: the LM head trains too (a weight tied to the input embeddings "
        "stays frozen); with unfreeze_top 0, the head alone trains.",
    )


def use_mean_pooling(model: nn.Module) -> bool:
    """Replace the backbone's pooler (if it has one) by MeanPooler; return whether it did."""
    from .layers import MeanPooler

    backbone = model.base_model
    if getattr(backbone, "pooler", None) is None:
        return False
    pooler = MeanPooler()
    backbone.pooler = pooler

    def remember_mask(_module, args, kwargs):
        pooler.mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    backbone.register_forward_pre_hook(remember_mask, with_kwargs=True)
    return True


def apply(model: nn.Module, cfg: FreezeMethod, task_type: str, inference: bool = False) -> nn.Module:
    from torch import nn

    from .layers import mlp_head

    layers = find_layers(model)
    n_top = cfg.unfreeze_top
    if n_top > len(layers):
        raise method_error("freeze", f"unfreeze_top={n_top} but the model has only {len(layers)} layers")
    if task_type not in ENCODER_TASKS and n_top == 0 and not cfg.lm_head:
        raise method_error(
            "freeze",
            f"unfreeze_top must be >= 1 for {task_type} (or lm_head: true): with 0, nothing would train",
        )
    freeze_all(model)
    for layer in layers[len(layers) - n_top :]:
        set_trainable(layer)
    if task_type == "seq_cls" and cfg.pooling == "mean":
        use_mean_pooling(model)
    if task_type in ENCODER_TASKS:
        for name in require_head(model, task_type, "freeze"):
            head = getattr(model, name)
            if isinstance(head, nn.Linear):
                old = head
                head = mlp_head(old.in_features, cfg.head_hidden, old.out_features, cfg.head_dropout)
                head.to(device=old.weight.device, dtype=old.weight.dtype)
                setattr(model, name, head)
            set_trainable(head)
    else:
        if n_top > 0 and (norm := find_final_norm(model)) is not None:
            set_trainable(norm)
        if cfg.lm_head:
            train_lm_head(model)
    return model


def train_lm_head(model: nn.Module) -> None:
    """Make the LM head trainable: every direct child but the backbone (`base_model_prefix`), less the
    parameters shared with the input embeddings (a tied decoder is the embedding matrix itself)."""
    backbone = getattr(model, "base_model_prefix", "")
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
    heads = [m for name, m in model.named_children() if name != backbone]
    if not heads:
        raise method_error("freeze", f"lm_head: {type(model).__name__} has no head beside its backbone")
    for head in heads:
        for p in head.parameters():
            if id(p) not in tied:
                p.requires_grad_(True)


CONFIG = FreezeMethod
METHOD = Method(
    name="freeze",
    apply=apply,
    storage="trainable",
    tasks=frozenset({"seq_cls", "token_cls", "span", "causal_lm", "masked_lm"}),
    why_not={},
)
