"""Training progress into the run folder's log.txt, one JSON line per Trainer log event."""

from __future__ import annotations

from transformers import TrainerCallback


class RunLog(TrainerCallback):
    """Copy each logged loss / eval result (with its step) into log.txt, so a long run shows where it is."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            # the Trainer's own progress bar already prints them
            self.run_dir.log_json({"step": state.global_step, "epoch": state.epoch} | logs, echo=False)


def history_from(log_history: list[dict]) -> list[dict]:
    """Trainer's log history -> [{step, epoch, split, metrics...}] (train losses and eval results)."""
    history = []
    for entry in log_history:
        base = {"step": entry.get("step"), "epoch": entry.get("epoch")}
        if "loss" in entry:
            history.append(base | {"split": "train", "loss": entry["loss"], "lr": entry.get("learning_rate")})
        elif any(k.startswith("eval_") for k in entry):
            metrics = {k[5:]: v for k, v in entry.items() if k.startswith("eval_") and not _timing(k)}
            history.append(base | {"split": "eval"} | metrics)
    return history


def _timing(key: str) -> bool:
    """Wall-clock fields the Trainer logs with eval results: cost, not results (they differ run to run)."""
    return "runtime" in key or key.endswith("per_second") or key.endswith("preparation_time")


def run_callbacks(run_dir, keep_checkpoints: int) -> list:
    """What every training stage attaches: progress into log.txt, and verified, rotated checkpoints."""
    from .checkpoints import VerifiedCheckpoints

    return [RunLog(run_dir), VerifiedCheckpoints(run_dir / "checkpoints", keep_checkpoints)]
