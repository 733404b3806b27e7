"""`stage: grpo`: group relative policy optimisation with TRL's GRPOTrainer, used as is.

Reads top to bottom: prompts of a generate task (train split; the held-out test split keeps its gold
answers for scoring), the starting policy (`model:` or an sft run, merged), the method (LoRA: TRL applies the
project's LoRA config, and with `grpo.beta > 0` the reference is the same weights with the adapter off), the
reward (`reward:`, the same sources as stage ppo, wrapped in TRL's reward-function signature), the held-out
task metric of greedy answers before, training (resumable: the shared verified checkpoints), the same
after, save. TRL logs reward, its std, KL (beta > 0), entropy, completion length, clip ratios per step.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RecipeError
from ..evaluation import cost_record
from ..runs import RunDir, timer
from ..utils import distributed
from ..utils.seed import seed_everything

# TRL's per-step log key -> the name in metrics.json's history (and plots/grpo.png)
LOGGED = {"reward": "reward", "reward_std": "reward_std", "kl": "kl", "entropy": "entropy",
          "completions/mean_length": "answer_tokens", "clip_ratio/region_mean": "clip_frac", "loss": "loss"}  # fmt: skip


def run(recipe, resume: bool = False) -> Path:
    """Train with GRPO; the held-out task metric (and reward) of greedy answers before and after."""
    from ..alignment.curves import save_curves
    from ..alignment.policy import policy_run_of
    from ..config.grpo import GrpoConfig
    from ..methods import check_method, count_parameters, save_trained
    from ..stages.ppo import policy_and_prompts, reward_sources
    from ..training.checkpoints import train_from_latest
    from ..training.progress import run_callbacks

    if recipe.grpo is None:  # every setting at its default; config.yaml then spells them out
        recipe.grpo = GrpoConfig()
    cfg, train = recipe.grpo, recipe.train
    if recipe.task.type != "generate":
        raise RecipeError(f"stage grpo: task type {recipe.task.type!r}: use a generate task (prompts + gold)")
    if getattr(recipe, "reward", None) is None:
        raise RecipeError("stage grpo needs a reward: section ({type: rm | metric | python, ...})")
    if recipe.method.type != "lora" and cfg.beta > 0 and policy_run_of(recipe):
        raise RecipeError("stage grpo: with grpo.beta > 0 and a policy run, use method lora (TRL would reload "
                          "the reference from the base model, not from the sft run)")  # fmt: skip
    check_method(recipe.method, "causal_lm")
    seed_everything(train.seed)
    _, model, tokenizer, template, prompts = policy_and_prompts(recipe)
    reward, _ = reward_sources(recipe)
    run_dir = RunDir.start(recipe, resume)
    run_dir.write_config(recipe)
    run_dir.log(
        f"train prompts {len(prompts['train'])}, held-out {len(prompts['test'])}; reward {reward.name}"
    )
    trainer = build_trainer(
        recipe, model, tokenizer, prompts["train"], trl_reward(reward, prompts["train"]), run_dir
    )
    for callback in run_callbacks(run_dir, train.keep_checkpoints):
        trainer.add_callback(callback)
    held = prompts["test"][: cfg.eval_prompts] if cfg.eval_prompts else prompts["test"]
    final = {}
    if distributed.is_main():  # the held-out rollouts: once, on rank 0
        final["test_before"] = held_out(trainer.model, tokenizer, template, recipe, held, reward)
        run_dir.log(f"held-out before GRPO: {final['test_before']}")
    seconds, resumed_from = train_from_latest(trainer, run_dir)
    distributed.leave_unless_main()  # the other ranks are done: evaluation and saving run once, on rank 0
    with timer() as infer_time:
        final["test"] = held_out(trainer.model, tokenizer, template, recipe, held, reward)
    run_dir.log(f"held-out after GRPO: {final['test']}")
    save_trained(trainer.model, recipe.method, run_dir.path)
    history = step_history(trainer.state.log_history)
    save_curves(run_dir / "plots" / "grpo.png", history, [(v, v.replace("_", " ")) for v in LOGGED.values()])
    trainable, total = count_parameters(trainer.model)
    cost = cost_record(seconds, len(prompts["train"]), trainable, total, round(len(held) / infer_time(), 2),
                       resumed_from_step=resumed_from)  # fmt: skip
    run_dir.write_metrics(final=final, history=history, cost=cost)
    return run_dir.commit(keep_checkpoints=train.save_every is not None)


def trl_reward(reward, train_prompts: list[dict]):
    """The reward source in TRL's signature: f(prompts, completions, record_index, **columns) -> floats.

    TRL passes the rendered prompt texts; the reward gets the prompt's messages and its record instead."""

    def reward_func(prompts, completions, record_index, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        picked = [train_prompts[i] for i in record_index]
        return reward([p["messages"] for p in picked], texts, [p["record"] for p in picked])

    reward_func.__name__ = "reward"  # TRL names the logged metric after it
    return reward_func


def build_trainer(recipe, model, tokenizer, prompts: list[dict], reward_func, run_dir: RunDir):
    """TRL's GRPOTrainer on the shared TrainingArguments; prompts are rendered text (the project's template)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from ..alignment.trl_bridge import lora_for_trl, trl_config
    from ..training.arguments import training_arguments

    cfg, train = recipe.grpo, recipe.train
    if train.batch_size % cfg.num_generations:
        raise RecipeError(f"train.batch_size {train.batch_size} must be a multiple of grpo.num_generations "
                          f"{cfg.num_generations} (each prompt's group is sampled in one batch)")  # fmt: skip
    base = training_arguments(
        train, str(run_dir / "checkpoints"), eval_every="no", has_eval=False,
        eval_batch_size=train.eval_batch_size or train.batch_size, grouped=False,
    )  # fmt: skip
    args = trl_config(
        GRPOConfig, base, num_generations=cfg.num_generations, beta=cfg.beta, epsilon=cfg.epsilon,
        num_iterations=cfg.num_iterations, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
        temperature=cfg.temperature, max_completion_length=cfg.max_new_tokens or recipe.task.max_new_tokens,
        remove_unused_columns=False, gradient_checkpointing=False, top_k=0,
    )  # fmt: skip
    model, peft_config = lora_for_trl(model, recipe.method)
    rows = [{"prompt": p["text"], "record_index": i} for i, p in enumerate(prompts)]
    return GRPOTrainer(
        model=model, reward_funcs=reward_func, args=args, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, peft_config=peft_config,
    )  # fmt: skip


def held_out(model, tokenizer, template: str, recipe, prompts: list[dict], reward) -> dict:
    """Greedy answers to the held-out prompts, scored by the task metric and by the reward."""
    from ..infer.engine import Engine
    from ..stages.sft import generate_and_score

    records = [p["record"] for p in prompts]
    training = model.training
    metrics, rows = generate_and_score(Engine(model, tokenizer, template), recipe.task, records,
                                       recipe.train.eval_batch_size or recipe.train.batch_size)  # fmt: skip
    model.train(training)
    metrics["reward"] = sum(
        reward([p["messages"] for p in prompts], [r["output"] for r in rows], records)
    ) / len(rows)
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def step_history(log_history: list[dict]) -> list[dict]:
    """TRL's per-step logs -> [{split, step, reward, kl, entropy, answer_tokens, clip_frac, loss}]."""
    rows = []
    for entry in log_history:
        if "reward" in entry:
            rows.append({"split": "train", "step": entry.get("step")} |
                        {name: entry[key] for key, name in LOGGED.items() if key in entry})  # fmt: skip
    return rows
