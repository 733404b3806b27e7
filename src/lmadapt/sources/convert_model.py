"""Model sources -> a plain folder that `AutoModel*.from_pretrained(folder)` loads offline.

Each converter fills `out` and returns facts for the manifest. torch/transformers are imported inside the
functions so listing the catalog stays instant.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import SourceError


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Everything we load is on disk: never let a load wander off to the Hub, during the conversion only.

    huggingface_hub reads HF_HUB_OFFLINE once at import, so its constant is switched too, then restored,
    leaving the caller's process as it was (a user may still name Hub ids elsewhere).
    """
    from huggingface_hub import constants

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    saved_flag = constants.HF_HUB_OFFLINE
    os.environ.update({k: "1" for k in saved_env})
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _safetensors_params(path: Path) -> int:
    """Parameter count read from a safetensors header (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), framework="numpy") as f:
        for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            n = 1
            for dim in f.get_slice(key).get_shape():
                n *= dim
            total += n
    return total


def copy_hf_folder(src: Path, out: Path) -> dict:
    """A ready Hugging Face folder (config.json, model.safetensors, tokenizer files): copy it, then check
    that the config and tokenizer load offline."""
    for required in ("config.json", "model.safetensors"):
        if not (src / required).is_file():
            raise SourceError(f"{src.name}: the model folder has no {required}")
    shutil.copytree(src, out, dirs_exist_ok=True)
    from transformers import AutoConfig, AutoTokenizer

    with _offline():
        config = AutoConfig.from_pretrained(out, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    return {
        "architecture": (config.architectures or [type(config).__name__])[0],
        "model_type": config.model_type,
        "parameters": _safetensors_params(out / "model.safetensors"),
        "vocab_size": len(tokenizer),
    }


def gguf_to_safetensors(gguf: Path, out: Path) -> dict:
    """Dequantize a GGUF checkpoint once into an fp32 safetensors folder with its tokenizer and chat template.

    transformers loads GGUF through a quantizer and then refuses to `save_pretrained` the result; the
    weights are already plain fp32 tensors by then, so dropping the quantizer markers is all it takes.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    with _offline():
        # (no local_files_only for the tokenizer: it would be saved into tokenizer_config.json)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(  # dequantize: with the `kernels` package installed,
            folder,  # transformers would otherwise keep the weights packed in GGUF blocks, unsaveable
            gguf_file=name,
            dtype=torch.float32,
            local_files_only=True,
            quantization_config=GgufConfig(dequantize=True),
        )
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in config:
        raise SourceError(f"{out}/config.json still names a quantizer; the converted folder would not load")
    check = check_same_greedy(model, tokenizer, out)
    return {
        "architecture": type(model).__name__,
        "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
        "vocab_size": len(tokenizer),
        "chat_template": bool(tokenizer.chat_template),
        "converted_from": name,
        "greedy_check": check,
    }


# Prompts the converted folder must continue exactly as the GGUF load does (English and Chinese).
CHECK_PROMPTS = ("The capital of France is", "中国的首都是")
CHECK_TOKENS = 8
LOGIT_TOLERANCE = 1e-3  # the same fp32 weights through the same code: any real difference is a conversion bug


def check_same_greedy(
    reference, ref_tokenizer, folder: Path, prompts=CHECK_PROMPTS, new_tokens=CHECK_TOKENS
) -> dict:
    """Load `folder` as a plain model and check it matches `reference` (the GGUF load) on `prompts`:
    the same token ids from both tokenizers, the same greedy continuation, and logits that agree.

    Raises SourceError on any difference; returns the figures for the manifest.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _offline():
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    reference.eval()
    model.eval()
    worst = 0.0
    for prompt in prompts:
        ids = ref_tokenizer(prompt, return_tensors="pt")["input_ids"]
        if tokenizer(prompt, return_tensors="pt")["input_ids"].tolist() != ids.tolist():
            raise SourceError(f"{folder}: the saved tokenizer splits {prompt!r} differently from the GGUF's")
        with torch.no_grad():
            worst = max(worst, (reference(ids).logits - model(ids).logits).abs().max().item())
            greedy = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            want = reference.generate(ids, attention_mask=torch.ones_like(ids), **greedy)
            got = model.generate(ids, attention_mask=torch.ones_like(ids), **greedy)
        if got.tolist() != want.tolist():
            raise SourceError(
                f"{folder}: greedy continuation of {prompt!r} differs from the GGUF load's: "
                f"{tokenizer.decode(got[0])!r} vs {ref_tokenizer.decode(want[0])!r}"
            )
    if worst > LOGIT_TOLERANCE:
        raise SourceError(
            f"{folder}: logits differ from the GGUF load's by up to {worst:.3g} (> {LOGIT_TOLERANCE:g})"
        )
    return {
        "prompts": list(prompts),
        "new_tokens": new_tokens,
        "same_tokens": True,
        "max_abs_logit_diff": worst,
    }
