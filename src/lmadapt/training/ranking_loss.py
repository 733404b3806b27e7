"""Reward-model losses and ranking metrics as small pure functions (torch tensors in, tensors or floats out).

pairwise_loss:  -log sigmoid(r_chosen - r_rejected), averaged over pairs (Bradley-Terry; TRL's RewardTrainer).
ranking_loss:   for K answers of one prompt ranked best first, the mean of -log sigmoid(r_i - r_j) over all
                C(K,2) pairs i < j (minus tied pairs), then the mean over prompts: each prompt weighs the
                same however large its K (InstructGPT; Open-Assistant's `RMLoss`). At K=2 it equals
                pairwise_loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

__all__ = ["pairwise_loss", "ranking_loss", "ranked_pairs", "kendall_tau", "ranking_metrics"]


def pairwise_loss(chosen, rejected):
    """Mean of -log sigmoid(chosen - rejected) over the pairs (1-D tensors of rewards)."""
    import torch.nn.functional as F

    return -F.logsigmoid(chosen - rejected).mean()


def ranked_pairs(k: int, scores: Sequence[float] | None = None) -> list[tuple[int, int]]:
    """(better, worse) index pairs of K answers ranked best first: all i < j, except equal `scores`."""
    return [(i, j) for i, j in combinations(range(k), 2) if scores is None or scores[i] > scores[j]]


def ranking_loss(rewards, sizes: Sequence[int], scores: Sequence[Sequence[float] | None] | None = None):
    """K-wise loss of a batch: `rewards` holds each prompt's K answers in rank order, prompt after prompt
    (`sizes` gives each K). Per prompt the mean over its pairs; then the mean over prompts with a pair.

    `scores[p]` (optional) marks ties: pairs of equal score are left out. A prompt without any pair adds
    nothing; a batch without any is an error (nothing to learn from)."""
    import torch
    import torch.nn.functional as F

    if sum(sizes) != len(rewards):
        raise ValueError(f"sizes add up to {sum(sizes)}, but there are {len(rewards)} rewards")
    losses, start = [], 0
    for p, k in enumerate(sizes):
        pairs = ranked_pairs(k, scores[p] if scores else None)
        if pairs:
            better = torch.tensor([start + i for i, _ in pairs], device=rewards.device)
            worse = torch.tensor([start + j for _, j in pairs], device=rewards.device)
            losses.append(-F.logsigmoid(rewards[better] - rewards[worse]).mean())
        start += k
    if not losses:
        raise ValueError("no prompt in the batch has two answers of different rank")
    return torch.stack(losses).mean()


def kendall_tau(predicted: Sequence[float], scores: Sequence[float] | None = None) -> float | None:
    """Kendall's tau-b between predicted rewards and the true order (rank order best first, or `scores`).

    None when undefined (every prediction or every true rank equal)."""
    k = len(predicted)
    truth = list(scores) if scores is not None else [float(k - i) for i in range(k)]
    concordant = discordant = tied_pred = tied_true = 0
    for i, j in combinations(range(k), 2):
        a, b = predicted[i] - predicted[j], truth[i] - truth[j]
        if a == 0 and b == 0:
            continue
        if a == 0:
            tied_pred += 1
        elif b == 0:
            tied_true += 1
        elif (a > 0) == (b > 0):
            concordant += 1
        else:
            discordant += 1
    n_pred = concordant + discordant + tied_pred  # pairs not tied in the truth
    n_true = concordant + discordant + tied_true  # pairs not tied in the prediction
    if n_pred == 0 or n_true == 0:
        return None
    return (concordant - discordant) / (n_pred * n_true) ** 0.5


def ranking_metrics(
    rewards: Sequence[Sequence[float]], scores: Sequence[Sequence[float] | None], ranked: bool
) -> dict[str, float]:
    """Held-out metrics of predicted rewards, one list per prompt (answers in rank order, best first).

    pairwise_accuracy: share of (better, worse) pairs scored better > worse (all pairs pooled);
    mean_margin: mean of r_better - r_worse; loss: `ranking_loss` of the same numbers. With `ranked`
    (K-wise data) also kendall_tau (mean over prompts where it is defined) and top1_accuracy (the highest
    reward goes to a best answer)."""
    right = total = 0
    margins, losses, taus, tops = [], [], [], []
    for r, s in zip(rewards, scores, strict=True):
        pairs = ranked_pairs(len(r), s)
        if not pairs:
            continue
        diffs = [r[i] - r[j] for i, j in pairs]
        right += sum(d > 0 for d in diffs)
        total += len(diffs)
        margins += diffs
        losses.append(sum(_softplus(-d) for d in diffs) / len(diffs))
        if ranked:
            tau = kendall_tau(r, s)
            if tau is not None:
                taus.append(tau)
            best = max(s) if s is not None else None
            top = max(range(len(r)), key=lambda i: r[i])
            tops.append(float(top == 0 if s is None else s[top] == best))
    out = {
        "pairwise_accuracy": right / total if total else 0.0,
        "mean_margin": sum(margins) / len(margins) if margins else 0.0,
        "loss": sum(losses) / len(losses) if losses else 0.0,
        "pairs": total,
    }
    if ranked:
        out["kendall_tau"] = sum(taus) / len(taus) if taus else 0.0
        out["top1_accuracy"] = sum(tops) / len(tops) if tops else 0.0
    return out


def _softplus(x: float) -> float:
    """log(1 + e^x) without overflow: -log sigmoid(d) = softplus(-d)."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))
