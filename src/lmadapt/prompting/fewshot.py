"""Choosing demonstrations for few-shot prompts: at random (seeded) or the k most similar training examples.

Similarity is the cosine of mean-pooled encoder embeddings (minilm-l6 by default: a sentence encoder trained
for exactly this). The most similar demonstration goes last, nearest the query (Liu et al. 2021).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch


def random_demos(pool_size: int, k: int, n_queries: int, seed: int = 0) -> list[list[int]]:
    """The same k pool indices (drawn with `seed`) for every query: one fixed, reproducible prompt."""
    chosen = random.Random(seed).sample(range(pool_size), min(k, pool_size))
    return [list(chosen) for _ in range(n_queries)]


def load_encoder(name_or_path: str = "minilm-l6"):
    """(model, tokenizer) of a sentence encoder."""
    from transformers import AutoModel, AutoTokenizer

    from ..sources import resolve_model

    path = resolve_model(name_or_path)
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@torch.no_grad()
def embed(
    texts: Sequence[str], model, tokenizer, batch_size: int = 32, max_length: int = 256
) -> torch.Tensor:
    """Mean-pooled, L2-normalised embeddings: [len(texts), hidden]."""
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out) if out else torch.empty(0, 0)


def similar_demos(pool: torch.Tensor, queries: torch.Tensor, k: int) -> list[list[int]]:
    """For each query embedding, the k most similar pool indices, least similar first."""
    k = min(k, pool.shape[0])
    if k == 0:
        return [[] for _ in range(queries.shape[0])]
    top = (queries @ pool.T).topk(k, dim=-1).indices
    return [list(reversed(row)) for row in top.tolist()]


def choose_demos(
    pool_texts: Sequence[str],
    query_texts: Sequence[str],
    k: int,
    selection: str,
    *,
    seed: int = 0,
    encoder: str = "minilm-l6",
) -> list[list[int]]:
    """Indices into the pool of the demonstrations for each query."""
    if k == 0 or not pool_texts:
        return [[] for _ in query_texts]
    if selection == "random":
        return random_demos(len(pool_texts), k, len(query_texts), seed)
    if selection == "similar":
        model, tokenizer = load_encoder(encoder)
        return similar_demos(embed(pool_texts, model, tokenizer), embed(query_texts, model, tokenizer), k)
    raise ValueError(f"unknown demonstration selection {selection!r}; choose random or similar")
