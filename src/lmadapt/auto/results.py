"""What `lmadapt auto` hands back: the leaderboard of every trial, the winner's run folder (trained again on
train + eval when that fits in the time left, then scored once on the test split) and the winning recipe.

Why refit: the search needs eval to choose, but the model a user takes away should learn from every labelled
example; so the winning configuration trains again on train + eval for the epochs its trial kept (its best
evaluation), as AutoGluon's refit_full does. With no time left for it, the winning trial's model is kept."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import LmadaptError
from ..utils.io import read_json, write_json, write_jsonl, write_text
from .search import best_epoch, best_trial, refit_seconds, refit_size, trial_metrics


def finish_study(
    study,
    plan: dict,
    candidates: dict,
    output: Path,
    metric: str,
    test_file,
    say,
    refit_s: float | None,
    labelled: list[dict],
) -> Path:
    """Leaderboard of every trial, the winner's run folder (refit on `labelled`, train + eval, when `refit_s`
    seconds allow it; test scored once), the winning recipe."""
    import optuna

    from ..compare import Planned, run_name, write_leaderboard
    from ..config import load_recipe, recipe_to_yaml

    states = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
              optuna.trial.TrialState.FAIL: "failed"}  # fmt: skip
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in states or "skipped" in t.user_attrs or "recipe" not in t.user_attrs:
            continue
        recipe = load_recipe(t.user_attrs["recipe"])
        item = Planned(
            run_name(f"t{t.number:03d}-{t.params['candidate'].replace(':', '-')}"),
            Path(t.user_attrs["recipe"]),
            [],
            recipe,
            status=states[t.state],
        )
        item.metrics = trial_metrics(Path(recipe.output))
        rows.append(item)
    for stale in (output / "trials").glob(".trial-*.incomplete"):  # trials of killed workers
        number = int(stale.name.split("-")[1].split(".")[0])
        if study.get_trials(deepcopy=False)[number].state.is_finished():
            shutil.rmtree(stale, ignore_errors=True)
    winner = best_trial(study)
    if winner is None:
        raise LmadaptError(
            f"no trial finished within the budget (see {output / 'logs'}); give a longer --budget"
        )
    board = write_leaderboard(rows, output, metric)
    say(board.read_text(encoding="utf-8"))
    winner_dir = output / "winner"
    marker = output / "winner.json"
    done = read_json(marker) if marker.exists() else {}
    test_path = str(Path(test_file).resolve()) if test_file else None
    if (
        done.get("trial") != winner.number
        or done.get("test") != test_path
        or done.get("refit") != (refit_s is not None)
        or not (winner_dir / "status.json").exists()
    ):
        refit = refit_s is not None and refit_winner(
            winner, plan, candidates, output, metric, test_path, refit_s, labelled, say
        )
        if not refit:
            write_winner(Path(winner.user_attrs["recipe"]), winner_dir, test_path, say)
        done = {"trial": winner.number, "test": test_path, metric: winner.value,
                "refit": refit_s is not None, "refit_done": refit}  # fmt: skip
        write_json(marker, done)
    recipe = load_recipe(winner_dir / "config.yaml")
    write_text(output / "winner.yaml", recipe_to_yaml(recipe))
    final = trial_metrics(winner_dir).get("final") or {}
    scores = "; ".join(f"{split} {metric} {v.get(metric, float('nan')):.4f}" for split, v in final.items())
    how = " refit on train + eval:" if done.get("refit_done") else ""
    say(
        f"winner: trial {winner.number} ({winner.params['candidate']}, {winner.user_attrs['params']}):{how} "
        f"{scores}"
    )
    say(f"winner run folder: {winner_dir}; its recipe: {output / 'winner.yaml'}; leaderboard: {board}")
    return winner_dir


def refit_winner(
    winner,
    plan: dict,
    candidates: dict,
    output: Path,
    metric: str,
    test_path,
    seconds: float,
    labelled: list[dict],
    say,
) -> bool:
    """Train the winning configuration again on `labelled` (train + eval) into OUTPUT/winner (test scored by
    the stage); False (said why) when it is a prompting winner, cannot fit in `seconds` or fails."""
    import yaml

    from ..config import parse_recipe, recipe_to_yaml

    c = candidates[winner.params["candidate"]]
    if c.method == "fewshot":
        return False
    raw = yaml.safe_load(Path(winner.user_attrs["recipe"]).read_text(encoding="utf-8"))
    epochs = best_epoch(Path(raw["output"]), metric, winner.user_attrs["params"].get("epochs", 1))
    size = refit_size(winner, plan)
    predicted = refit_seconds(winner, c, plan, epochs)
    if predicted > seconds:
        say(f"no refit on train + eval: it needs ~{predicted:.0f} s, {max(seconds, 0):.0f} s are left; "
            "the winning trial's model is kept")  # fmt: skip
        return False
    data = output / "data" / "train+eval.jsonl"
    if not data.exists():
        write_jsonl(data, labelled)
    n_all = plan["n_train"] + plan["n_eval_all"]
    raw["data"] |= {"train": str(data), "eval": None, "test": test_path, "max_eval": None,
                    "max_train": size if size < n_all else None}  # fmt: skip
    if raw["stage"] == "finetune" and raw["method"]["type"] != "tfidf":
        raw["train"]["epochs"] = epochs
    raw["output"] = str(output / "winner")
    recipe_file = output / "recipes" / "winner-refit.yaml"
    write_text(recipe_file, recipe_to_yaml(parse_recipe(raw, str(recipe_file))))
    say(f"refit: {winner.params['candidate']} again on train + eval ({size:,} examples"
        + (f", {epochs} epochs: its trial's best" if c.method != "tfidf" else "")
        + f"), ~{predicted:.0f} s; log {output / 'logs' / 'winner-refit.log'}")  # fmt: skip
    with open(output / "logs" / "winner-refit.log", "w", encoding="utf-8") as log:
        try:
            code = subprocess.run(
                [sys.executable, "-m", "lmadapt", "train", str(recipe_file)], stdout=log, stderr=subprocess.STDOUT,
                timeout=max(seconds, 1.0),
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            code = None
    if code != 0:
        why = "took longer than the time left" if code is None else f"exited {code}"
        say(f"the refit {why} (see its log): the winning trial's model is kept")
        return False
    return True


def write_winner(recipe_file: Path, winner_dir: Path, test_path: str | None, say) -> None:
    """The winning trial's run folder, copied and (with --test) scored once on the test split."""
    from ..config import load_recipe
    from ..data.load import load_split
    from ..evaluation import evaluate_splits
    from ..predict import load_predictor
    from ..runs import RunDir

    trial_recipe = load_recipe(recipe_file)
    trial_dir = Path(trial_recipe.output)
    trained = RunDir.open_complete(trial_dir, "auto")
    recipe = load_recipe(
        recipe_file, [f"output={winner_dir}", f"data.test={test_path}" if test_path else "data.test=null"]
    )
    if recipe.stage == "prompt":  # nothing was trained: the same prompting answers eval and test again
        from ..stages import run_stage

        run_stage(recipe)
        return
    run = RunDir.start(recipe)
    for item in trial_dir.iterdir():
        if item.name in ("status.json", "config.yaml", "plots"):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, run.path / item.name)
    shutil.copytree(trial_dir / "plots", run.path / "plots", dirs_exist_ok=True)
    run.write_config(recipe)
    metrics = trained.read_metrics()
    if test_path:
        with _quiet_loading():
            task, predict = load_predictor(trial_dir)
        records = load_split(None, test_path, task.fields(True))
        evaluation = evaluate_splits(
            task, {"test": records}, lambda _, recs: (predict(recs), None), None, run.log
        )
        metrics["final"] = (metrics.get("final") or {}) | evaluation.final
        write_jsonl(run / "predictions.jsonl", evaluation.predictions)
        report = read_json(trial_dir / "report.json") if (trial_dir / "report.json").exists() else {}
        write_json(run / "report.json", report | evaluation.report)
    run.write_metrics(
        metrics["final"], metrics.get("history") or [], metrics.get("cost") or {}, metrics.get("task")
    )
    run.log(
        f"auto: the winning trial {trial_dir.name}, copied"
        + (" and scored once on the test split" if test_path else "")
    )
    run.commit()


@contextlib.contextmanager
def _quiet_loading():
    """No load report or progress bar from transformers: the user's terminal shows auto's own lines."""
    import transformers.utils.logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
