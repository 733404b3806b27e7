"""The run folder: the contract between commands (train writes it; compare, predict, chat, serve, export read it).

Layout::

    RUN/config.yaml          the fully resolved recipe
    RUN/metrics.json         {"final": {split: {metric: value}}, "history": [...], "cost": {...}}
    RUN/predictions.jsonl    one record per test example (inputs' id, prediction, gold)
    RUN/log.txt              what the run printed
    RUN/model/ | adapter/    weights (safetensors), written by the method module
    RUN/plots/*.png
"""

from __future__ import annotations

import json
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .utils.io import read_json, write_json, write_text


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class RunDir:
    """Helpers to write and read one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "plots").mkdir(exist_ok=True)
        return self

    def write_config(self, recipe) -> None:
        from .config import recipe_to_yaml

        write_text(self.path / "config.yaml", recipe_to_yaml(recipe))

    def read_config(self):
        from .config import load_recipe

        return load_recipe(self.path / "config.yaml")

    def write_metrics(
        self, final: dict[str, dict[str, Any]], history: list[dict], cost: dict[str, Any]
    ) -> None:
        """final: split -> metric -> value; cost: train_seconds, trainable_params, total_params, peak_rss_mb,
        infer_examples_per_s (and anything else measured)."""
        write_json(self.path / "metrics.json", {"final": final, "history": history, "cost": cost})

    def read_metrics(self) -> dict[str, Any]:
        return read_json(self.path / "metrics.json")

    def is_finished(self) -> bool:
        """A run is finished once metrics.json exists (it is written last, atomically)."""
        return (self.path / "metrics.json").is_file()

    def log(self, message: str) -> None:
        """Append a line to log.txt (and echo it)."""
        print(message, flush=True)
        with open(self.path / "log.txt", "a", encoding="utf-8") as f:
            f.write(message + "\n")

    def log_json(self, record: dict) -> None:
        self.log(json.dumps(record, ensure_ascii=False, default=str))


@contextmanager
def timer():
    """Measure wall time: `with timer() as t: ...; t()` gives the seconds."""
    start = time.perf_counter()
    elapsed = [None]
    yield lambda: elapsed[0] if elapsed[0] is not None else time.perf_counter() - start
    elapsed[0] = time.perf_counter() - start
