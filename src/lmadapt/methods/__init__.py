"""Adaptation methods: how a pretrained model is made trainable for a task, saved and reloaded.

    model = apply_method(model, recipe.method, "seq_cls")      # freeze / wrap as the method says
    ... train ...
    save_trained(model, recipe.method, run_dir)                 # run_dir/model/ or run_dir/adapter/
    model = load_trained(fresh_base_model, recipe.method, run_dir, "seq_cls")

Task types: "seq_cls", "token_cls", "span", "causal_lm", "masked_lm". One module per method; a new method
is one module exposing `METHOD` plus one line in `METHODS`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import RecipeError
from . import adapter, freeze, full, ia3, lora, prefix, prompt, ptuning, storage
from .base import TASK_TYPES, Method

METHODS: dict[str, Method] = {
    "full": full.METHOD,
    "freeze": freeze.METHOD,
    "lora": lora.METHOD,
    "adapter": adapter.METHOD,
    "prefix": prefix.METHOD,
    "prompt": prompt.METHOD,
    "ptuning": ptuning.METHOD,
    "ia3": ia3.METHOD,
}

SAVERS = {"full": storage.save_full, "trainable": storage.save_trainable, "peft": storage.save_peft}

__all__ = [
    "METHODS",
    "TASK_TYPES",
    "apply_method",
    "check_method",
    "count_parameters",
    "load_trained",
    "merge_and_export",
    "save_trained",
]


def check_method(method_cfg, task_type: str) -> Method:
    """The registered method for `method_cfg`, or a RecipeError if it cannot serve `task_type`.

    Cheap (no model needed): stages can call it before loading anything.
    """
    if task_type not in TASK_TYPES:
        raise RecipeError(f"unknown task type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")
    method = _lookup(method_cfg)
    if task_type not in method.tasks:
        why = method.why_not.get(task_type, "not supported")
        raise RecipeError(f"method '{method.name}' cannot be used for {task_type}: {why}")
    return method


def _lookup(method_cfg) -> Method:
    method = METHODS.get(method_cfg.type)
    if method is None:
        raise RecipeError(
            f"method '{method_cfg.type}' is not a neural adaptation method (available: {', '.join(METHODS)})"
        )
    return method


def apply_method(model: nn.Module, method_cfg, task_type: str) -> nn.Module:
    """Make `model` trainable as `method_cfg` says; returns the model (a PeftModel for PEFT methods)."""
    return check_method(method_cfg, task_type).apply(model, method_cfg, task_type, False)


def save_trained(model: nn.Module, method_cfg, out_dir: str | Path) -> Path:
    """Write what training changed to `out_dir/model/` or `out_dir/adapter/` (safetensors); return it."""
    return SAVERS[_lookup(method_cfg).storage](model, method_cfg, Path(out_dir))


def load_trained(base_model: nn.Module, method_cfg, run_dir: str | Path, task_type: str) -> nn.Module:
    """Rebuild the trained model from a freshly built base model and `run_dir`; returned in eval mode."""
    method = check_method(method_cfg, task_type)
    run_dir = Path(run_dir)
    if method.storage == "full":
        model = storage.load_full(base_model, run_dir)
    elif method.storage == "trainable":
        model = storage.load_trainable_into(method.apply(base_model, method_cfg, task_type, True), run_dir)
    else:
        model = storage.load_peft_into(method.apply(base_model, method_cfg, task_type, True), run_dir)
    return model.eval()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors count once."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def merge_and_export(model: nn.Module, out_dir: str | Path) -> Path:
    """Merge a LoRA (or IA3) adapter into the base weights and save a standalone safetensors model.

    `model` is modified in place (the adapter is folded in). A model that is not a PeftModel is saved as is.
    """
    from peft import PeftModel

    from ..utils.io import atomic_path

    if isinstance(model, PeftModel):
        if model.active_peft_config.is_prompt_learning:
            kind = model.active_peft_config.peft_type.value.lower()
            raise RecipeError(f"method '{kind}' cannot be merged into the model: only lora/ia3 adapters can")
        model = model.merge_and_unload()
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
    return Path(out_dir)
