"""`grpo:` stage grpo's settings (TRL's GRPOTrainer): group sampling and the clipped, KL-penalised update.

    stage: grpo
    grpo: {num_generations: 4, beta: 0.04}
    reward: {type: metric}                       # the same reward sources as stage ppo (config/reward.py)

Epochs / max_steps, lr, batch_size (answers per device step: a multiple of num_generations), max_length of
the prompt, seed, save_every come from `train:`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section
from .policy import answer_length_field, start_policy_field


class GrpoConfig(Section):
    """Group relative policy optimisation: advantages are rewards relative to the prompt's other answers."""

    policy: str | None = start_policy_field()
    num_generations: int = Field(4, ge=2, description="Answers sampled per prompt (the group).")
    max_new_tokens: int | None = answer_length_field()
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    beta: float = Field(
        0.04, ge=0, description="KL coefficient to the reference (0: no reference model is used)."
    )
    epsilon: float = Field(0.2, gt=0, description="Clip range of the importance ratio.")
    num_iterations: int = Field(1, ge=1, description="Updates per generated batch (mu).")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field(
        "dapo", description="How token losses are averaged (TRL's loss_type; dapo: over the batch's tokens)."
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the std of the group, of the batch, or not at all."
    )
    eval_prompts: int | None = Field(
        None,
        ge=1,
        description="Held-out prompts scored greedily before and after (default: all of data.test).",
    )
