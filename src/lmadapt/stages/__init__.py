"""Stages: one module per stage, each exposing `run(recipe) -> Path` (the run folder)."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import RecipeError

# stage name -> module holding `run(recipe, resume)`; adding a stage is one module plus one line here.
STAGES = {
    "finetune": "lmadapt.stages.finetune",
    "sft": "lmadapt.stages.sft",
    "prompt": "lmadapt.stages.prompt",
    "rm": "lmadapt.stages.rm",
    "ppo": "lmadapt.stages.ppo",
    "dpo": "lmadapt.stages.dpo",
    "grpo": "lmadapt.stages.grpo",
    "pretrain": "lmadapt.stages.pretrain",
}
# (stage, method) -> a baseline that stands in for the stage: it loads no model, but writes the same folder.
BASELINES = {
    ("finetune", "tfidf"): "lmadapt.baselines.tfidf",
    ("finetune", "keyphrase"): "lmadapt.baselines.keyphrase",
}


def run_stage(recipe, resume: bool = False) -> Path:
    """Run the stage a recipe names and return its (complete) run folder; `resume` continues an interrupted
    run of the same recipe from its last verified checkpoint."""
    module_name = BASELINES.get((recipe.stage, recipe.method.type)) or STAGES.get(recipe.stage)
    if module_name is None:
        raise RecipeError(f"stage {recipe.stage!r} is not available; choose one of {sorted(STAGES)}")
    return importlib.import_module(module_name).run(recipe, resume=resume)
