"""`lmadapt train RECIPE --nproc N`: N data-parallel processes on this machine, started by torchrun's launcher.

The same as `torchrun --standalone --nproc-per-node N -m lmadapt train RECIPE` (the command for several
machines is in the README), with three things added: the recipe is checked once before any process starts,
each process gets cores / N threads unless `train.num_threads` says otherwise, and a worker's exit code 2
(bad input: its message is above) comes back as this command's exit code instead of a launcher traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid

from .errors import RecipeError

# Stages that train through a (TRL) Trainer, which does the data-parallel work. ppo has its own loop and
# prompt / the non-neural baselines do not train: they run in one process.
DATA_PARALLEL_STAGES = ("finetune", "sft", "pretrain", "rm", "dpo", "grpo")


def check_data_parallel(recipe, nproc: int) -> None:
    """A clear error, before any process starts, for a recipe that cannot run on `nproc` processes."""
    from .stages import BASELINES
    from .training.arguments import check_strategy

    if nproc < 1:
        raise RecipeError(f"--nproc {nproc}: give 1 or more processes")
    if recipe.stage not in DATA_PARALLEL_STAGES:
        raise RecipeError(
            f"--nproc {nproc}: stage {recipe.stage!r} runs in one process (data-parallel stages: "
            f"{', '.join(DATA_PARALLEL_STAGES)}); drop --nproc"
        )
    if (recipe.stage, recipe.method.type) in BASELINES:
        raise RecipeError(f"--nproc {nproc}: method {recipe.method.type!r} trains no network; drop --nproc")
    check_strategy(recipe.train.distributed)


def threads_per_process(nproc: int, num_threads: int | None) -> int:
    """`train.num_threads` when set, else this machine's cores shared out evenly (at least one each)."""
    return num_threads or max(1, (os.cpu_count() or 1) // nproc)


def launch(train_args: list[str], nproc: int, threads: int) -> int:
    """Run `lmadapt train *train_args` in `nproc` processes; the exit code: 0, 2 if any worker exited 2
    (bad input, already explained by that worker), else 1."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # the launcher's own log lines repeat what the workers said (and the exit code below says the rest)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the workers inherit it; torch reads it at start-up
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
    )  # fmt: skip
    try:
        elastic_launch(config, sys.executable)("-m", "lmadapt", "train", *train_args)
    except ChildFailedError as exc:
        codes = {rank: failure.exitcode for rank, failure in exc.failures.items()}
        if 2 in codes.values():
            return 2
        said = ", ".join(f"rank {rank} exited with {code}" for rank, code in sorted(codes.items()))
        print(f"error: {said}; its output is above", file=sys.stderr, flush=True)
        return 1
    return 0
