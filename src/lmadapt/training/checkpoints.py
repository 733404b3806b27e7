"""Checkpoints a killed run can trust: a manifest written last, verified before resuming.

The `Trainer` writes `checkpoint-N/` (weights or adapter, optimizer, scheduler, RNG states of python, numpy
and torch, trainer_state.json with the step and epoch, i.e. the data position). It writes those files in
place, so a kill mid-save leaves a torn folder. After each save this callback fsyncs every file and then
writes `lmadapt-checkpoint.json` (each file's size and sha256) atomically: a checkpoint without a manifest that
matches its files is torn, and resuming falls back to the newest one that verifies. Older checkpoints are
deleted only after the new manifest is on disk, so one verified checkpoint always exists.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from ..utils import distributed
from ..utils.io import read_json, sha256_file, write_json

MANIFEST = "lmadapt-checkpoint.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_steps(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint-N folder, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return sorted(found, reverse=True)


def write_manifest(checkpoint: Path, step: int, epoch: float | None) -> None:
    files = {}
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        files[path.relative_to(checkpoint).as_posix()] = {
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    write_json(checkpoint / MANIFEST, {"step": step, "epoch": epoch, "files": files})
    with open(checkpoint / MANIFEST, "rb") as f:
        os.fsync(f.fileno())


def verify(checkpoint: Path) -> str | None:
    """None if the checkpoint is whole, else what is wrong with it."""
    try:
        manifest = read_json(checkpoint / MANIFEST)
    except FileNotFoundError:
        return "no manifest (the save did not finish)"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({exc})"
    for name, want in manifest.get("files", {}).items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["bytes"] or sha256_file(path) != want["sha256"]:
            return f"{name} does not match its manifest"
    return None


def latest_checkpoint(folder: Path, log: Callable[[str], None] = print) -> Path | None:
    """The newest checkpoint that verifies; torn ones newer than it are reported and deleted."""
    for step, path in checkpoint_steps(folder):
        problem = verify(path)
        if problem is None:
            return path
        log(f"checkpoint-{step} is torn: {problem}; falling back to an earlier one")
        shutil.rmtree(path, ignore_errors=True)
    return None


def save_arguments(save_every: int | None, eval_every, keep_best: bool) -> dict:
    """TrainingArguments for checkpointing: every `save_every` steps, and at each evaluation when the best
    checkpoint is kept (`keep_best`). Rotation is VerifiedCheckpoints' job, never the Trainer's."""
    from ..errors import RecipeError

    if save_every is None:
        if keep_best:
            strategy = "steps" if isinstance(eval_every, int) else eval_every
            return {"save_strategy": strategy, "save_steps": eval_every if strategy == "steps" else None}
        return {"save_strategy": "no"}
    if keep_best and (not isinstance(eval_every, int) or save_every % eval_every):
        raise RecipeError(
            f"train.save_every: {save_every} must be a multiple of eval.every (now {eval_every!r}) so "
            "the best checkpoint can be kept at evaluations; set eval.every to a step count that divides it"
        )
    return {"save_strategy": "steps", "save_steps": save_every}


class VerifiedCheckpoints(TrainerCallback):
    """After the Trainer saves: manifest last, then keep only the newest `keep` (plus the best) checkpoints."""

    def __init__(self, folder: Path, keep: int):
        self.folder = Path(folder)
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        distributed.barrier()  # every rank has written its part (its RNG state) before rank 0 vouches for it
        if not state.is_world_process_zero:
            return
        checkpoint = self.folder / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir():
            return
        write_manifest(checkpoint, state.global_step, state.epoch)
        best = Path(state.best_model_checkpoint).resolve() if state.best_model_checkpoint else None
        verified = [p for _, p in checkpoint_steps(self.folder) if (p / MANIFEST).is_file()]
        for old in verified[self.keep :]:
            if old.resolve() != best:
                shutil.rmtree(old, ignore_errors=True)
        for _, torn in checkpoint_steps(self.folder):  # left by a kill before this save
            if not (torn / MANIFEST).is_file() and torn != checkpoint:
                shutil.rmtree(torn, ignore_errors=True)


def train_from_latest(trainer, run_dir, *contexts) -> tuple[float, int | None]:
    """`trainer.train()` inside `contexts`, from the newest verified checkpoint when the run resumes.

    Returns (training seconds, the step it resumed from or None)."""
    import contextlib

    from ..runs import timer

    checkpoint = None
    if run_dir.resumed and distributed.is_main():  # rank 0 deletes torn checkpoints, then the others look
        checkpoint = latest_checkpoint(run_dir / "checkpoints", run_dir.log)
    distributed.barrier()
    if run_dir.resumed and not distributed.is_main():
        checkpoint = latest_checkpoint(run_dir / "checkpoints", run_dir.log)
    if checkpoint:
        run_dir.log(f"resuming from {checkpoint.name}")
    elif run_dir.resumed:
        run_dir.log("no verified checkpoint to resume from (set train.save_every): training from the start")
    with contextlib.ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        with timer() as seconds:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    run_dir.log(f"trained in {seconds():.1f}s")
    return seconds(), int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else None
