"""One `lmadapt auto` trial in its own process: `python -m lmadapt.auto.trial RECIPE CONTROL_DIR`.

The recipe's stage runs as `lmadapt train` would run it (the same run folder), plus one callback that talks
to the study through two files in CONTROL_DIR: each evaluation appends `{"epoch", "metrics"}` to
progress.jsonl (the study reports it to Optuna's pruner), and when the study creates `stop` (pruned, or the
budget is running out) training stops at the next step; the best checkpoint is then evaluated and saved, so
the run folder is complete either way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROGRESS, STOP = "progress.jsonl", "stop"


def stop_callback(control: Path):
    """A TrainerCallback writing each evaluation to control/progress.jsonl and obeying control/stop."""
    from transformers import TrainerCallback

    class StudyLink(TrainerCallback):
        def on_evaluate(self, args, state, control_, metrics=None, **kwargs):
            record = {"epoch": round(state.epoch or 0), "metrics": metrics or {}}
            with open(control / PROGRESS, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            self._check(control_)

        def on_step_end(self, args, state, control_, **kwargs):
            self._check(control_)

        def _check(self, control_):
            if (control / STOP).exists():
                control_.should_training_stop = True

    return StudyLink()


def main(argv: list[str]) -> int:
    from ..config import load_recipe
    from ..errors import LmadaptError
    from ..stages import finetune, run_stage

    recipe_file, control = Path(argv[0]), Path(argv[1])
    try:
        recipe = load_recipe(recipe_file)
        if recipe.stage == "finetune" and recipe.method.type != "tfidf":
            finetune.run(recipe, callbacks=[stop_callback(control)])
        else:
            run_stage(recipe)
    except LmadaptError as exc:  # said in the trial's log, as `lmadapt train` says it
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
