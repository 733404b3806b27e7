"""The run folder: the contract between commands (train writes it; compare, predict, chat, serve, export read it).

Layout::

    RUN/status.json          {"status": "complete", ...}: written last, before the folder is moved into place
    RUN/config.yaml          the fully resolved recipe
    RUN/metrics.json         {"final": {split: {metric: value}}, "history": [...], "cost": {...}, "task"?}
    RUN/predictions.jsonl    one record per test example (inputs' id, prediction, gold)
    RUN/log.txt              what the run printed
    RUN/model/ | adapter/    weights (safetensors), written by the method module
    RUN/plots/*.png

A run never writes into RUN itself: it writes `.RUN.incomplete/` beside it (checkpoints included) and renames
that into place when everything is written, so a crash or a kill can never mix a new run with an earlier one,
and the earlier complete run stays as it was until the new one is complete. `lmadapt train --resume`
continues an incomplete folder from its last verified checkpoint; a plain re-run starts it afresh.

In a data-parallel run (torchrun) only rank 0 writes here; the other ranks get a RunDir of the same staging
folder (the Trainer's checkpoints go there) whose writing methods do nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import LmadaptError
from .utils import distributed
from .utils.io import read_json, write_json, write_text

STATUS_FILE = "status.json"
INCOMPLETE_SUFFIX = ".incomplete"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB: Linux's VmHWM (this program's own high-water
    mark), else ru_maxrss (KiB on Linux, bytes on macOS). Not ru_maxrss on Linux: it survives fork and exec,
    so a run started by a large process (an `lmadapt auto` trial) reported its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def staging_path(output: str | Path) -> Path:
    """Where a run of `output` is written until it is complete: a hidden sibling folder."""
    output = Path(output)
    return output.parent / f".{output.name}{INCOMPLETE_SUFFIX}"


def recipe_fingerprint(recipe) -> str:
    """sha256 of the resolved recipe, so --resume can tell the same recipe from a changed one."""
    from .config import recipe_to_yaml

    return hashlib.sha256(recipe_to_yaml(recipe).encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunDir:
    """One run folder: written through `start` ... `commit`, read through `open_complete`."""

    def __init__(self, path: str | Path, final: str | Path | None = None):
        self.path = Path(path)  # where files go now (the staging folder while a run is being written)
        self.final = Path(final) if final is not None else self.path
        self.resumed = False
        self.writer = distributed.is_main()  # ranks other than 0 never write the run folder

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ writing
    @classmethod
    def start(cls, recipe, resume: bool = False) -> RunDir:
        """Open the staging folder for `recipe.output` (call only once the recipe and data validated).

        resume=False discards an incomplete folder left by an earlier attempt; resume=True continues it,
        provided it was started from the same resolved recipe.
        """
        final = Path(recipe.output)
        if not distributed.is_main():
            distributed.barrier()  # rank 0 has checked, cleared or kept the staging folder
            run = cls(staging_path(final), final)
            run.resumed = resume
            return run
        if final.exists() and not _replaceable(final):
            raise LmadaptError(
                f"output {final}: exists and is not a run folder (no {STATUS_FILE} or config.yaml); "
                "choose another output"
            )
        stage = staging_path(final)
        fingerprint = recipe_fingerprint(recipe)
        run = cls(stage, final)
        if resume:
            status = _read_status(stage)
            if status is None:
                raise LmadaptError(
                    f"--resume: no interrupted run of {final} to continue ({stage} does not exist); "
                    "run without --resume to start one"
                )
            if status.get("recipe_sha256") != fingerprint:
                raise LmadaptError(
                    f"--resume: the interrupted run in {stage} was started from a different recipe; "
                    f"compare {stage / 'config.yaml'} with yours, or run without --resume to start afresh"
                )
            if status.get("world_size", 1) != distributed.world_size():
                raise LmadaptError(
                    f"--resume: the interrupted run in {stage} trained on {status.get('world_size', 1)} "
                    f"process(es); resume it with --nproc {status.get('world_size', 1)} (each process's "
                    "data shard and random state are in its checkpoints)"
                )
            run.resumed = True
            run.log(f"--- resumed at {_now()} ---")
        else:
            if stage.exists():
                print(f"discarding the incomplete run in {stage} (use --resume to continue it)", flush=True)
                shutil.rmtree(stage)
            stage.mkdir(parents=True)
        (stage / "plots").mkdir(exist_ok=True)
        run.write_status(
            "running", stage=recipe.stage, recipe_sha256=fingerprint, started=_now(), pid=os.getpid(),
            world_size=distributed.world_size(),
        )  # fmt: skip
        distributed.barrier()  # the other ranks may use the folder now
        return run

    def write_status(self, status: str, **fields: Any) -> None:
        from . import __version__

        if not self.writer:
            return
        previous = _read_status(self.path) or {}
        write_json(self.path / STATUS_FILE, previous | fields | {"status": status, "lmadapt": __version__})

    def commit(self, keep_checkpoints: bool = False) -> Path:
        """Mark the run complete and move it into place (replacing an earlier run of the same output)."""
        if not self.writer:
            return self.final
        if not keep_checkpoints:
            shutil.rmtree(self.path / "checkpoints", ignore_errors=True)
        self.write_status("complete", finished=_now())
        _fsync_dir(self.path)
        if self.path != self.final:
            old = self.final.with_name(f".{self.final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            if self.final.exists():
                self.final.rename(old)
            self.path.rename(self.final)
            _fsync_dir(self.final.parent)
            shutil.rmtree(old, ignore_errors=True)
            self.path = self.final
        return self.final

    def write_config(self, recipe) -> None:
        from .config import recipe_to_yaml

        if not self.writer:
            return
        write_text(self.path / "config.yaml", recipe_to_yaml(recipe))

    def write_metrics(
        self,
        final: dict[str, dict[str, Any]],
        history: list[dict],
        cost: dict[str, Any],
        task: dict[str, Any] | None = None,
    ) -> None:
        """final: split -> metric -> value; cost: train_seconds, trainable_params, total_params, peak_rss_mb,
        infer_examples_per_s (and anything else measured); task (only if any): what the task found in the
        data, e.g. {"tag_scheme": "IOB2"}."""
        if not self.writer:
            return
        metrics = {"final": final, "history": history, "cost": cost} | ({"task": task} if task else {})
        write_json(self.path / "metrics.json", metrics)

    def log(self, message: str, echo: bool = True) -> None:
        """Append a line to log.txt (and echo it); ranks other than 0 say nothing."""
        if not self.writer:
            return
        if echo:
            print(message, flush=True)
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "log.txt", "a", encoding="utf-8") as f:
            f.write(message + "\n")

    def log_json(self, record: dict, echo: bool = True) -> None:
        self.log(json.dumps(record, ensure_ascii=False, default=str), echo)

    # ------------------------------------------------------------------ reading
    @classmethod
    def open_complete(cls, path: str | Path, command: str = "this command") -> RunDir:
        """The run folder at `path`, or a clear error saying why it is not a complete run."""
        path = Path(path)
        run = cls(path)
        if run.is_finished():
            return run
        stage = staging_path(path)
        hint = (
            f"; an incomplete run is in {stage} (continue it with `lmadapt train RECIPE --resume`)"
            if stage.exists()
            else ""
        )
        if not path.exists():
            raise LmadaptError(f"{path}: no such run folder{hint}")
        if not (path / "config.yaml").is_file():
            raise LmadaptError(f"{path}: not a run folder (no config.yaml){hint}")
        status = (_read_status(path) or {}).get("status", f"no {STATUS_FILE}")
        raise LmadaptError(
            f"{path}: not a complete run ({status}); {command} reads only complete runs: train it again{hint}"
        )

    def is_finished(self) -> bool:
        """Complete: status.json says so (it is written last) and the files it vouches for are there."""
        status = _read_status(self.path)
        return (
            status is not None
            and status.get("status") == "complete"
            and (self.path / "config.yaml").is_file()
            and (self.path / "metrics.json").is_file()
        )

    def read_config(self, trust_remote_code: bool = False):
        """The run's recipe. `trust_remote_code` comes from the caller, never from the folder's own file."""
        from .config import load_recipe

        recipe = load_recipe(self.path / "config.yaml")
        recipe.model.trust_remote_code = trust_remote_code
        return recipe

    def read_metrics(self) -> dict[str, Any]:
        return read_json(self.path / "metrics.json")


def _read_status(folder: Path) -> dict | None:
    try:
        status = read_json(folder / STATUS_FILE)
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _replaceable(path: Path) -> bool:
    """A folder a new run may replace: an earlier run folder (complete or from an older lmadapt) or nothing."""
    if not path.is_dir():
        return False
    return (path / STATUS_FILE).is_file() or (path / "config.yaml").is_file() or not any(path.iterdir())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def timer():
    """Measure wall time: `with timer() as t: ...; t()` gives the seconds."""
    start = time.perf_counter()
    elapsed = [None]
    yield lambda: elapsed[0] if elapsed[0] is not None else time.perf_counter() - start
    elapsed[0] = time.perf_counter() - start
