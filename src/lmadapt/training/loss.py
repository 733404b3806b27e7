"""Causal-LM cross-entropy that never builds the full [tokens x vocab] logits.

The usual path computes `lm_head` on every position of the batch, keeps the fp32 logits, their log-softmax and
their gradient alive until backward: for SmolLM2 (vocab 49,152) that is ~200 KB per position, gigabytes per
batch, and a `lm_head` matmul for prompt and padding positions whose loss is masked anyway. Here only the
positions with a target are projected, a chunk at a time; each chunk's gradient with respect to its hidden
states (and to the head weight, when it trains) is computed right away in the forward pass, so backward only
scales stored gradients and no chunk's logits outlive its loop iteration.
"""

from __future__ import annotations

import torch

from ..templates import IGNORE


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(hidden @ weight.T, target), gradients computed in forward, chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, compute_dtype: torch.dtype):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(compute_dtype)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start : start + chunk].to(compute_dtype)
                t = targets[start : start + chunk]
                logits = (h @ w.T).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                if need_h or need_w:  # d(sum CE)/d(logits) = softmax - onehot, reusing the logits buffer
                    probs = logits.sub_(lse[:, None]).exp_()
                    probs[torch.arange(len(t), device=t.device), t] -= 1.0
                    probs = probs.to(compute_dtype)
                    if need_h:
                        grad_h[start : start + chunk] = probs @ w
                    if need_w:
                        grad_w += (probs.T @ h).float()
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_h, grad_w)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_h, grad_w = ctx.saved_tensors
        return (
            grad_h * grad_total.to(grad_h.dtype) if grad_h is not None else None,
            grad_w.to(ctx.weight_dtype) * grad_total if grad_w is not None else None,
            None,
            None,
            None,
        )


def linear_cross_entropy_sum(hidden, weight, targets, chunk: int = 1024, compute_dtype=None):
    """Summed CE of `hidden @ weight.T` against `targets` (all rows count), in chunks of `chunk` rows.

    `compute_dtype` (default: bf16 under autocast, else the hidden dtype) is the matmul dtype; the softmax and
    the sum are always fp32.
    """
    if compute_dtype is None:
        autocast = torch.is_autocast_enabled(hidden.device.type)
        compute_dtype = torch.get_autocast_dtype(hidden.device.type) if autocast else hidden.dtype
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk, compute_dtype)


def causal_lm_loss_sum(hidden_states, lm_head_weight, labels, chunk: int = 1024):
    """(summed next-token CE over positions with a target, number of such positions).

    hidden_states [batch, seq, dim], labels [batch, seq] with IGNORE where there is no target; position i
    predicts labels[i + 1], as in transformers' causal-LM loss.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE
    hidden = hidden_states[:, :-1][keep]
    return linear_cross_entropy_sum(hidden, lm_head_weight, targets[keep], chunk), int(keep.sum())
