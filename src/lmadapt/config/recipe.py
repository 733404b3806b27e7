"""The Recipe: every section of a recipe file, and the checks across sections.

`method:` and `task:` are tagged unions of sections that live beside their code (lmadapt/methods/lora.py
defines `LoraMethod`), each registered by one line in `MODULES` of lmadapt/methods/__init__.py or
lmadapt/tasks/__init__.py, where the unions are built. Those packages sit a layer above config (DESIGN.md),
so config never imports them statically: `lmadapt.config` loads this module the first time the Recipe is
needed (load_recipe, parse_recipe, `from lmadapt.config import Recipe`), and only here are they fetched, by
name. Nothing else in config depends on them.
"""

from importlib import import_module
from typing import Literal

from pydantic import Field

from .base import Section
from .data import DataConfig
from .dpo import DpoConfig
from .grpo import GrpoConfig
from .model import ModelConfig
from .ppo import PpoConfig
from .prompt import PromptConfig, prompt_problems
from .reward import RankConfig, RewardConfig
from .stages import stage_problems
from .train import EvalConfig, TrainConfig

MethodConfig = import_module("lmadapt.methods").MethodConfig
TaskConfig = import_module("lmadapt.tasks").TaskConfig
Stage = Literal["finetune", "sft", "prompt", "rm", "ppo", "dpo", "grpo", "pretrain"]


class Recipe(Section):
    """A whole run: model, task, data, method, stage, training, evaluation, output folder."""

    model: ModelConfig
    task: TaskConfig
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig = Field(default_factory=lambda: {"type": "full"}, validate_default=True)
    stage: Stage = "finetune"
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: str = Field("runs/run", min_length=1, description="Run folder written by this recipe.")
    prompt: PromptConfig | None = Field(
        None, description="stage: prompt: how to ask the model (no training)."
    )
    reward: RewardConfig | None = Field(
        None, description="stages ppo, grpo: where the reward comes from (rm run, task metric, python code)."
    )
    rank: RankConfig | None = Field(
        None, description="`lmadapt rank`: sample K answers per prompt from a policy and rank them."
    )
    ppo: PpoConfig | None = Field(None, description="stage: ppo: rollouts, KL penalty, GAE, PPO update.")
    dpo: DpoConfig | None = Field(None, description="stage: dpo: the policy, beta and the preference loss.")
    grpo: GrpoConfig | None = Field(None, description="stage: grpo: group sampling, KL, clipping.")

    def problems(self) -> list[tuple[tuple, str]]:
        """Checks across sections, as (key path, message): what no single section can see on its own."""
        found = stage_problems(self)
        if self.stage == "prompt" and self.prompt is not None:
            found += prompt_problems(self.prompt, self.task)
        return found
