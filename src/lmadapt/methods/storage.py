"""How trained weights are written to and read back from a run folder (always safetensors).

- "full":      `model/` via `save_pretrained`; reloaded with the base model's class `from_pretrained`.
- "trainable": `model/trainable.safetensors` (only the tensors that train) + `model/method.json`;
               reloaded by applying the method to a fresh base model and loading the tensors into it.
- "peft":      `adapter/` via PEFT `save_pretrained` (includes `modules_to_save` heads); reloaded by
               applying the method (inference mode) and loading the adapter tensors.
Every saved tensor must find its place on reload, else it is an error, not a silent partial load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LmadaptError
from ..utils.io import atomic_path, read_json

if TYPE_CHECKING:
    from torch import nn

TRAINABLE_FILE = "trainable.safetensors"
METHOD_FILE = "method.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def method_record(method_cfg, task_type: str | None = None) -> dict:
    return {"method": method_cfg.model_dump(mode="json"), "task_type": task_type}


# --- full --------------------------------------------------------------------------------------------
def save_full(model: nn.Module, method_cfg, out_dir: Path) -> Path:
    with atomic_path(out_dir / "model") as tmp:
        model.save_pretrained(tmp)
        (tmp / METHOD_FILE).write_text(json.dumps(method_record(method_cfg), indent=2) + "\n")
    return out_dir / "model"


def load_full(base_model: nn.Module, run_dir: Path) -> nn.Module:
    folder = _need(run_dir / "model" / "config.json").parent
    return type(base_model).from_pretrained(folder, dtype=base_model.dtype)


# --- trainable -----------------------------------------------------------------------------------------
def save_trainable(model: nn.Module, method_cfg, out_dir: Path) -> Path:
    from safetensors.torch import save_file

    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    with atomic_path(out_dir / "model") as tmp:
        tmp.mkdir()
        save_file(tensors, str(tmp / TRAINABLE_FILE), metadata={"format": "pt"})
        record = method_record(method_cfg) | {"tensors": len(tensors)}
        (tmp / METHOD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out_dir / "model"


def load_trainable_into(model: nn.Module, run_dir: Path) -> nn.Module:
    """Load `model/trainable.safetensors` into `model` (the method already applied)."""
    from safetensors.torch import load_file

    path = _need(run_dir / "model" / TRAINABLE_FILE)
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise LmadaptError(
            f"{path}: {len(unknown)} saved tensors have no place in the model, e.g. {unknown[:3]}"
        )
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in tensors)
    if missing:
        raise LmadaptError(f"{path}: trainable tensors missing from the file, e.g. {missing[:3]}")
    for name, tensor in tensors.items():
        if params[name].shape != tensor.shape:
            raise LmadaptError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, model has {tuple(params[name].shape)}"
            )
    model.load_state_dict(tensors, strict=False)
    return model


# --- peft ------------------------------------------------------------------------------------------------
def save_peft(model: nn.Module, method_cfg, out_dir: Path) -> Path:
    with atomic_path(out_dir / "adapter") as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / METHOD_FILE).write_text(json.dumps(method_record(method_cfg), indent=2) + "\n")
    return out_dir / "adapter"


def load_peft_into(model: nn.Module, run_dir: Path) -> nn.Module:
    """Load `adapter/adapter_model.safetensors` into a PeftModel built with the same config."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = _need(run_dir / "adapter" / PEFT_WEIGHTS)
    result = set_peft_model_state_dict(model, load_file(str(path)))
    # prompt-learning weights are loaded into the prompt encoder separately, under this one key
    consumed = {"prompt_embeddings"} if model.active_peft_config.is_prompt_learning else set()
    unexpected = [k for k in result.unexpected_keys if k not in consumed]
    if unexpected:
        raise LmadaptError(
            f"{path}: {len(unexpected)} saved tensors have no place in the model, e.g. {unexpected[:3]}"
        )
    return model


def saved_method(run_dir: Path) -> dict | None:
    """The method record a run saved (`{"method": {...}, ...}`), or None if it saved none."""
    for sub in ("adapter", "model"):
        path = Path(run_dir) / sub / METHOD_FILE
        if path.exists():
            return read_json(path)
    return None


def _need(path: Path) -> Path:
    if not path.exists():
        raise LmadaptError(f"{path} not found: the run did not save trained weights there")
    return path
