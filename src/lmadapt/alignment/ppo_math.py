"""The arithmetic of PPO for language models, as small pure functions on tensors (each unit-tested).

Shapes: a batch of B responses, each padded on the right to T tokens; `mask` [B, T] is 1 on real response
tokens (the prompt is not part of these tensors). Per-token tensors (`logprobs`, `values`, ...) are [B, T].

The sequence of one PPO step (stages/ppo.py):

    kl = kl_per_token(logprobs, ref_logprobs, "k1")          # policy vs frozen reference, per token
    scores = penalize_no_eos(scores, has_eos, penalty)        # the reward model / metric score per answer
    rewards = token_rewards(scores, kl, coef, mask)           # -coef * kl everywhere, + score at the last token
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    advantages = whiten(advantages, mask)
    ... for each minibatch: policy_loss(...) + vf_coef * value_loss(...) - entropy_coef * entropy

Follows the InstructGPT/Ziegler et al. (2019) formulation as torchtune's `rlhf/` and the old TRL PPO did;
the adaptive KL coefficient is Ziegler et al.'s proportional controller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over positions where `mask` is 1 (over all of them, or along `dim`)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance of `x` over the masked positions (0 for fewer than two of them)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    return var * n / (n - 1) if n > 1 else var * 0


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """`x` scaled to unit variance over the masked positions (and centred, with `shift_mean`); padding -> 0."""
    import torch

    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, kind: Literal["k1", "k3"] = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) at the sampled tokens.

    k1 = log p - log q: unbiased, but single samples can be negative. k3 = (r - 1) - log r with r = q/p:
    unbiased and never negative, lower variance (Schulman, "Approximating KL divergence", 2020). Both are 0
    where the policy equals the reference.
    """
    diff = logprobs - ref_logprobs
    if kind == "k1":
        return diff
    if kind == "k3":
        return (-diff).exp() - 1 + diff
    raise ValueError(f"unknown KL estimator {kind!r}; expected k1 or k3")


def last_token_index(mask: Tensor) -> Tensor:
    """Index of each row's last real token ([B]); rows are right-padded, so it is the count minus one."""
    return (mask.sum(dim=1).long() - 1).clamp(min=0)


def token_rewards(scores: Tensor, kl: Tensor, coef: float, mask: Tensor) -> Tensor:
    """Per-token rewards: -coef * kl on every response token, plus the answer's score at its last token."""
    import torch

    rewards = -coef * kl * mask.to(kl.dtype)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards


def penalize_no_eos(scores: Tensor, has_eos: Tensor, penalty: float) -> Tensor:
    """Scores of answers that never ended (no EOS within the length limit) lowered by `penalty`.

    A truncated answer is scored as if complete by most reward models; without this the policy can learn to
    ramble to the length limit (TRL's `missing_eos_penalty`).
    """
    return scores - penalty * (~has_eos.bool()).to(scores.dtype)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016): (advantages, returns), both [B, T].

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, with V and A zero past a row's
    last real token; returns = A + V (the value targets). Padding positions come out 0.
    """
    import torch

    mask = mask.to(rewards.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip: float
) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate, as a loss to minimise: (loss, fraction of tokens where the clip was active).

    ratio = exp(log pi - log pi_old); loss = mean over tokens of max(-A * ratio, -A * clip(ratio, 1 +- clip)).
    """
    import torch

    ratio = (logprobs - old_logprobs).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
    return loss, clip_fraction


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss: (0.5 * mean of max((V - R)^2, (V_clipped - R)^2), fraction of tokens clipped).

    V_clipped = V_old + clip(V - V_old, +-clip): the value head may not move further than the policy may.
    """
    import torch

    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    return loss, masked_mean((loss_clipped > loss_unclipped).to(values.dtype), mask)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution at each position ([..., vocab] -> [...]), in nats."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def logprobs_of(logits: Tensor, tokens: Tensor) -> Tensor:
    """log p(token) under `logits` at each position ([B, T, vocab], [B, T] -> [B, T])."""
    import torch

    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@dataclass
class KLController:
    """The KL coefficient: fixed, or adaptive (Ziegler et al. 2019): the coefficient grows when the measured KL
    is above `target` and shrinks below it, by at most 20% of the error per `horizon` samples."""

    value: float
    target: float | None = None  # None: fixed coefficient
    horizon: int = 10000

    def update(self, kl: float, n_samples: int) -> float:
        """Adjust after a batch of `n_samples` whose mean per-answer KL was `kl`; returns the new value."""
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_samples / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.target, self.horizon = state["value"], state["target"], state["horizon"]
