"""The `TrainingArguments` every training stage builds from the recipe's `train:` and `eval:` sections."""

from __future__ import annotations

from typing import Any

from .checkpoints import save_arguments


def check_strategy(distributed_cfg) -> None:
    """FSDP and DeepSpeed need CUDA (and DeepSpeed its package): refuse them clearly where they cannot run."""
    import importlib.util

    import torch

    from ..errors import RecipeError

    strategy = distributed_cfg.strategy
    if strategy == "ddp":
        return
    if not torch.cuda.is_available():
        raise RecipeError(
            f"train.distributed.strategy: {strategy} needs CUDA GPUs (on CPU the gloo backend runs only "
            "ddp); use strategy: ddp here"
        )
    if strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise RecipeError(
            "train.distributed.strategy: deepspeed: the deepspeed package is not installed "
            "(pip install deepspeed on the GPU machine), or use strategy: ddp / fsdp"
        )


def distributed_arguments(distributed_cfg) -> dict:
    """TrainingArguments for `train.distributed`: ddp is the Trainer's default under torchrun; FSDP and
    DeepSpeed get the recipe's config file passed through as is."""
    check_strategy(distributed_cfg)
    if distributed_cfg.strategy == "fsdp":
        return {"fsdp": "full_shard auto_wrap", "fsdp_config": distributed_cfg.config}
    if distributed_cfg.strategy == "deepspeed":
        return {"deepspeed": distributed_cfg.config}
    return {}


def eval_strategy(eval_every, has_eval: bool) -> tuple[str, int | None]:
    """("epoch" | "steps" | "no", eval_steps) for `eval.every` (an int means every N steps)."""
    if not has_eval or eval_every == "no":
        return "no", None
    return ("steps", eval_every) if isinstance(eval_every, int) else (eval_every, None)


def sampling_strategy(cfg, grouped: bool) -> str:
    """Trainer's `train_sampling_strategy` for the recipe: file order, length-grouped, or shuffled."""
    if not cfg.shuffle:
        return "sequential"
    return "group_by_length" if grouped else "random"


def training_arguments(
    cfg,
    output_dir: str,
    *,
    eval_every,
    has_eval: bool,
    eval_batch_size: int,
    grouped: bool,
    keep_best: bool = False,
    best_metric: str | None = None,
    **extra: Any,
):
    """TrainingArguments from `train:` (cfg) and `eval.every`; `extra` adds what only one stage needs.

    keep_best: keep the checkpoint best on `best_metric` and load it at the end (finetune). Checkpoints go to
    `output_dir` (every `train.save_every` steps and, with keep_best, at each evaluation).
    """
    import torch
    from transformers import TrainingArguments

    from .trainer import match_accelerator_precision

    match_accelerator_precision(cfg.bf16)  # accelerate's process-wide precision must be this run's
    strategy, steps = eval_strategy(eval_every, has_eval)
    keep_best = keep_best and strategy != "no"
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        lr_scheduler_type=cfg.scheduler if cfg.scheduler != "constant" else "constant_with_warmup",
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of all steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        train_sampling_strategy=sampling_strategy(cfg, grouped),
        bf16=cfg.bf16,
        use_cpu=not torch.cuda.is_available(),  # bf16 autocast on CPU needs it said explicitly
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        eval_strategy=strategy,
        eval_steps=steps,
        # rotation is VerifiedCheckpoints' job: old checkpoints go only after a new one verifies
        **save_arguments(cfg.save_every, eval_every if strategy != "no" else "no", keep_best),
        load_best_model_at_end=keep_best,
        metric_for_best_model=f"eval_{best_metric}" if keep_best else None,
        greater_is_better=True,
        report_to="none",
        dataloader_pin_memory=False,  # CPU-first: pinning only warns without an accelerator
        disable_tqdm=False,
        **distributed_arguments(cfg.distributed),
        **extra,
    )
