"""`ppo:` stage ppo's settings: the policy it starts from, rollouts, the KL penalty, GAE and the PPO update.

    stage: ppo
    ppo: {policy: runs/pubmed-mesh-sft, steps: 30, prompts_per_step: 8, kl_coef: 0.05}
    reward: {type: metric}                       # or {type: rm, run: runs/pubmed-mesh-rm}: config/reward.py

Optimisation settings shared with the other stages come from `train:` (lr, max_grad_norm, max_length of the
prompt, seed, save_every, keep_checkpoints, num_threads); `method:` says what of the policy trains (lora: the
reference is the same model with the adapter switched off, so one copy of the weights; full: a frozen copy).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Section
from .policy import answer_length_field, start_policy_field


class PpoConfig(Section):
    """PPO with a per-token KL penalty to the frozen reference (InstructGPT's step 3)."""

    policy: str | None = start_policy_field()
    steps: int = Field(20, ge=1, description="PPO steps: each samples a batch of answers and updates on it.")
    prompts_per_step: int = Field(8, ge=1, description="Training prompts sampled (one answer each) per step.")
    ppo_epochs: int = Field(2, ge=1, description="Passes of the PPO update over each step's batch.")
    minibatch_size: int = Field(4, ge=1, description="Answers per optimizer update within a step.")
    max_new_tokens: int | None = answer_length_field()
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    top_k: int = Field(0, ge=0, description="Top-k filtering of the rollouts (0: off).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of the rollouts (1: off).")
    kl_estimator: Literal["k1", "k3"] = Field(
        "k1",
        description="Per-token KL estimate: k1 = log p - log q (unbiased, can be negative per sample); k3 = "
        "(q/p - 1) - log(q/p) (never negative, lower variance).",
    )
    kl_coef: float = Field(0.05, ge=0, description="KL penalty coefficient (the start value when adaptive).")
    kl_target: float | None = Field(
        None,
        gt=0,
        description="Adaptive coefficient (Ziegler et al. 2019): the per-answer KL to steer towards; "
        "unset: the coefficient stays fixed.",
    )
    kl_horizon: int = Field(
        10000, ge=1, description="Adaptive KL: samples over which the coefficient adapts."
    )
    gamma: float = Field(1.0, ge=0, le=1, description="Discount of GAE.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    clip: float = Field(0.2, gt=0, description="PPO ratio clip range.")
    value_clip: float = Field(0.2, gt=0, description="How far the value head may move per update.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    entropy_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus.")
    whiten_advantages: bool = Field(True, description="Normalise advantages to mean 0, variance 1 per batch.")
    no_eos_penalty: float = Field(
        1.0, ge=0, description="Subtracted from the score of answers that reach the length limit without EOS."
    )
    eval_prompts: int | None = Field(
        None,
        ge=1,
        description="Held-out prompts scored greedily before and after (default: all of data.test).",
    )
    eval_every: int | None = Field(
        None, ge=1, description="Also score the held-out prompts every N steps (curve of the true metric)."
    )

    @model_validator(mode="after")
    def _minibatch_fits(self):
        if self.minibatch_size > self.prompts_per_step:
            raise ValueError(
                f"minibatch_size {self.minibatch_size} is larger than prompts_per_step {self.prompts_per_step}"
            )
        return self
