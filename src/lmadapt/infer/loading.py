"""Loading a causal LM by catalog name, folder or Hub id: below the engine, so that the alignment policies
(which the engine loads from ppo / dpo / grpo run folders) can load their base model without the engine."""

from __future__ import annotations

from ..errors import LmadaptError


def load_causal_lm(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer) of a causal LM: catalog name, local folder or Hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..sources import resolve_model

    where = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise LmadaptError(f"{name_or_path}: cannot load a causal language model from it: {exc}") from exc
    return model, tokenizer
