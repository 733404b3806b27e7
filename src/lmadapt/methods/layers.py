"""The torch modules that methods insert into a model (PEFT's `layer.py` role), apart from the method
modules so that reading a recipe's `method:` section needs no torch: the adapter's bottleneck, and the freeze
method's MLP head and mean pooler.
"""

from __future__ import annotations

import torch
from torch import nn


# --- adapter --------------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    """down-projection, GELU, dropout, zero-initialised up-projection, plus the residual."""

    def __init__(self, size: int, bottleneck: int, dropout: float):
        super().__init__()
        self.down = nn.Linear(size, bottleneck)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.dropout(self.act(self.down(h))))


class WithAdapter(nn.Module):
    """A linear projection followed by a bottleneck adapter on its output."""

    def __init__(self, base_layer: nn.Linear, bottleneck: int, dropout: float):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = Bottleneck(base_layer.out_features, bottleneck, dropout)
        self.adapter.to(device=base_layer.weight.device, dtype=base_layer.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base_layer(x))


# --- freeze ---------------------------------------------------------------------------------------------
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
