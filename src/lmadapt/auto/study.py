"""`lmadapt auto TRAIN --budget 20m`: a user's file and a wall-clock budget in, the best adapted model out.

Reads top to bottom:
1. **understand** the file (task, fields, script, label balance; an eval split carved when none is given),
   all checked before anything is written;
2. **plan**: candidates (tfidf; each pulled model whose tokenizer reads the text, with its methods), each
   probed on this machine for its cost; a budget shorter than the cheapest candidate is an error;
3. **search** in an Optuna study stored in OUTPUT/study.db (SQLite): the cheap candidates first (tfidf,
   once: cross-validation tunes it; each model's cheapest method), each method once at its default learning
   rate as it opens (a model's costlier methods open while that model's best is near the leader's), then TPE
   samples the candidate and its learning rate; successive halving prunes a trial after an epoch when it is
   behind the trials of its own candidate. A trial starts only when its predicted seconds (measured costs,
   scaled by how much longer than predicted earlier trials took) fit what is left of the budget, and each
   runs `python -m lmadapt.auto.trial` (its own process and peak memory) into an ordinary run folder
   OUTPUT/trials/trial-NNN;
4. **output**: the leaderboard of every trial (compare's md/csv/json/png), the winner scored once on the
   test split into OUTPUT/winner (an ordinary run folder: predict / export / serve read it), and the
   winning recipe OUTPUT/winner.yaml.

A killed `lmadapt auto` re-run with the same OUTPUT continues the study: finished trials are kept, not
repeated, and the plan (candidates, sizes) is the one stored in the study. Several `lmadapt auto` processes
given the same OUTPUT share the study (each a worker). Workers on several machines share it through
`storage` (an Optuna RDB URL: PostgreSQL, MySQL) with OUTPUT one shared folder (NFS): trials are recorded
by their folders' paths. A trial whose worker died is failed by Optuna's heartbeat check once it has been
silent for 3 heartbeats.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from ..config.auto import METRICS, parse_budget  # noqa: F401  (parse_budget: lmadapt.auto.parse_budget)
from ..errors import DataError, RecipeError
from ..utils.io import write_json, write_jsonl
from . import plan as planning
from .plan import Candidate, ProbeFailed, recipe_builder
from .results import finish_study
from .search import (
    MAX_SKIPS,
    Skip,
    TrialFailed,
    build_objective,
    cheapest_methods,
    pruner,
    refit_reserve,
    row_header,
    runnable,
    slowdown,
    untried,
)
from .understand import EVAL_MAX, EVAL_SHARE, TRAINABLE, finish, read_file, stratified_split, understand

STUDY = "auto"
PLAN_SHARE = 0.25  # probing stops (cheapest candidates first: tfidf, encoders, decoders) past this share
MARGIN_S = 5.0  # kept back for writing the leaderboard, its plot and the winner's folder


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
    refit: bool = True,
    storage_url: str | None = None,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> Path:
    """Search for the best adapted model within `budget` seconds of wall-clock; returns OUTPUT/winner.
    With `refit`, the winner is trained again on train + eval (at its best epoch count) before test.
    `storage_url` (an Optuna RDB URL) holds the study instead of OUTPUT/study.db."""
    import optuna

    started = clock()
    deadline = started + budget
    output = Path(output).resolve()
    if metric not in METRICS:
        raise RecipeError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    _check_output(output, storage_url)

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
    where = _shown(storage_url) if storage_url else str(output / "study.db")
    study_name = f"{STUDY}:{output}" if storage_url else STUDY  # one database may hold many users' studies
    storage = (
        _storage(output, heartbeat, storage_url) if storage_url or (output / "study.db").exists() else None
    )
    plan = _stored_plan(storage, study_name)
    if plan is not None:
        if plan["understood"] != understood:
            raise RecipeError(
                f"{output}: holds a study of other data or fields ({plan['understood']['train']}, "
                f"{plan['understood']['task']}); choose another --output to start a new one"
            )
        say(f"continuing the study in {where} (its stored plan; no new probes)")
    else:
        plan = _make_plan(u, understood, records, eval_records, eval_file, budget, deadline, test_records,
                          models or [], metric, seed, say, clock)  # fmt: skip

    # --- the output folder and the study (under a lock: workers may be starting together) ----------------
    output.mkdir(parents=True, exist_ok=True)
    with _locked(output):
        if storage is None:
            storage = _storage(output, heartbeat, storage_url)
        study = optuna.create_study(
            storage=storage, study_name=study_name, direction="maximize", load_if_exists=True,
            pruner=pruner(),
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
    cheapest = cheapest_methods(candidates, plan["n_eval"])
    reserve = (lambda: refit_reserve(study, candidates, plan)) if refit else (lambda: 0.0)
    objective = build_objective(study, plan, candidates, output, metric, trials_end, clock, say, reserve)
    say(row_header(metric))
    while True:
        done = study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        if max_trials is not None and len(done) >= max_trials:
            say(f"{len(done)} trials in the study: --trials {max_trials} reached")
            break
        left = trials_end - reserve() - clock()
        if not any(
            runnable(
                c, study, cheapest, left / slowdown(study, c), plan["n_train"], plan["n_eval"], candidates
            )[0]
            for c in candidates.values()
        ):
            say(f"budget: {max(left, 0):.0f} s left for trials: no open candidate fits in it; search done")
            break
        with _locked(output):  # two workers must not both queue the same candidate
            fresh = untried(study, candidates, cheapest, left, plan["n_train"], plan["n_eval"])
            if fresh is not None:
                lr = {f"{fresh.name}.lr": fresh.lr_range[2]} if fresh.lr_range else {}
                study.enqueue_trial({"candidate": fresh.name} | lr)
        study.optimize(objective, n_trials=1, catch=(Skip, TrialFailed))
        if objective.skips >= MAX_SKIPS:
            say(
                f"{MAX_SKIPS} samples in a row could not run (not open, or too long for the time left): search done"
            )
            break

    # --- 4. output: leaderboard, winner (scored once on test), winning recipe -----------------------------
    with _locked(output):
        refit_s = deadline - MARGIN_S - clock() if refit else None
        winner = finish_study(
            study, plan, candidates, output, metric, test_file, say, refit_s, records + eval_records
        )
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
        base = recipe_builder(u, train_path, eval_path, max_length, metric, seed)
        found = planning.model_candidates(models, texts, say, u.n_train)
        found = [Candidate("tfidf", None, "tfidf")] + sorted(found, key=lambda c: c.kind == "decoder")
        planning.warm_imports()
        startup = planning.startup_seconds()
        candidates, slow_families = [], set()
        for i, c in enumerate(found):
            spent = clock() - (deadline - budget)
            if candidates and spent > PLAN_SHARE * budget:  # probing must leave the budget to the trials
                say(f"  planning has taken {spent:.0f} s of the {budget:.0f} s budget: not probed, so not tried: "
                    f"{', '.join(o.name for o in found[i:])}")  # fmt: skip
                break
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
    # the first round: each family's cheapest, if it trains on all of train (the slower ones wait: search.py)
    first = [
        name
        for name in dict.fromkeys(cheapest_methods({c.name: c for c in order}, n_eval).values())
        if next(c for c in order if c.name == name).max_train >= u.n_train
        or next(c for c in order if c.name == name).method in planning.UNTRAINED
    ]
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


def _storage(output: Path, heartbeat: int, url: str | None = None):
    """The study's storage (OUTPUT/study.db, or `url`); a trial whose worker sent no heartbeat for 3
    intervals is failed."""
    import optuna

    kwargs = {} if url else {"connect_args": {"timeout": 120}}
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                url or f"sqlite:///{output / 'study.db'}", engine_kwargs=kwargs,
                heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
            )  # fmt: skip
        except Exception as exc:  # a bad URL, a missing driver, a database that does not answer
            if not url:
                raise
            if attempt == 2:
                said = f"{type(exc).__name__}: {exc}".split("\n")[0].replace(url, _shown(url))
                raise RecipeError(f"--storage {_shown(url)}: {said}") from None  # the password never shown
            time.sleep(1)  # workers starting together race to create the tables: the loser finds them made


def _shown(url: str) -> str:
    """A storage URL as it may be printed: without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(the given URL)"


def _stored_plan(storage, study_name: str = STUDY) -> dict | None:
    if storage is None:
        return None
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage).user_attrs.get("plan")
    except KeyError:  # the database exists, the study not yet (a worker killed while creating it)
        return None


def _check_output(output: Path, storage_url: str | None) -> None:
    marker = output / (".lock" if storage_url else "study.db")  # .lock: made by the first worker
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not marker.exists())):
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
