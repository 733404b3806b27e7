"""`dpo:` stage dpo's settings (TRL's DPOTrainer): the policy it starts from and the preference loss.

    task: {type: preference}                     # pairs, or K-wise rankings (best vs each other answer)
    stage: dpo
    dpo: {beta: 0.1, loss_type: sigmoid}

Epochs, lr, batch size, max_length, seed, save_every, ... come from `train:` as in every training stage.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section
from .policy import start_policy_field


class DpoConfig(Section):
    """Direct preference optimisation against the frozen starting policy."""

    policy: str | None = start_policy_field()
    beta: float = Field(
        0.1, gt=0, description="Strength of the pull towards the reference (higher: stays closer)."
    )
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "sigmoid_norm"] = Field(
        "sigmoid",
        description="sigmoid: DPO; hinge: SLiC; ipo: IPO (beta is its tau); robust: robust DPO (with "
        "label_smoothing); sigmoid_norm: DPO on length-normalised log-probabilities.",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="robust: the probability that a preference label is flipped."
    )
    precompute_ref: bool = Field(
        True,
        description="Compute the reference log-probabilities once before training (TRL's "
        "precompute_ref_log_probs): no reference forward pass while training.",
    )
