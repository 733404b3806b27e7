"""The search of `lmadapt auto`: Optuna's objective (sample a candidate and its learning rate, check that it
fits what is left of the budget and is open, run it in its own process reporting each epoch to the pruner),
and what it reads of the study (the leader, trials started, how much longer than predicted trials took).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..utils.io import write_text
from . import plan as planning
from .plan import Candidate, recipe_builder
from .trial import PROGRESS, STOP

TFIDF_GROWTH, TFIDF_HEADROOM = 3, 1.25
MAX_SKIPS = 25  # samples in a row that could not run: the search ends
OPEN_MARGIN = 0.02  # a model's costlier methods open once its best is this close to the leader (metric units)


class Skip(Exception):
    """A sampled trial that is not run (it cannot finish in the budget left, or it is not open yet)."""


class TrialFailed(Exception):
    """A trial process that ended without a complete run folder."""


# ------------------------------------------------------------------------------------------------ search
def pruner():
    """Optuna's successive halving, each candidate against its own trials only.

    Learning curves differ by method: full fine-tuning under warm-up and linear decay is far behind a head on
    frozen features after one epoch of three and ahead after the third (pubmed-mesh: minilm full 0.90 after
    epoch 1, pruned against freeze trials, though the recipe's full run ends 3 points above freeze on test).
    So a trial competes at each epoch only with trials of its own candidate (other learning rates); the first
    trial of a candidate always runs its course."""
    import optuna

    class ByCandidate(optuna.pruners.BasePruner):
        def __init__(self) -> None:
            self._halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)

        def prune(self, study, trial) -> bool:
            return self._halving.prune(_SameCandidate(study, trial.params.get("candidate")), trial)

    return ByCandidate()


class _SameCandidate:
    """The part of a study successive halving reads, showing only the trials of one candidate."""

    def __init__(self, study, candidate: str | None):
        self._study, self._candidate = study, candidate
        self._storage, self.direction = study._storage, study.direction

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.params.get("candidate") == self._candidate]


def untried(study, candidates: dict, cheapest: dict[str, str], left: float, n_train: int, n_eval: int):
    """The cheapest candidate that is open and fits but was never given a trial, or None: each method runs
    once at its default learning rate before TPE's samples tune the learning rates of the leaders (TPE alone
    kept sampling the method that had completed trials: seven minilm freeze trials, one full, no lora)."""
    given = set()
    for t in study.get_trials(deepcopy=False):
        fixed = t.system_attrs.get("fixed_params") or {}
        if "skipped" not in t.user_attrs:
            given.add(t.params.get("candidate") or fixed.get("candidate"))
    fits = [
        c
        for c in candidates.values()
        if c.name not in given
        and runnable(c, study, cheapest, left / slowdown(study, c), n_train, n_eval, candidates)[0]
    ]
    return min(fits, key=lambda c: c.seconds(c.epochs_max, n_eval), default=None)


def build_objective(study, plan, candidates, output, metric, trials_end, clock, say, reserve=lambda: 0.0):
    """The Optuna objective: sample a candidate and its lr, check it fits and is open, run it. A trial must
    fit before `trials_end` less `reserve()` seconds (the leader's refit) and is killed at `trials_end`."""
    import optuna

    from ..config import parse_recipe, recipe_to_yaml

    names = list(candidates)
    n_eval = plan["n_eval"]
    cheapest = cheapest_methods(candidates, n_eval)
    u = _Understood(plan)
    base = recipe_builder(u, *_trial_data(plan, output), plan["max_length"], metric, plan["seed"])

    def objective(trial: optuna.Trial) -> float:
        c = candidates[trial.suggest_categorical("candidate", names)]
        lr = trial.suggest_float(f"{c.name}.lr", *c.lr_range[:2], log=True) if c.lr_range else None
        same = [  # tfidf has no sampled parameter: it runs again on more data, which runnable decides
            t.number
            for t in _started(study) + _pruned(study)
            if t.params == trial.params and t.number != trial.number and c.method != "tfidf"
        ]
        end = trials_end - reserve()
        left = end - clock()
        slow = slowdown(study, c)
        c, why = (
            (None, f"the same as trial {same[0]}")
            if same
            else runnable(c, study, cheapest, left / slow, plan["n_train"], n_eval, candidates)
        )
        if c is None:
            objective.skips += 1
            trial.set_user_attr("skipped", why)
            fallback = _fallback(study, candidates, cheapest, left, plan["n_train"], n_eval)
            if fallback is not None:
                study.enqueue_trial({"candidate": fallback})
            raise Skip(why)
        objective.skips = 0
        epochs = max(e for e in range(1, c.epochs_max + 1) if slow * c.seconds(e, n_eval) <= left)

        name = f"trial-{trial.number:03d}"
        predicted = slow * c.seconds(epochs, n_eval)
        raw = base(c, lr=lr, epochs=epochs, max_train=c.max_train) | {"output": str(output / "trials" / name)}
        recipe_file = output / "recipes" / f"{name}.yaml"
        write_text(recipe_file, recipe_to_yaml(parse_recipe(raw, str(recipe_file))))
        params = (
            ({"lr": f"{lr:.1e}", "epochs": epochs} if lr else {})
            | ({"k": planning.FEWSHOT_K} if c.method == "fewshot" else {})
            | {"train": c.max_train}
        )
        attrs = {"name": name, "model": c.model or "-", "method": c.method, "params": params,
                 "predicted_s": round(predicted, 1), "left_s": round(left, 1), "recipe": str(recipe_file), "worker": os.getpid()}  # fmt: skip
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        stop_at = end - slow * c.final_seconds(n_eval)
        state, value, seconds = _run_trial(
            trial, recipe_file, output / "logs" / name, metric, stop_at, trials_end, clock
        )
        metrics = trial_metrics(output / "trials" / name)
        trial.set_user_attr("seconds", round(seconds, 1))
        trial.set_user_attr("state", state)
        trial.set_user_attr("peak_rss_mb", (metrics.get("cost") or {}).get("peak_rss_mb"))
        say(_row(trial.number, c, params, value, seconds, metrics, state))
        if state == "pruned":
            raise optuna.TrialPruned()
        if state == "stopped":
            trial.set_user_attr("note", "training cut short by the budget")
        if state == "failed":
            raise TrialFailed(f"{name}: the trial process failed; see {output / 'logs' / name}.log")
        return value

    objective.skips = 0  # samples in a row that could not run: the search ends when that goes on
    return objective


class _Understood:
    """What the recipe builder needs from an Understanding, rebuilt from a stored plan."""

    def __init__(self, plan: dict):
        self._task = plan["understood"]["task"]
        self.labels, self.n_train, self.n_eval = plan["labels"], plan["n_train"], plan["n_eval_all"]

    def task_section(self) -> dict:
        return dict(self._task)


def cheapest_methods(candidates: dict, n_eval: int) -> dict[str, str]:
    """family (a model's training methods; its prompting) -> the name of its cheapest candidate (tfidf
    counts as a model of its own)."""
    out: dict[str, str] = {}
    for c in sorted(candidates.values(), key=lambda c: c.seconds(c.epochs_max, n_eval)):
        out.setdefault(c.family, c.name)
    return out


def _trial_data(plan: dict, output: Path) -> tuple[str, str]:
    if plan["understood"]["eval"]:
        return plan["understood"]["train"], plan["understood"]["eval"]
    return str(output / "data" / "train.jsonl"), str(output / "data" / "eval.jsonl")


def runnable(
    c: Candidate, study, cheapest: dict[str, str], room: float, n_train: int, n_eval: int, candidates=None
):
    """(`c` as a trial would run it, None) when it is open and one epoch fits in `room` predicted seconds,
    else (None, why). A candidate too slow to train on all of train (it trains on a subset) waits until every
    open candidate that trains on all of it has run once: cheap and complete first, expensive when time is
    left. tfidf's size is what fits: it runs again only on at least 1.5x the data of its last
    run (cross-validation tunes it; more data is all a rerun can add): first the planned size, then up to
    TFIDF_GROWTH times the last, within 1 / TFIDF_HEADROOM of the room (a tfidf run cannot stop early and
    keep what it has, so it keeps a reserve against a slow machine)."""
    if c.method == "tfidf":
        ran = max((t.user_attrs["params"]["train"] for t in _started(study) if t.params.get("candidate") == c.name), default=0)  # fmt: skip
        target = min(n_train, TFIDF_GROWTH * ran) if ran else c.max_train
        spare = room / TFIDF_HEADROOM - c.startup_s - c.fixed_s - c.infer_s * n_eval
        size = min(target, math.floor(spare / c.train_s)) if c.train_s > 0 else target
        if size < planning.MIN_TRAIN or (ran and (ran >= n_train or size < 1.5 * ran)):
            why = f"tfidf ran on {ran:,} examples" if ran else f"tfidf needs {c.seconds(1, n_eval):.0f} s"
            return None, f"{why}; {room:.0f} s left"
        return dataclasses.replace(c, max_train=size), None
    if c.seconds(1, n_eval) > room:
        return None, f"needs {c.seconds(1, n_eval):.0f} s, {room:.0f} s left"
    if not _open(c, study, cheapest):
        return None, (f"{c.method} on {c.model} opens once {c.model}'s best is within {OPEN_MARGIN:.2f} of the "
                      "leader's")  # fmt: skip
    if candidates is not None and c.method not in planning.UNTRAINED and c.max_train < n_train:
        ran = {t.params.get("candidate") for t in _started(study) + _pruned(study)}
        waiting = [
            o.name for o in candidates.values()
            if o.max_train >= n_train and o.method != "tfidf" and o.name not in ran and _open(o, study, cheapest)
        ]  # fmt: skip
        if waiting:
            return None, f"trains on a subset ({c.max_train:,} examples): after {', '.join(waiting)}"
    return c, None


def _open(c: Candidate, study, cheapest: dict[str, str]) -> bool:
    """A family's cheapest method is always open; the model's costlier ones once its best trial is within
    OPEN_MARGIN of the leader (a model just behind may lead with a stronger method)."""
    if cheapest.get(c.family) == c.name:
        return True
    leader = best_trial(study)
    own = [t.value for t in _complete(study) if t.user_attrs.get("model") == c.model]
    return leader is not None and bool(own) and max(own) >= leader.value - OPEN_MARGIN


def _fallback(
    study, candidates: dict, cheapest: dict[str, str], left: float, n_train: int, n_eval: int
) -> str | None:
    """The candidate to run instead of a skipped one: the leader's, else the cheapest runnable one."""
    fits = [
        c
        for c in candidates.values()
        if runnable(c, study, cheapest, left / slowdown(study, c), n_train, n_eval, candidates)[0]
    ]
    leader = best_trial(study)
    lead = leader.params.get("candidate") if leader else None
    if any(c.name == lead for c in fits):
        return lead
    return min(fits, key=lambda c: c.seconds(1, n_eval)).name if fits else None


def _started(study) -> list:
    """Trials that ran or run now (in any worker), with what they were given."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    return [t for t in study.get_trials(deepcopy=False, states=states) if "params" in t.user_attrs]


def _pruned(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))


def _complete(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def slowdown(study, c: Candidate) -> float:
    """How much longer than predicted `c`'s trials took (at least 1), measured on the trials that ran their
    course: the probes run warm in one process, a trial's process pays for its own start. A candidate not yet
    run takes the median over all candidates: one candidate's miss (e.g. prompting's long prompts) must not
    shrink what every other one is given."""
    ratios = {
        t.number: (t.params.get("candidate"), t.user_attrs["seconds"] / t.user_attrs["predicted_s"])
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("state") == "complete" and t.user_attrs.get("predicted_s")
    }
    own = [r for name, r in ratios.values() if name == c.name]
    if own:
        return max([1.0, *own])
    return max(1.0, statistics.median(r for _, r in ratios.values())) if ratios else 1.0


def refit_size(trial, plan: dict) -> int:
    """Training examples of the winner's refit: its trial's share of train, applied to train + eval."""
    n_train, n_all = plan["n_train"], plan["n_train"] + plan["n_eval_all"]
    used = trial.user_attrs["params"]["train"]
    return n_all if used >= n_train else max(round(used * n_all / n_train), used)


def refit_seconds(trial, c: Candidate, plan: dict, epochs: int | None = None) -> float:
    """Predicted seconds to refit `trial`'s configuration on train + eval (`epochs` of its trial's) and score
    test: the trial's own measured seconds scaled by the data and the epochs, plus the test predictions.
    Measured, not probed: the probes' per-example costs ran 1.9x over a full fine-tuning trial's."""
    used, ran = trial.user_attrs["params"]["train"], trial.user_attrs["params"].get("epochs", 1)
    scale = refit_size(trial, plan) / max(used, 1) * min(epochs or ran, ran) / ran
    return trial.user_attrs["seconds"] * scale + c.infer_s * plan["n_test"]


def refit_reserve(study, candidates: dict, plan: dict) -> float:
    """Seconds kept back from the trials so that the leader gets its refit on train + eval; 0 with no
    leader, or a prompting one (nothing to train)."""
    leader = best_trial(study)
    c = candidates.get(leader.params.get("candidate")) if leader is not None else None
    if c is None or c.method == "fewshot" or "seconds" not in leader.user_attrs:
        return 0.0
    return refit_seconds(leader, c, plan)


def best_epoch(folder: Path, metric: str, epochs: int) -> int:
    """The epoch of the evaluation a trial kept (the first best: the Trainer keeps it), else `epochs`."""
    history = [
        h for h in trial_metrics(folder).get("history") or [] if h.get("split") == "eval" and metric in h
    ]
    if not history:
        return epochs
    best = max(history, key=lambda h: (h[metric], -(h.get("epoch") or 0)))
    return max(round(best.get("epoch") or epochs), 1)


def best_trial(study):
    complete = _complete(study)
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def _run_trial(trial, recipe_file: Path, stem: Path, metric: str, stop_at: float, kill_at: float, clock):
    """Run one trial process; report each epoch's eval metric to the pruner. (state, value, seconds)."""
    control = stem.with_suffix(".control")
    shutil.rmtree(control, ignore_errors=True)
    control.mkdir(parents=True)
    start = clock()
    read = 0
    reported: set[int] = set()
    state = "complete"
    with open(stem.with_suffix(".log"), "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lmadapt.auto.trial", str(recipe_file), str(control)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        while proc.poll() is None:
            time.sleep(0.3)
            lines = _progress(control)
            for record in lines[read:]:
                value = record["metrics"].get(f"eval_{metric}")
                step = max(round(record["epoch"]), 1)
                if value is not None and step not in reported:
                    reported.add(step)
                    trial.report(value, step)
                    if state == "complete" and trial.should_prune():
                        state = "pruned"
                        (control / STOP).touch()
            read = len(lines)
            if clock() > stop_at and not (control / STOP).exists():
                (control / STOP).touch()  # the budget runs out: stop training, keep the best checkpoint
                state = "stopped"
            if clock() > kill_at:
                proc.kill()  # the prediction was far off: the budget is kept all the same
    seconds = clock() - start
    folder = Path(_recipe_output(recipe_file))
    metrics = trial_metrics(folder)
    value = ((metrics.get("final") or {}).get("eval") or {}).get(metric)
    if value is None:  # no complete run folder (a folder committed just before a kill counts)
        return "failed", None, seconds
    return state, value, seconds


def _recipe_output(recipe_file: Path) -> str:
    import yaml

    return yaml.safe_load(recipe_file.read_text(encoding="utf-8"))["output"]


def _progress(control: Path) -> list[dict]:
    path = control / PROGRESS
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written: read it next time
            break
    return out


def trial_metrics(folder: Path) -> dict:
    from ..runs import RunDir

    run = RunDir(folder)
    return run.read_metrics() if run.is_finished() else {}


def row_header(metric: str) -> str:
    return f"{'trial':>5}  {'model':<22} {'method':<7} {'params':<34} {metric:>9} {'seconds':>8} {'mem MB':>7}  state"


def _row(number: int, c: Candidate, params: dict, value, seconds: float, metrics: dict, state: str) -> str:
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    rss = (metrics.get("cost") or {}).get("peak_rss_mb")
    score = f"{value:.4f}" if value is not None else "-"
    return (f"{number:>5}  {(c.model and Path(c.model).name or '-'):<22} {c.method:<7} {shown:<34} {score:>9} "
            f"{seconds:>8.1f} {rss if rss is not None else '-':>7}  {state}")  # fmt: skip
