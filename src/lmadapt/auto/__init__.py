"""`lmadapt auto`: understand a user's file, plan candidates within a wall-clock budget, search them in an
Optuna study (SQLite, resumable, shared by workers), and hand back the winner as an ordinary run folder.

understand.py (the task and fields from the values), plan.py (candidates, their measured costs and the recipe
of a trial), study.py (the orchestrator, `run_auto`), search.py (the Optuna objective and what it reads of the
study), results.py (leaderboard, winner, winning recipe), trial.py (one trial's process, which must start
light: nothing is imported here until asked for).
"""

from __future__ import annotations

__all__ = ["parse_budget", "run_auto"]


def __getattr__(name: str):
    """`lmadapt.auto.run_auto`, loaded on first use (PEP 562): a trial process never imports optuna."""
    if name in __all__:
        from . import study

        return getattr(study, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
