"""`freeze`: feature extraction. The backbone is frozen; what trains depends on the task.

- seq_cls / token_cls / span: the linear task head is replaced by an MLP head
  (hidden -> head_hidden -> labels, ReLU, dropout) and trained, plus the top `unfreeze_top` layers.
  For seq_cls, `pooling: mean` (default) feeds the head the masked mean of the token states instead of the
  `[CLS]` pooler, where the backbone has a pooler (BERT-like).
  A head that is not a single Linear (e.g. RoBERTa's two-layer classifier) is kept and trained as is.
- causal_lm / masked_lm: only the top `unfreeze_top` layers (+ the final norm) train, so it must be >= 1.
"""

from __future__ import annotations

from torch import nn

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


def mlp_head(in_features: int, hidden: int, out_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, out_features),
    )


class MeanPooler(nn.Module):
    """Stands in for BERT's `[CLS]` pooler: the masked mean of the last hidden states.

    Sentence-embedding checkpoints such as all-MiniLM-L6-v2 were trained so that the *mean* of the token states
    is meaningful; their `[CLS]` state and pooler are not, which made frozen features near useless (0.71 vs
    0.95 macro-F1 on pubmed-mesh). The mask comes from a pre-hook on the backbone: the pooler sees no mask.
    """

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, hidden_states):
        if self.mask is None:
            return hidden_states.mean(dim=1)
        mask = self.mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def use_mean_pooling(model: nn.Module) -> bool:
    """Replace the backbone's pooler (if it has one) by MeanPooler; return whether it did."""
    backbone = model.base_model
    if getattr(backbone, "pooler", None) is None:
        return False
    pooler = MeanPooler()
    backbone.pooler = pooler

    def remember_mask(_module, args, kwargs):
        pooler.mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    backbone.register_forward_pre_hook(remember_mask, with_kwargs=True)
    return True


def apply(model: nn.Module, cfg, task_type: str, inference: bool = False) -> nn.Module:
    layers = find_layers(model)
    n_top = cfg.unfreeze_top
    if n_top > len(layers):
        raise method_error("freeze", f"unfreeze_top={n_top} but the model has only {len(layers)} layers")
    if task_type not in ENCODER_TASKS and n_top == 0:
        raise method_error(
            "freeze", f"unfreeze_top must be >= 1 for {task_type}: with 0, nothing would train"
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
    elif n_top > 0 and (norm := find_final_norm(model)) is not None:
        set_trainable(norm)
    return model


METHOD = Method(
    name="freeze",
    apply=apply,
    storage="trainable",
    tasks=frozenset({"seq_cls", "token_cls", "span", "causal_lm", "masked_lm"}),
    why_not={},
)
