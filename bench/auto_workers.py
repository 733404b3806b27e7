"""One `lmadapt auto` process against two sharing one SQLite study, same budget (issue 25's worker check).

    python bench/auto_workers.py --budget 6m [--dataset pubmed-mesh] [--work /tmp/auto_workers]

The data is the dataset's best hand recipe's train / eval / test (as bench/auto_acceptance.py writes it).
Arm "one": a single `lmadapt auto` with torch's default threads (all cores). Arm "two": a worker started with
OMP_NUM_THREADS=cores/2, and once it has written its plan a second with the same command and --output, with the
same threads and the budget that is left, so both end by the same wall-clock deadline. Each arm waits for the
1-minute load average to fall below --cool first, and after the last arm the run waits for it again. Prints, per arm, the trials finished (complete and pruned),
the best eval metric, the wall time and the load average before and after. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_acceptance import BEST_RECIPE, RECIPES, write_splits  # noqa: E402
from side_by_side import cool  # noqa: E402


def finished(output: Path, metric: str) -> dict:
    """Trials of the study in `output` by state, and the best completed value."""
    import optuna

    study = optuna.load_study(study_name="auto", storage=f"sqlite:///{output / 'study.db'}")
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        if "skipped" in t.user_attrs:
            continue
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    best = max(
        (t.value for t in study.trials if t.value is not None and "skipped" not in t.user_attrs), default=None
    )
    return {
        "states": states,
        "finished": states.get("complete", 0) + states.get("pruned", 0),
        f"best_eval_{metric}": best,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", default="6m")
    p.add_argument("--dataset", default="pubmed-mesh", choices=list(BEST_RECIPE))
    p.add_argument("--work", default="/tmp/auto_workers")
    p.add_argument("--metric", default="f1_macro")
    p.add_argument("--cool", type=float, default=1.0)
    args = p.parse_args()
    from lmadapt.auto import parse_budget

    budget = parse_budget(args.budget)
    work = Path(args.work)
    data = write_splits(RECIPES / BEST_RECIPE[args.dataset], work / args.dataset / "data")
    base = [sys.executable, "-m", "lmadapt", "auto", str(data["train"]), "--eval", str(data["eval"]),
            "--test", str(data["test"]), "--metric", args.metric]  # fmt: skip
    half = str(max((os.cpu_count() or 2) // 2, 1))
    rows = []
    for arm in ("one", "two"):
        output = work / args.dataset / f"{arm}-{args.budget}"
        load_before = cool(args.cool)
        start = time.monotonic()
        env = dict(os.environ) | ({"OMP_NUM_THREADS": half, "MKL_NUM_THREADS": half} if arm == "two" else {})
        logs = [(output.parent / f"{arm}-w{i}.log").open("w") for i in (1, 2)]
        procs = [subprocess.Popen([*base, "--budget", f"{budget:.0f}s", "--output", str(output)], env=env,
                                  stdout=logs[0], stderr=subprocess.STDOUT)]  # fmt: skip
        if arm == "two":
            while not (output / "plan.json").exists() and procs[0].poll() is None:
                time.sleep(1)
            left = budget - (time.monotonic() - start)
            procs.append(subprocess.Popen([*base, "--budget", f"{left:.0f}s", "--output", str(output)], env=env,
                                          stdout=logs[1], stderr=subprocess.STDOUT))  # fmt: skip
            print(
                f"two: the second worker joined after {budget - left:.0f} s with {left:.0f} s left",
                flush=True,
            )
        codes = [proc.wait() for proc in procs]
        wall = time.monotonic() - start
        row = {"arm": arm, "exit": codes, "wall_s": round(wall, 1), "budget_s": budget,
               "load": [round(load_before, 2), round(os.getloadavg()[0], 2)]} | finished(output, args.metric)  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    cool(args.cool)  # falling back below --cool after the last arm shows nothing else was running
    print(
        f"\n| processes | trials finished (complete + pruned) | best eval {args.metric} | wall s / budget s | load before / after |"
    )
    print("|---|---:|---:|---:|---|")
    for r in rows:
        label = "1, all cores" if r["arm"] == "one" else f"2, OMP_NUM_THREADS={half} each"
        best = r[f"best_eval_{args.metric}"]
        print(f"| {label} | {r['finished']} ({r['states']}) | {best if best is None else round(best, 4)} "
              f"| {r['wall_s']:.0f} / {r['budget_s']:.0f} | {r['load'][0]} / {r['load'][1]} |")  # fmt: skip


if __name__ == "__main__":
    main()
