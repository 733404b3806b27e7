"""The candidates `lmadapt auto` may try, and what each costs on this machine, measured.

A candidate is a model and a method: `tfidf` (no model), or a pulled catalog model / a `--model` folder with
`freeze`, `lora`, `full` (encoders) or `lora` and `fewshot` (decoders: few-shot prompting, no training, its
demonstrations drawn from train). A model whose tokenizer turns most of the training
text into unknown tokens is no candidate (the log says so, with the share).

Costs are measured, never guessed: each candidate runs its real stage once in this process on a few
examples (PROBE_TRAIN of train, PROBE_EVAL of eval) into a scratch folder; the run's own cost record gives
the seconds per training example (`train_seconds`), per predicted example (`infer_examples_per_s`) and the
rest (loading, tokenizing, saving) as fixed seconds. Starting a trial process (Python, torch, transformers)
is timed once, for real. A trial's predicted seconds are then arithmetic on those measurements.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import LmadaptError

# method -> (lowest lr, highest lr, default lr): the ranges a practitioner searches for each method
LR_RANGES = {
    "full": (1e-5, 2e-4, 5e-5),
    "lora": (1e-4, 5e-3, 1e-3),
    "freeze": (1e-4, 1e-2, 2e-3),
}
ENCODER_METHODS = ("freeze", "lora", "full")
DECODER_METHODS = ("lora", "fewshot")
UNTRAINED = ("tfidf", "fewshot")  # one pass, no epochs, no learning rate
FEWSHOT_K = 4  # demonstrations per prompt
# prompting is tried with fewer labelled examples than this: with more, training wins and prompting costs
# much of a short budget (pubmed-mesh, 400 train, 15 min: two few-shot trials took 5 min and scored 0.34
# macro-F1, tfidf 0.93 in 5 s; docs/results-auto.md)
FEWSHOT_MAX_TRAIN = 100
UNK_LIMIT = 0.5  # a tokenizer that maps more of the text than this to its unknown token cannot read it
PROBE_TRAIN, PROBE_EVAL = 32, 16
EPOCHS_MAX = 3  # the pruner's resource: epochs, reported one by one
EPOCH_SHARE = 8  # one epoch of a candidate may take at most budget / EPOCH_SHARE: max_train follows
MIN_TRAIN = 32  # a candidate that cannot train on this many examples within that share is too slow
EVAL_CAP = 500  # every trial is scored on the same seeded subset of eval of at most this many records
BATCH_SIZE = 16


@dataclass
class Candidate:
    name: str  # "tfidf", "minilm-l6:lora"
    model: str | None  # catalog name or folder; None for tfidf
    method: str
    kind: str = "-"  # encoder | decoder | -
    startup_s: float = 0.0  # starting a trial process
    fixed_s: float = 0.0  # loading, tokenizing, saving
    train_s: float = 0.0  # seconds per training example and epoch
    infer_s: float = 0.0  # seconds per predicted example
    max_train: int = 0  # training examples a trial uses (a seeded subset when below the file's count)
    probe: dict = field(default_factory=dict)

    @property
    def epochs_max(self) -> int:
        return 1 if self.method in UNTRAINED else EPOCHS_MAX

    @property
    def family(self) -> str:
        """What a method's costlier siblings open after: the model's training methods, or its prompting."""
        return f"{self.model}#prompt" if self.method == "fewshot" else str(self.model)

    @property
    def lr_range(self) -> tuple[float, float, float] | None:
        return LR_RANGES.get(self.method)

    def seconds(self, epochs: int, n_eval: int) -> float:
        """Predicted wall seconds of a trial: start, load, `epochs` x (train + evaluate), final evaluation."""
        if self.method in UNTRAINED:
            return self.startup_s + self.fixed_s + self.train_s * self.max_train + self.infer_s * n_eval
        per_epoch = self.train_s * self.max_train + self.infer_s * n_eval
        return self.startup_s + self.fixed_s + epochs * per_epoch + self.infer_s * n_eval

    def final_seconds(self, n_eval: int) -> float:
        """What stopping early still costs: evaluating the best checkpoint and saving."""
        return self.infer_s * n_eval + self.fixed_s / 2

    def test_seconds(self, n_test: int) -> float:
        """Scoring the test split once with the saved model (the winner only), in this process."""
        return self.fixed_s + self.infer_s * n_test

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- models
def model_candidates(
    extra: list[str], texts: list[str], say: Callable[[str], None], n_train: int = 0
) -> list[Candidate]:
    """Pulled catalog models and `extra` (--model) whose tokenizers read the text, with their methods (a
    decoder's few-shot prompting only below FEWSHOT_MAX_TRAIN training examples)."""
    from ..sources import list_models, resolve_model

    names = [row["name"] for row in list_models() if row["pulled"]]
    unpulled = [row["name"] for row in list_models() if not row["pulled"]]
    if unpulled:
        say(f"not pulled, so not tried: {', '.join(unpulled)} (`lmadapt models pull NAME` adds one)")
    found: list[Candidate] = []
    for name in [*names, *[m for m in extra if m not in names]]:
        path = resolve_model(name)
        kind, unk = _reads(path, texts)
        if unk > UNK_LIMIT:
            say(f"{name}: its tokenizer turns {unk:.0%} of this text into unknown tokens: not a candidate")
            continue
        methods = ENCODER_METHODS if kind == "encoder" else DECODER_METHODS
        if "fewshot" in methods and n_train >= FEWSHOT_MAX_TRAIN:
            methods = tuple(m for m in methods if m != "fewshot")
        note = (
            f" (few-shot prompting: below {FEWSHOT_MAX_TRAIN} training examples)"
            if kind == "decoder" and "fewshot" not in methods
            else ""
        )
        say(
            f"{name}: {kind}, {unk:.1%} unknown tokens on this text: candidate for {', '.join(methods)}{note}"
        )
        found += [Candidate(f"{_short(name)}:{m}", name, m, kind) for m in methods]
    return found


def _short(name: str) -> str:
    return Path(name).name if ("/" in name or Path(name).exists()) else name


def _reads(path: str, texts: list[str]) -> tuple[str, float]:
    """(encoder | decoder, share of tokens that are the unknown token) over a sample of the text."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(path)
    kind = "decoder" if any(a.endswith("ForCausalLM") for a in config.architectures or []) else "encoder"
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    unk_id = tokenizer.unk_token_id
    if unk_id is None:  # byte-level vocabularies have no unknown token: they read any text
        return kind, 0.0
    total = unknown = 0
    for text in texts[:200]:
        ids = tokenizer(text[:2000], add_special_tokens=False)["input_ids"]
        total += len(ids)
        unknown += sum(1 for i in ids if i == unk_id)
    return kind, unknown / max(total, 1)


# ---------------------------------------------------------------------------------------------- probes
def warm_imports() -> None:
    """Import what a trial imports, so that no probe counts Python's one-off import time as its own."""
    import peft  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import transformers

    from ..baselines import tfidf  # noqa: F401
    from ..stages import finetune  # noqa: F401
    from ..training import trainer  # noqa: F401

    transformers.Trainer  # noqa: B018 (the lazy module loads here)


def startup_seconds() -> float:
    """Seconds to start a trial process and import what a trial imports (measured once)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import torch, transformers, peft, lmadapt.stages.finetune"],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def probe(candidate: Candidate, base_recipe: Callable[..., dict]) -> None:
    """Run `candidate`'s stage on a few examples in this process; fill in its measured costs.

    A neural candidate's training time is per step, so one run gives seconds per example. tfidf's is
    mostly its cross-validation grid, paid whatever the size: it runs at two sizes, and the line through
    them gives the fixed part and the part per example."""
    sizes = (PROBE_TRAIN * 2, PROBE_TRAIN * 8) if candidate.method == "tfidf" else (PROBE_TRAIN,)
    runs = [_probe_run(candidate, base_recipe, n) for n in sizes]
    (total, cost, n), last = runs[0], runs[-1]
    per_s = last[1].get("infer_examples_per_s") or 0.0
    candidate.infer_s = (1.0 / per_s) if per_s else 0.0
    if len(runs) == 2:
        slope = (last[1]["train_seconds"] - cost["train_seconds"]) / (last[2] - n)
        candidate.train_s = max(slope, 0.0)
    else:
        candidate.train_s = (cost.get("train_seconds") or 0.0) / max(n, 1)
    total, n = last[0], last[2]
    candidate.fixed_s = max(total - candidate.train_s * n - candidate.infer_s * PROBE_EVAL, 0.0)
    candidate.probe = {"runs": [{"train_examples": m, "seconds": round(t, 2),
                                 "train_seconds": c.get("train_seconds"), "peak_rss_mb": c.get("peak_rss_mb")}
                                for t, c, m in runs], "eval_examples": PROBE_EVAL}  # fmt: skip


def _probe_run(
    candidate: Candidate, base_recipe: Callable[..., dict], n_train: int
) -> tuple[float, dict, int]:
    """(seconds, the run's cost record, training examples) of one scratch run of `candidate`."""
    from ..config import parse_recipe
    from ..runs import RunDir
    from ..stages import run_stage

    scratch = Path(tempfile.mkdtemp(prefix="lmadapt-auto-probe-"))
    raw = base_recipe(candidate, lr=candidate.lr_range[2] if candidate.lr_range else None, epochs=1)
    raw["data"] |= {"max_train": n_train, "max_eval": PROBE_EVAL}
    raw["output"] = str(scratch / "run")
    if raw["stage"] == "finetune":
        raw["eval"]["every"] = "no"
    log = io.StringIO()
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # load reports of a scratch run are not the user's business
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            folder = run_stage(parse_recipe(raw))
        total = time.perf_counter() - start
        cost = RunDir(folder).read_metrics().get("cost") or {}
    except LmadaptError:
        raise
    except Exception as exc:  # a model that cannot train this task: no candidate, said why
        tail = " ".join(log.getvalue().split()[-30:])
        raise ProbeFailed(
            f"{candidate.name}: the probe run failed: {type(exc).__name__}: {exc} {tail}"
        ) from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
        shutil.rmtree(scratch, ignore_errors=True)
    return (
        total,
        cost | {"train_seconds": cost.get("train_seconds") or 0.0},
        cost.get("train_examples") or n_train,
    )


class ProbeFailed(Exception):
    """A candidate's probe run raised: it is dropped, with the reason in the log."""


def size_for_budget(candidate: Candidate, n_train: int, n_eval: int, budget_s: float) -> str | None:
    """Set max_train so that one epoch, its evaluation included, fits budget / EPOCH_SHARE (tfidf, one
    pass: twice that); the reason it cannot, or None."""
    share = budget_s / EPOCH_SHARE - candidate.infer_s * n_eval
    if candidate.method == "fewshot":  # no training: its demonstrations come from all of train
        candidate.max_train = n_train
        return (
            None
            if candidate.seconds(1, n_eval) <= budget_s / 2
            else f"{candidate.name}: too slow to answer {n_eval} examples in half the budget"
        )
    if candidate.method == "tfidf":
        share = 2 * budget_s / EPOCH_SHARE - candidate.startup_s - candidate.fixed_s
    fits = math.floor(share / candidate.train_s) if candidate.train_s > 0 else n_train
    candidate.max_train = max(min(n_train, fits), 0)
    if candidate.max_train < MIN_TRAIN:
        return (
            f"{candidate.name}: {candidate.train_s * 1000:.0f} ms per training example, "
            f"{candidate.infer_s * 1000:.0f} ms per prediction ({n_eval} to score each epoch): an epoch on "
            f"{MIN_TRAIN} examples would take more than 1/{EPOCH_SHARE} of the budget: too slow for it"
        )
    return None


# ---------------------------------------------------------------------------------------------- trial recipes
# settings auto gives a method beyond its defaults: tfidf's cross-validation in 3 folds, not 5 (its grid of C
# is the same); a freeze head of 256 hidden units
METHOD_SETTINGS = {"tfidf": {"cv_folds": 3}, "freeze": {"head_hidden": 256}}
# a tenth of the steps warm up, as the shipped recipes and LLaMA-Factory's examples do: without it, minilm full
# fine-tuning on pubmed-mesh ended 0.918 / 0.925 on test over two seeds, with it 0.952 / 0.925
WARMUP_RATIO = 0.1


def recipe_builder(u, train_path: str, eval_path: str, max_length: int, metric: str, seed: int):
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
                     "max_eval": EVAL_CAP if u.n_eval > EVAL_CAP else None},
            "method": method,
            "stage": "finetune",
            "train": {"epochs": epochs, "lr": lr or 1e-3, "batch_size": BATCH_SIZE,
                      "max_length": max_length, "seed": seed, "logging_steps": 10}
                     | ({"warmup_ratio": WARMUP_RATIO} if c.method != "tfidf" else {}),
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
                 "max_eval": EVAL_CAP if u.n_eval > EVAL_CAP else None},
        "stage": "prompt",
        "prompt": {"mode": "few_shot", "k": FEWSHOT_K, "selection": "random", "max_new_tokens": 8},
        "train": {"max_length": min(2048, (FEWSHOT_K + 1) * max_length + 64), "seed": seed},
        "output": "runs/auto-trial",
    }  # fmt: skip
