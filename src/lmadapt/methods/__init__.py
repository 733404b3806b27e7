"""Adaptation methods: how a pretrained model is made trainable for a task, saved and reloaded.

    model = apply_method(model, recipe.method, "seq_cls")      # freeze / wrap as the method says
    ... train ...
    save_trained(model, recipe.method, run_dir)                 # run_dir/model/ or run_dir/adapter/
    model = load_trained(fresh_base_model, recipe.method, run_dir, "seq_cls")

Task types: "seq_cls", "token_cls", "span", "causal_lm", "masked_lm", "seq2seq_lm" (encoder-decoder LMs).

One module per method, registered once, in `MODULES`. The module defines its recipe section (`CONFIG`, a
Section selected by `type: <module name>`) and, for a neural method, `METHOD` (how to apply, save and reload
it). Both the recipe's `method:` union (`MethodConfig`) and the runtime lookup (`METHODS`) are built from
`MODULES`; a module whose section is missing or mis-tagged is named, with the file to edit, on import.
Reading a recipe imports this package for the sections, so its modules import torch and PEFT only inside
functions (the torch modules that methods insert live in layers.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config.base import registered_section, section_tag, tagged_union
from ..errors import RecipeError
from . import adapter, freeze, full, ia3, keyphrase, lora, prefix, prompt, ptuning, storage, tfidf
from .base import TASK_TYPES, Method

if TYPE_CHECKING:
    from torch import nn

# The one registration of each method (the order is the order `type:` choices are listed in errors).
# tfidf and keyphrase have a section but no METHOD: baselines that stand in for stage finetune
# (stages.BASELINES).
MODULES = (full, freeze, lora, adapter, prefix, prompt, ptuning, ia3, tfidf, keyphrase)

MethodConfig = tagged_union(MODULES)  # the recipe's `method:` section (lmadapt.config.recipe)


def _registered_methods(modules) -> dict[str, Method]:
    """`type:` -> Method for every module that defines `METHOD` (named after its section's tag)."""
    found = {}
    for module in modules:
        method = getattr(module, "METHOD", None)
        if method is None:
            continue
        tag = section_tag(registered_section(module))
        if method.name != tag:
            raise TypeError(
                f"{module.__file__}: METHOD.name is {method.name!r}; its CONFIG's type is {tag!r}"
            )
        found[tag] = method
    return found


METHODS: dict[str, Method] = _registered_methods(MODULES)

SAVERS = {"full": storage.save_full, "trainable": storage.save_trainable, "peft": storage.save_peft}

__all__ = [
    "METHODS",
    "MODULES",
    "MethodConfig",
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
        able = [name for name, m in METHODS.items() if task_type in m.tasks]
        why = method.why_not.get(task_type, f"not supported (methods that are: {', '.join(able)})")
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
