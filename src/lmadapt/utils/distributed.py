"""Which process of a data-parallel run this is, as torchrun (or `accelerate launch`) started it.

torchrun gives every worker RANK / LOCAL_RANK / WORLD_SIZE; one process is a world of one, so every helper
here is a no-op then. Only rank 0 writes the run folder: the other ranks train (the Trainer all-reduces their
gradients and gathers its evaluations) and leave once the last collective step of their stage is behind them.
"""

from __future__ import annotations

import os


class WorkerDone(Exception):
    """Raised on ranks other than 0 once their share of a stage is done; rank 0 evaluates and writes."""


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group torchrun set up (gloo on CPU, NCCL on GPU), early, so the run folder can
    synchronise before the Trainer exists; accelerate then uses this group instead of making its own."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def barrier() -> None:
    """Wait until every rank got here (no-op in one process)."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def leave_unless_main() -> None:
    """End this stage on every rank but 0: what follows (final evaluation, saving) runs once, on rank 0."""
    if not is_main():
        raise WorkerDone


def finish() -> None:
    """Leave the process group before the interpreter exits, on every rank: gloo threads still running while
    Python shuts down abort the process (SIGABRT, "terminate called without an active exception")."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
