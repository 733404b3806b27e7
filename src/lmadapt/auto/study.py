"""`lmadapt auto TRAIN --budget 20m`: a user's file and a wall-clock budget in, the best adapted model out.

Reads top to bottom:
1. **understand** the file (task, fields, script, label balance; an eval split carved when none is given),
   all checked before anything is written;
2. **plan**: candidates (tfidf; each pulled model whose tokenizer reads the text, with its methods), each
   probed on this machine for its cost; a budget shorter than the cheapest candidate is an error;
3. **search** in an Optuna study stored in OUTPUT/study.db (SQLite): the cheap candidates first (tfidf,
   once: cross-validation tunes it; each model's cheapest method), then TPE samples the candidate and its
   learning rate and Hyperband prunes by the eval metric after each epoch; a model's costlier methods open
   only while that model leads. A trial starts only when its predicted seconds (measured costs, scaled by
   how much longer than predicted earlier trials took) fit what is left of the budget, and each runs `python -m lmadapt.auto.trial` (its own
   process and peak memory) into an ordinary run folder OUTPUT/trials/trial-NNN;
4. **output**: the leaderboard of every trial (compare's md/csv/json/png), the winner scored once on the
   test split into OUTPUT/winner (an ordinary run folder: predict / export / serve read it), and the
   winning recipe OUTPUT/winner.yaml.

A killed `lmadapt auto` re-run with the same OUTPUT continues the study: finished trials are kept, not
repeated, and the plan (candidates, sizes) is the one stored in the study. Several `lmadapt auto` processes
given the same OUTPUT share the study (each a worker). A trial whose worker died is failed by Optuna's
heartbeat check once it has been silent for 3 heartbeats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from ..config.auto import METRICS, parse_budget  # noqa: F401  (parse_budget: lmadapt.auto.parse_budget)
from ..errors import DataError, LmadaptError, RecipeError
from ..utils.io import read_json, write_json, write_jsonl, write_text
from . import plan as planning
from .plan import Candidate, ProbeFailed
from .trial import PROGRESS, STOP
from .understand import EVAL_MAX, EVAL_SHARE, TRAINABLE, finish, read_file, stratified_split, understand

STUDY = "auto"
MARGIN_S = 5.0  # kept back for writing the leaderboard, its plot and the winner's folder
# settings auto gives a method beyond its defaults: tfidf's cross-validation in 3 folds, not 5 (its grid of C
# is the same); a freeze head of 256 hidden units
TFIDF_GROWTH, TFIDF_HEADROOM = 3, 1.25
MAX_SKIPS = 25
METHOD_SETTINGS = {"tfidf": {"cv_folds": 3}, "freeze": {"head_hidden": 256}}


class Skip(Exception):
    """A sampled trial that is not run (it cannot finish in the budget left, or it is not open yet)."""


class TrialFailed(Exception):
    """A trial process that ended without a complete run folder."""


def run_auto(
    train: str | Path,
    budget: float,
    output: str | Path = "runs/auto",
    eval_file: str | Path | None = None,
    test_file: str | Path | None = None,
    metric: str = "f1_macro",
    task: str | None = None,
    text: list[str] | None = None,
    label: str | None = None,
    models: list[str] | None = None,
    max_trials: int | None = None,
    heartbeat: int = 10,
    seed: int = 0,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> Path:
    """Search for the best adapted model within `budget` seconds of wall-clock; returns OUTPUT/winner."""
    import optuna

    started = clock()
    deadline = started + budget
    output = Path(output).resolve()
    if metric not in METRICS:
        raise RecipeError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    _check_output(output)

    # --- 1. understand the data (read and checked; nothing is written yet) -------------------------------
    records = read_file(train, "TRAIN")
    u = understand(records, str(train), task, text, label)
    for reason in u.reasons:
        say(f"  {reason}")
    if u.task not in TRAINABLE:
        raise DataError(
            f"{train}: this looks like a {u.task} task; auto adapts models for {' and '.join(TRAINABLE)} "
            "for now (name the fields with --task/--text/--label, or write a recipe for `lmadapt train`)"
        )
    eval_records = read_file(eval_file, "--eval") if eval_file else []
    test_records = read_file(test_file, "--test") if test_file else []
    finish(u, records, eval_records, test_records, str(train))
    if not eval_file:
        records, eval_records = stratified_split(records, u.label, EVAL_SHARE, EVAL_MAX, seed)
        u.n_train, u.n_eval = len(records), len(eval_records)
        say(f"no --eval: {len(eval_records):,} records held out of TRAIN for evaluation (stratified by "
            f"{u.label}, seed {seed}); the other {len(records):,} train")  # fmt: skip
    say(f"task {u.task}: text {', '.join(u.text)} -> label {u.label}; {len(u.labels)} labels, {u.balance()}")
    say(f"script {u.script} ({', '.join(f'{k} {v:.0%}' for k, v in u.script_shares.items())} of letters); "
        f"train {u.n_train:,}, eval {u.n_eval:,}, test {u.n_test:,}" + ("" if test_file else " (no --test)"))  # fmt: skip
    understood = {"task": u.task_section(), "train": str(Path(train).resolve()), "labels": u.labels,
                  "eval": str(Path(eval_file).resolve()) if eval_file else None}  # fmt: skip

    # --- 2. plan: the stored plan of a study to continue, or candidates probed on this machine ------------
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = _storage(output, heartbeat) if (output / "study.db").exists() else None
    plan = _stored_plan(storage)
    if plan is not None:
        if plan["understood"] != understood:
            raise RecipeError(
                f"{output}: holds a study of other data or fields ({plan['understood']['train']}, "
                f"{plan['understood']['task']}); choose another --output to start a new one"
            )
        say(f"continuing the study in {output / 'study.db'} (its stored plan; no new probes)")
    else:
        plan = _make_plan(u, understood, records, eval_records, eval_file, budget, deadline, test_records,
                          models or [], metric, seed, say, clock)  # fmt: skip

    # --- the output folder and the study (under a lock: workers may be starting together) ----------------
    output.mkdir(parents=True, exist_ok=True)
    with _locked(output):
        if storage is None:
            storage = _storage(output, heartbeat)
        study = optuna.create_study(
            storage=storage, study_name=STUDY, direction="maximize", load_if_exists=True,
            pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=planning.EPOCHS_MAX,
                                                  reduction_factor=3),
        )  # fmt: skip
        # each process that joins the study (a worker, a re-run) draws its own seeded stream of samples,
        # so no two draw the same: the seed and the how-manieth process this is
        joined = study.user_attrs.get("processes", 0)
        study.set_user_attr("processes", joined + 1)
        study.sampler = optuna.samplers.TPESampler(
            seed=seed + 1000 * joined, multivariate=True, group=True, n_startup_trials=5, constant_liar=True
        )
        if "plan" in study.user_attrs:
            plan = study.user_attrs["plan"]  # another worker planned first: one plan per study
        else:
            if plan.pop("carved", None) is not None:
                write_jsonl(output / "data" / "train.jsonl", records)
                write_jsonl(output / "data" / "eval.jsonl", eval_records)
            write_json(output / "plan.json", plan)
            study.set_user_attr("plan", plan)
            for name in plan["first_round"]:  # cheap candidates first, each once, at its default lr
                c = Candidate(**plan["candidates"][name])
                params = {"candidate": name} | ({f"{name}.lr": c.lr_range[2]} if c.lr_range else {})
                study.enqueue_trial(params)
    candidates = {name: Candidate(**c) for name, c in plan["candidates"].items()}

    # --- 3. search -----------------------------------------------------------------------------------------
    trials_end = deadline - plan["reserve_s"]
    cheapest = _cheapest_methods(candidates, plan["n_eval"])
    objective = _objective(study, plan, candidates, output, metric, trials_end, clock, say)
    say(_row_header(metric))
    while True:
        done = study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        if max_trials is not None and len(done) >= max_trials:
            say(f"{len(done)} trials in the study: --trials {max_trials} reached")
            break
        left = trials_end - clock()
        room = left / _slowdown(study)
        if not any(
            _runnable(c, study, cheapest, room, plan["n_train"], plan["n_eval"])[0]
            for c in candidates.values()
        ):
            say(f"budget: {max(left, 0):.0f} s left for trials: no open candidate fits in it; search done")
            break
        study.optimize(objective, n_trials=1, catch=(Skip, TrialFailed))
        if objective.skips >= MAX_SKIPS:
            say(
                f"{MAX_SKIPS} samples in a row could not run (not open, or too long for the time left): search done"
            )
            break

    # --- 4. output: leaderboard, winner (scored once on test), winning recipe -----------------------------
    with _locked(output):
        winner = _finish(study, plan, output, metric, test_file, say)
    say(f"wall time {clock() - started:.0f} s of the {budget:.0f} s budget")
    return winner


# ------------------------------------------------------------------------------------------------ planning
def _make_plan(u, understood, records, eval_records, eval_file, budget, deadline, test_records, models,
               metric, seed, say, clock) -> dict:  # fmt: skip
    """Candidates with measured costs, sized to the budget; a budget too short for any is an error."""
    scratch = Path(tempfile.mkdtemp(prefix="lmadapt-auto-data-"))
    try:
        train_path, eval_path = _data_paths(scratch, records, eval_records, understood)
        texts = [" ".join(str(r.get(f) or "") for f in u.text) for r in records]
        max_length = _max_length(texts)
        say(f"planning: probing each candidate on this machine (max_length {max_length})")
        n_eval = min(u.n_eval, planning.EVAL_CAP)
        base = _recipe_builder(u, train_path, eval_path, max_length, metric, seed)
        found = [Candidate("tfidf", None, "tfidf")] + planning.model_candidates(models, texts, say)
        planning.warm_imports()
        startup = planning.startup_seconds()
        candidates, slow_families = [], set()
        for c in found:
            if c.family in slow_families:  # its methods come cheapest first: the rest cost more per example
                say(
                    f"  {c.name}: not probed ({c.method} costs more per example than a method found too slow)"
                )
                continue
            c.startup_s = startup
            try:
                planning.probe(c, lambda c_, **kw: base(c_, max_train=None, **kw))
            except ProbeFailed as exc:
                say(f"  {exc}: dropped")
                continue
            too_slow = planning.size_for_budget(c, u.n_train, n_eval, budget)
            if too_slow:
                say(f"  {too_slow}")
                if c.model:
                    slow_families.add(c.family)
                continue
            candidates.append(c)
            say(f"  {c.name}: {c.train_s * 1000:.1f} ms per training example, {c.infer_s * 1000:.1f} ms per "
                f"prediction, {c.fixed_s:.1f} s to load and save; trains on {c.max_train:,} examples; one "
                f"trial ~{c.seconds(c.epochs_max, n_eval):.0f} s")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    reserve = MARGIN_S + max((c.test_seconds(u.n_test) for c in candidates), default=0.0)
    left = deadline - clock() - reserve
    cheapest = min(candidates, key=lambda c: c.seconds(1, n_eval), default=None)
    if cheapest is None or cheapest.seconds(1, n_eval) > left:
        need = (
            f"the cheapest candidate ({cheapest.name}) needs {cheapest.seconds(1, n_eval):.0f} s"
            if cheapest
            else "no candidate is left"
        )
        raise RecipeError(
            f"--budget {budget:.0f} s: {need}, and {max(left, 0):.0f} s are left after planning and the final "
            f"scoring ({reserve:.0f} s): give a longer --budget; nothing was written"
        )
    order = sorted(candidates, key=lambda c: c.seconds(c.epochs_max, n_eval))
    first = list(dict.fromkeys(_cheapest_methods({c.name: c for c in order}, n_eval).values()))
    return {
        "understood": understood, "carved": None if eval_file else True, "max_length": max_length,
        "n_train": u.n_train, "n_eval": n_eval, "n_eval_all": u.n_eval, "n_test": u.n_test, "script": u.script,
        "labels": u.labels, "counts": u.counts, "reasons": u.reasons, "metric": metric, "seed": seed,
        "budget_s": budget, "reserve_s": round(reserve, 1), "first_round": first,
        "candidates": {c.name: c.as_dict() for c in order},
    }  # fmt: skip


def _data_paths(folder: Path, records, eval_records, understood) -> tuple[str, str]:
    """Train / eval files the probes read: the user's, or the carved split written to `folder`."""
    if understood["eval"]:
        return understood["train"], understood["eval"]
    write_jsonl(folder / "train.jsonl", records)
    write_jsonl(folder / "eval.jsonl", eval_records)
    return str(folder / "train.jsonl"), str(folder / "eval.jsonl")


def _max_length(texts: list[str]) -> int:
    """Tokens a trial keeps: the 90th percentile text length (about 4 characters a token), 32..256."""
    lengths = sorted(len(t) for t in texts)
    p90 = lengths[int(0.9 * (len(lengths) - 1))] / 4 if lengths else 64
    return int(min(256, max(32, math.ceil(p90 / 32) * 32)))


def _recipe_builder(u, train_path: str, eval_path: str, max_length: int, metric: str, seed: int):
    """(candidate, lr, epochs, max_train) -> a raw recipe of one trial (output set by the caller)."""

    def build(c: Candidate, lr: float | None, epochs: int, max_train: int | None) -> dict:
        if c.method == "fewshot":
            return _prompt_recipe(u, c, train_path, eval_path, max_length, seed)
        method = {"type": c.method} | METHOD_SETTINGS.get(c.method, {})
        return {
            "model": c.model or "none",  # tfidf loads no model (compare shows '-')
            "task": u.task_section() | {"labels": u.labels},
            "data": {"train": train_path, "eval": eval_path, "test": None, "seed": seed,
                     "max_train": max_train if max_train and max_train < u.n_train else None,
                     "max_eval": planning.EVAL_CAP if u.n_eval > planning.EVAL_CAP else None},
            "method": method,
            "stage": "finetune",
            "train": {"epochs": epochs, "lr": lr or 1e-3, "batch_size": planning.BATCH_SIZE,
                      "max_length": max_length, "seed": seed, "logging_steps": 10},
            "eval": {"every": "epoch", "best_metric": metric},
            "output": "runs/auto-trial",
        }  # fmt: skip

    return build


def _prompt_recipe(u, c: Candidate, train_path: str, eval_path: str, max_length: int, seed: int) -> dict:
    """A few-shot prompting trial: the decoder answers eval with FEWSHOT_K random training demonstrations."""
    return {
        "model": c.model,
        "task": u.task_section() | {"labels": u.labels},
        "data": {"train": train_path, "eval": eval_path, "test": None, "seed": seed,
                 "max_eval": planning.EVAL_CAP if u.n_eval > planning.EVAL_CAP else None},
        "stage": "prompt",
        "prompt": {"mode": "few_shot", "k": planning.FEWSHOT_K, "selection": "random", "max_new_tokens": 8},
        "train": {"max_length": min(2048, (planning.FEWSHOT_K + 1) * max_length + 64), "seed": seed},
        "output": "runs/auto-trial",
    }  # fmt: skip


def _storage(output: Path, heartbeat: int):
    """The study's SQLite storage; a trial whose worker sent no heartbeat for 3 intervals is failed."""
    import optuna

    return optuna.storages.RDBStorage(
        f"sqlite:///{output / 'study.db'}", engine_kwargs={"connect_args": {"timeout": 120}},
        heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
    )  # fmt: skip


def _stored_plan(storage) -> dict | None:
    if storage is None:
        return None
    import optuna

    try:
        return optuna.load_study(study_name=STUDY, storage=storage).user_attrs.get("plan")
    except KeyError:  # the database exists, the study not yet (a worker killed while creating it)
        return None


def _check_output(output: Path) -> None:
    if output.exists() and (
        not output.is_dir() or (any(output.iterdir()) and not (output / "study.db").exists())
    ):
        raise RecipeError(f"--output {output}: exists and holds no auto study; choose a new or empty folder")


@contextlib.contextmanager
def _locked(output: Path):
    """One worker at a time (planning, writing the results): an exclusive lock on OUTPUT/.lock."""
    with open(output / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------ search
def _objective(study, plan, candidates, output, metric, trials_end, clock, say):
    """The Optuna objective: sample a candidate and its lr, check it fits and is open, run it."""
    import optuna

    from ..config import parse_recipe, recipe_to_yaml

    names = list(candidates)
    n_eval = plan["n_eval"]
    cheapest = _cheapest_methods(candidates, n_eval)
    u = _Understood(plan)
    base = _recipe_builder(u, *_trial_data(plan, output), plan["max_length"], metric, plan["seed"])

    def objective(trial: optuna.Trial) -> float:
        c = candidates[trial.suggest_categorical("candidate", names)]
        lr = trial.suggest_float(f"{c.name}.lr", *c.lr_range[:2], log=True) if c.lr_range else None
        same = [  # tfidf has no sampled parameter: it runs again on more data, which _runnable decides
            t.number
            for t in _started(study) + _pruned(study)
            if t.params == trial.params and t.number != trial.number and c.method != "tfidf"
        ]
        left = trials_end - clock()
        slow = _slowdown(study)
        c, why = (
            (None, f"the same as trial {same[0]}")
            if same
            else _runnable(c, study, cheapest, left / slow, plan["n_train"], n_eval)
        )
        if c is None:
            objective.skips += 1
            trial.set_user_attr("skipped", why)
            fallback = _fallback(study, candidates, cheapest, left / slow, plan["n_train"], n_eval)
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
        stop_at = trials_end - slow * c.final_seconds(n_eval)
        state, value, seconds = _run_trial(
            trial, recipe_file, output / "logs" / name, metric, stop_at, trials_end, clock
        )
        metrics = _metrics(output / "trials" / name)
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


def _cheapest_methods(candidates: dict, n_eval: int) -> dict[str, str]:
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


def _runnable(c: Candidate, study, cheapest: dict[str, str], room: float, n_train: int, n_eval: int):
    """(`c` as a trial would run it, None) when it is open and one epoch fits in `room` predicted seconds,
    else (None, why). tfidf's size is what fits: it runs again only on at least 1.5x the data of its last
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
    if cheapest.get(c.family) == c.name:
        return c, None
    leader = _best(study)
    if leader is not None and leader.user_attrs.get("model") == c.model:
        return c, None
    return None, f"{c.method} on {c.model} opens once {cheapest.get(c.family)} leads the study"


def _fallback(
    study, candidates: dict, cheapest: dict[str, str], room: float, n_train: int, n_eval: int
) -> str | None:
    """The candidate to run instead of a skipped one: the leader's, else the cheapest runnable one."""
    fits = [c for c in candidates.values() if _runnable(c, study, cheapest, room, n_train, n_eval)[0]]
    leader = _best(study)
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


def _slowdown(study) -> float:
    """How much longer than predicted the trials so far took (at least 1): the probes run warm in one process,
    a trial's process pays for its own start; measured on the trials that ran their course."""
    ratios = [
        t.user_attrs["seconds"] / t.user_attrs["predicted_s"]
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("state") == "complete" and t.user_attrs.get("predicted_s")
    ]
    return max([1.0, *ratios])


def _best(study):
    complete = _complete(study)
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def _run_trial(trial, recipe_file: Path, stem: Path, metric: str, stop_at: float, kill_at: float, clock):
    """Run one trial process; report each epoch's eval metric to the pruner. (state, value, seconds)."""
    control = stem.with_suffix(".control")
    shutil.rmtree(control, ignore_errors=True)
    control.mkdir(parents=True)
    start = clock()
    read = 0
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
                if value is not None:
                    trial.report(value, max(record["epoch"], 1))
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
    metrics = _metrics(folder)
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


def _metrics(folder: Path) -> dict:
    from ..runs import RunDir

    run = RunDir(folder)
    return run.read_metrics() if run.is_finished() else {}


def _row_header(metric: str) -> str:
    return f"{'trial':>5}  {'model':<22} {'method':<7} {'params':<34} {metric:>9} {'seconds':>8} {'mem MB':>7}  state"


def _row(number: int, c: Candidate, params: dict, value, seconds: float, metrics: dict, state: str) -> str:
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    rss = (metrics.get("cost") or {}).get("peak_rss_mb")
    score = f"{value:.4f}" if value is not None else "-"
    return (f"{number:>5}  {(c.model and Path(c.model).name or '-'):<22} {c.method:<7} {shown:<34} {score:>9} "
            f"{seconds:>8.1f} {rss if rss is not None else '-':>7}  {state}")  # fmt: skip


# ------------------------------------------------------------------------------------------------ output
def _finish(study, plan: dict, output: Path, metric: str, test_file, say) -> Path:
    """Leaderboard of every trial, the winner's run folder (test scored once), the winning recipe."""
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
        item.metrics = _metrics(Path(recipe.output))
        rows.append(item)
    for stale in (output / "trials").glob(".trial-*.incomplete"):  # trials of killed workers
        number = int(stale.name.split("-")[1].split(".")[0])
        if study.get_trials(deepcopy=False)[number].state.is_finished():
            shutil.rmtree(stale, ignore_errors=True)
    winner = _best(study)
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
        or not (winner_dir / "status.json").exists()
    ):
        _write_winner(Path(winner.user_attrs["recipe"]), winner_dir, test_path, say)
        write_json(marker, {"trial": winner.number, "test": test_path, metric: winner.value})
    recipe = load_recipe(winner_dir / "config.yaml")
    write_text(output / "winner.yaml", recipe_to_yaml(recipe))
    final = _metrics(winner_dir).get("final") or {}
    scores = "; ".join(f"{split} {metric} {v.get(metric, float('nan')):.4f}" for split, v in final.items())
    say(
        f"winner: trial {winner.number} ({winner.params['candidate']}, {winner.user_attrs['params']}): {scores}"
    )
    say(f"winner run folder: {winner_dir}; its recipe: {output / 'winner.yaml'}; leaderboard: {board}")
    return winner_dir


def _write_winner(recipe_file: Path, winner_dir: Path, test_path: str | None, say) -> None:
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
