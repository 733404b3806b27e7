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
