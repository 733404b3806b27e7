"""Kill a real training run at a random checkpoint, resume it, and compare with an uninterrupted run.

    python scripts/resume_check.py RECIPE [dotted.key=value ...] [--work DIR]

Trains RECIPE twice into DIR (default runs/resume-check): once straight through, once SIGKILLed just after
a random checkpoint and then continued with `lmadapt train --resume`. Prints the step of the kill, where the
resume started, and whether every saved tensor and the final metrics are identical. The recipe needs
`train.save_every` (pass it as an override). docs/reliability.md shows a run on the real data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from lmadapt.runs import staging_path
from lmadapt.training.checkpoints import MANIFEST, checkpoint_steps


def train(recipe: str, overrides: list[str], *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "lmadapt", "train", recipe, *overrides, *extra], check=True)


def weights(run: Path) -> dict[str, torch.Tensor]:
    files = sorted(run.glob("model/*.safetensors")) + sorted(run.glob("adapter/*.safetensors"))
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--work", default="runs/resume-check")
    args = parser.parse_args()
    work = Path(args.work)
    whole, killed = work / "whole", work / "killed"

    start = time.perf_counter()
    train(args.recipe, [*args.overrides, f"output={whole}"])
    steps = json.loads((whole / "metrics.json").read_text())["history"][-1]["step"]
    print(f"uninterrupted: {time.perf_counter() - start:.0f} s, {steps} steps")

    target = random.randint(
        1, max(steps // 2, 1)
    )  # the first checkpoint at or past it is where the kill lands
    cmd = [sys.executable, "-m", "lmadapt", "train", args.recipe, *args.overrides, f"output={killed}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = staging_path(killed) / "checkpoints"
    while proc.poll() is None:
        if any(s >= target and (p / MANIFEST).is_file() for s, p in checkpoint_steps(folder)):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        print(f"the run ended before the kill (exit {proc.returncode}); try again")
        return 1
    on_disk = [s for s, _ in checkpoint_steps(folder)]
    print(f"killed after checkpoint {target} (checkpoints on disk: {on_disk}); resuming")
    train(args.recipe, [*args.overrides, f"output={killed}"], "--resume")

    a, b = weights(whole), weights(killed)
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (whole, killed))
    print(f"resumed from step {mb['cost']['resumed_from_step']}")
    print(f"{len(a)} tensors, all identical: {same}")
    print(f"final metrics identical: {ma['final'] == mb['final']}  {json.dumps(mb['final'])}")
    return 0 if same and ma["final"] == mb["final"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
