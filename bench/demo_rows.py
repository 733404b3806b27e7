"""Issue 24's "where people look": the demo's prompting rows and Self-Instruct, float32 engine against auto.

    python bench/demo_rows.py --rounds 3 [--jobs zeroshot fewshot synth] [--out rows.jsonl]

Each job is the user's own command (`lmadapt train src/lmadapt/recipes/compare-flagship/zeroshot.yaml
prompt.dtype=float32|auto`, the same for fewshot.yaml, `lmadapt synth src/lmadapt/recipes/synth/self-instruct.yaml
target=24 backend.dtype=float32|auto`), timed wall clock as a process, into a scratch output folder. Within a
round the two dtypes alternate, and which goes first alternates between rounds. The run waits for the 1-minute
load average to fall below `--cool` before it starts and again after the last job (nothing else may run
meanwhile). The table gives each (job, dtype) median over the rounds and the macro-F1 of the prompt runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from side_by_side import cool, emit

RECIPES = Path(__file__).resolve().parents[1] / "src" / "lmadapt" / "recipes"
JOBS = {
    "zeroshot": (["train", str(RECIPES / "compare-flagship" / "zeroshot.yaml")], "prompt.dtype"),
    "fewshot": (["train", str(RECIPES / "compare-flagship" / "fewshot.yaml")], "prompt.dtype"),
    "synth": (["synth", str(RECIPES / "synth" / "self-instruct.yaml"), "target=24"], "backend.dtype"),
}
DTYPES = ("float32", "auto")


def run_job(job: str, dtype: str, scratch: Path) -> dict:
    """Run one job as the user would; its wall seconds and (prompt runs) its test macro-F1."""
    args, key = JOBS[job]
    out = scratch / f"{job}-{dtype}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "lmadapt", *args, f"{key}={dtype}", f"output={out}"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    metrics = out / "metrics.json"
    f1 = None
    if metrics.exists():
        f1 = (json.loads(metrics.read_text()).get("final", {}).get("test") or {}).get("f1_macro")
    return {"job": job, "dtype": dtype, "seconds": round(seconds, 1), "f1_macro": f1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jobs", nargs="+", choices=list(JOBS), default=list(JOBS))
    p.add_argument("--cool", type=float, default=1.0, help="Load average to wait for before and after.")
    p.add_argument("--out", default=None, help="Append every row (JSON lines).")
    args = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lmadapt-demo-rows-"))
    cool(args.cool)
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    try:
        for r in range(args.rounds):
            for job in args.jobs:
                for dtype in DTYPES if r % 2 == 0 else DTYPES[::-1]:
                    row = run_job(job, dtype, scratch) | {"round": r, "load": round(os.getloadavg()[0], 2)}
                    rows.append(emit(row, args.out))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load average after the last job: {os.getloadavg()}", flush=True)
    cool(args.cool)
    print(f"load average after: {os.getloadavg()}\n")
    print(f"medians of {args.rounds} rounds")
    print("| job | float32 s | auto s | speed-up | macro-F1 float32 / auto |")
    print("|---|---:|---:|---:|---|")
    for job in args.jobs:
        med = {
            d: statistics.median(x["seconds"] for x in rows if x["job"] == job and x["dtype"] == d)
            for d in DTYPES
        }
        f1 = {
            d: next((x["f1_macro"] for x in rows if x["job"] == job and x["dtype"] == d), None)
            for d in DTYPES
        }
        shown = " / ".join(f"{f1[d]:.4f}" if f1[d] is not None else "-" for d in DTYPES)
        print(
            f"| {job} | {med['float32']:.1f} | {med['auto']:.1f} | {med['float32'] / med['auto']:.2f}x | {shown} |"
        )


if __name__ == "__main__":
    main()
