"""Loading a generative LM by catalog name, folder or Hub id: below the engine, so that the alignment policies
(which the engine loads from ppo / dpo / grpo run folders) can load their base model without the engine.

Two kinds: decoder-only causal LMs (`AutoModelForCausalLM`) and encoder-decoder models of the T5 family
(`AutoModelForSeq2SeqLM`: the prompt goes to the encoder, the answer is decoded). `load_lm` picks the kind
from the checkpoint's config; `load_causal_lm` is for the commands that need a decoder-only model."""

from __future__ import annotations

from ..errors import LmadaptError

__all__ = [
    "GENERATE_DTYPE",
    "inference_dtype",
    "is_encoder_decoder",
    "lm_task_type",
    "load_causal_lm",
    "load_lm",
]


# What generate, chat, serve, synth and the prompt stage decode in unless told: see docs/performance.md for the
# speed and the greedy agreement with float32 that chose it.
GENERATE_DTYPE = "auto"


def inference_dtype(dtype: str) -> str:
    """The dtype to generate in: `dtype` itself, or for "auto" bfloat16 where the CPU has native bf16 matmuls
    (AVX512-BF16 / AMX) or on a GPU, else float32 (emulated bf16 is slower than float32)."""
    if dtype in ("float32", "bfloat16", "int8"):
        return dtype
    if dtype != "auto":
        raise LmadaptError(f"dtype {dtype!r}: expected auto, float32, bfloat16 or int8")
    import torch

    if torch.cuda.is_available():
        return "bfloat16"
    try:
        return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    except (AttributeError, RuntimeError):
        return "float32"


def is_encoder_decoder(model_or_config) -> bool:
    """Whether a model (a PEFT wrapper too) or its config is an encoder-decoder (T5 family)."""
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, "is_encoder_decoder", False))


def lm_task_type(model) -> str:
    """The lmadapt.methods task type of a generative model: "seq2seq_lm" or "causal_lm"."""
    return "seq2seq_lm" if is_encoder_decoder(model) else "causal_lm"


def load_lm(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer) of a generative LM, decoder-only or encoder-decoder as its config says."""
    return _load(name_or_path, dtype, trust_remote_code, seq2seq_ok=True)


def load_causal_lm(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer) of a causal LM: catalog name, local folder or Hub id."""
    return _load(name_or_path, dtype, trust_remote_code, seq2seq_ok=False)


def _load(name_or_path: str, dtype: str, trust_remote_code: bool, seq2seq_ok: bool):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from ..sources import resolve_model

    where = resolve_model(name_or_path)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise LmadaptError(f"{name_or_path}: cannot load a language model from it: {exc}") from exc
    seq2seq = is_encoder_decoder(config)
    if seq2seq and not seq2seq_ok:
        raise LmadaptError(
            f"{name_or_path}: an encoder-decoder ({config.model_type}) model; this command needs a "
            "decoder-only causal language model"
        )
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    kind = "sequence-to-sequence" if seq2seq else "causal"
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        model = auto.from_pretrained(where, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise LmadaptError(f"{name_or_path}: cannot load a {kind} language model from it: {exc}") from exc
    return model, tokenizer
