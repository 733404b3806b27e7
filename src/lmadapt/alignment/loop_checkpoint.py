"""Resumable checkpoints for a hand-written training loop (stage ppo), in the project's verified layout.

`checkpoints/checkpoint-N/` holds `weights.safetensors` (every trainable tensor: the policy's adapter or its
weights, and the value head), `optimizer.safetensors` + `optimizer.json` (AdamW's moments and step counts,
its param groups), `rng.safetensors` (torch's generator) and `state.json` (step, KL controller, python and
numpy RNG states, the history so far); then training/checkpoints.py's manifest (every file's sha256),
written last, so a torn checkpoint is skipped on resume. No pickles: tensors in safetensors, the rest JSON.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from ..training.checkpoints import MANIFEST, checkpoint_steps, latest_checkpoint, write_manifest
from ..utils.io import read_json, write_json


def save_loop_checkpoint(folder: Path, step: int, tensors: dict, optimizer, state: dict, keep: int) -> Path:
    """Write checkpoint-`step` (manifest last), then keep only the newest `keep` verified ones."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    path = Path(folder) / f"checkpoint-{step}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path / "weights.safetensors")
    )
    moments, groups = _optimizer_tensors(optimizer)
    save_file(moments, str(path / "optimizer.safetensors"))
    write_json(path / "optimizer.json", {"param_groups": groups})
    save_file({"torch": torch.get_rng_state()}, str(path / "rng.safetensors"))
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    rng = {"python": _listify(random.getstate()), "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    write_json(path / "state.json", state | {"step": step, "rng": rng})
    write_manifest(path, step, None)
    verified = [p for _, p in checkpoint_steps(Path(folder)) if (p / MANIFEST).is_file()]
    for old in verified[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_loop_checkpoint(folder: Path, params: dict, optimizer, log) -> dict | None:
    """Restore the newest verified checkpoint into `params` (name -> tensor), `optimizer` and the RNGs;
    returns its state.json (with `step`), or None when there is none."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    path = latest_checkpoint(Path(folder), log)
    if path is None:
        return None
    saved = load_file(str(path / "weights.safetensors"))
    if set(saved) != set(params):
        raise ValueError(f"{path}: its tensors do not match the model's trainable ones")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)
    _load_optimizer(
        optimizer, load_file(str(path / "optimizer.safetensors")), read_json(path / "optimizer.json")
    )
    state = read_json(path / "state.json")
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
    random.setstate(_tuplify(state["rng"]["python"]))
    kind, keys, pos, has_gauss, cached = state["rng"]["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    log(f"resuming from {path.name}")
    return state


def _optimizer_tensors(optimizer) -> tuple[dict, list]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
    return tensors, state["param_groups"]


def _load_optimizer(optimizer, tensors: dict, record: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})


def _listify(value):
    return [_listify(v) for v in value] if isinstance(value, tuple | list) else value


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value
