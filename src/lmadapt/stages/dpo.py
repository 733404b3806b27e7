"""`stage: dpo`: direct preference optimisation with TRL's DPOTrainer, used as is.

Reads top to bottom: preference records (task `preference`: pairs, or K-wise rankings turned into best vs
each other answer), the starting policy (`model:` or an sft run, merged), the method (LoRA: TRL applies the
project's LoRA config, so the reference is the same weights with the adapter off; full: the reference
log-probabilities are those of the starting weights), reference log-probabilities precomputed once before
training (`dpo.precompute_ref`, on CPU here), held-out reward accuracy and margin before, training
(resumable: the shared verified checkpoints), the same after, save.

DPO's implicit reward of an answer is beta * (log pi(answer) - log pi_ref(answer)); before training policy
and reference are the same, so every margin is 0 and the accuracy (chosen strictly above rejected) is 0.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, RecipeError
from ..evaluation import cost_record
from ..runs import RunDir
from ..utils import distributed
from ..utils.seed import seed_everything

# TRL's eval metric -> the name in metrics.json
REPORTED = {"rewards/accuracies": "reward_accuracy", "rewards/margins": "reward_margin", "loss": "loss",
            "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected"}  # fmt: skip


def run(recipe, resume: bool = False) -> Path:
    """Train with DPO; held-out (eval split, else test) reward accuracy and margin before and after."""
    from ..alignment.policy import load_policy
    from ..config.dpo import DpoConfig
    from ..methods import check_method, count_parameters, save_trained
    from ..plots import save_loss_curve
    from ..training.checkpoints import train_from_latest
    from ..training.progress import history_from, run_callbacks

    if recipe.dpo is None:  # every setting at its default; config.yaml then spells them out
        recipe.dpo = DpoConfig()
    train = recipe.train
    if recipe.task.type != "preference":
        raise RecipeError(
            f"stage dpo: task type {recipe.task.type!r}: use a preference task (pairs or rankings)"
        )
    check_method(recipe.method, "causal_lm")
    seed_everything(train.seed)
    model, tokenizer, template = load_policy(recipe)
    data = build_pairs(recipe, tokenizer, template)
    run_dir = RunDir.start(recipe, resume)
    run_dir.write_config(recipe)
    run_dir.log(", ".join(f"{k} {len(v)} pairs" for k, v in data.items()) + f"; template {template}")
    trainer = build_trainer(recipe, model, tokenizer, data, run_dir)
    for callback in run_callbacks(run_dir, train.keep_checkpoints):
        trainer.add_callback(callback)
    split = "eval" if recipe.data.eval else "test"  # the held-out pairs: eval split, else test
    final = {}
    if data["heldout"]:
        final[f"{split}_before"] = held_out(trainer, before=True)
        run_dir.log(f"held-out ({split}) before DPO: {final[f'{split}_before']}")
    seconds, resumed_from = train_from_latest(trainer, run_dir)
    if data["heldout"]:
        final[split] = held_out(trainer)
        run_dir.log(f"held-out ({split}) after DPO: {final[split]}")
    distributed.leave_unless_main()  # the other ranks are done: evaluation and saving run once, on rank 0
    save_trained(trainer.model, recipe.method, run_dir.path)
    history = history_from([h for h in trainer.state.log_history if "eval_loss" not in h])
    save_loss_curve(run_dir / "plots" / "loss.png", history, "reward_margin")
    trainable, total = count_parameters(trainer.model)
    cost = cost_record(seconds, len(data["train"]), trainable, total, None, resumed_from_step=resumed_from)
    run_dir.write_metrics(final=final, history=history, cost=cost)
    return run_dir.commit(keep_checkpoints=train.save_every is not None)


def build_pairs(recipe, tokenizer, template: str) -> dict[str, list[dict]]:
    """Rendered (prompt, chosen, rejected) rows for training and the held-out split (eval, else test)."""
    from ..alignment.trl_bridge import best_vs_rest, render_pair
    from ..tasks.preference import load_preferences

    splits = load_preferences(recipe)
    rows = {}
    heldout = splits["eval"] if recipe.data.eval else splits["test"]
    for name, source in (("train", splits["train"]), ("heldout", heldout)):
        rows[name] = [
            render_pair(tokenizer, template, r["prompt"], r["responses"][i], r["responses"][j])
            for r in source
            for i, j in best_vs_rest(r)
        ]
    if not rows["train"]:
        raise DataError(
            "data.train: no preference pairs to train on (every ranking is a tie, or it is empty)"
        )
    return rows


def build_trainer(recipe, model, tokenizer, data: dict, run_dir: RunDir):
    """TRL's DPOTrainer on the shared TrainingArguments, the LoRA applied by TRL (reference: adapter off)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from ..alignment.trl_bridge import lora_for_trl, trl_config
    from ..training.arguments import training_arguments

    cfg, train = recipe.dpo, recipe.train
    base = training_arguments(
        train, str(run_dir / "checkpoints"), eval_every="no", has_eval=False,
        eval_batch_size=train.eval_batch_size or train.batch_size, grouped=False,
    )  # fmt: skip
    # TRL caches precomputed reference log-probs in a file beside the dataset; these in-memory datasets have
    # one temporary folder per process, so under data parallelism the reference runs at each step instead
    precompute = cfg.precompute_ref and distributed.world_size() == 1
    if cfg.precompute_ref and not precompute:
        run_dir.log("dpo.precompute_ref: off on several processes (the reference runs at each step)")
    args = trl_config(
        DPOConfig, base, beta=cfg.beta, loss_type=[cfg.loss_type], label_smoothing=cfg.label_smoothing,
        precompute_ref_log_probs=precompute, max_length=train.max_length, remove_unused_columns=False,
        gradient_checkpointing=False,
    )  # fmt: skip
    model, peft_config = lora_for_trl(model, recipe.method)
    heldout = Dataset.from_list(data["heldout"]) if data["heldout"] else None
    return DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(data["train"]), eval_dataset=heldout,
        processing_class=tokenizer, peft_config=peft_config,
    )  # fmt: skip


def held_out(trainer, before: bool = False) -> dict:
    """Implicit-reward accuracy, margin, chosen / rejected rewards and the loss on the held-out pairs."""
    from ..training.trainer import evaluate_before_training

    metrics = evaluate_before_training(trainer) if before else trainer.evaluate()
    return {
        name: round(metrics[f"eval_{key}"], 6) for key, name in REPORTED.items() if f"eval_{key}" in metrics
    }
