"""`stage: finetune`: adapt a pretrained encoder to a classify / pair / tag / keywords / span task.

Reads top to bottom: build model, build data, apply method, train (Hugging Face `Trainer`, used as is),
evaluate, save. `method: tfidf` runs the non-neural baseline instead, into the same run-folder format.
"""

from __future__ import annotations

from pathlib import Path

from ..runs import RunDir, peak_rss_mb, timer
from ..utils.io import write_json, write_jsonl
from ..utils.seed import seed_everything


def run(recipe, callbacks: list | None = None, resume: bool = False) -> Path:
    """Train and evaluate; `callbacks` are extra `TrainerCallback`s (the benchmark's step timer);
    `resume` continues the interrupted run of this recipe from its last verified checkpoint."""
    if recipe.method.type == "tfidf":
        from ..baselines import tfidf

        return tfidf.run(recipe, resume=resume)

    import torch
    from transformers import EarlyStoppingCallback, TrainingArguments

    from ..methods import apply_method, check_method, count_parameters, save_trained
    from ..tasks import build_model, get_task, run_inference, split_trainer_outputs
    from ..training.checkpoints import VerifiedCheckpoints, latest_checkpoint, save_arguments
    from ..training.compile import compiled_layers
    from ..training.progress import RunLog
    from ..training.trainer import match_accelerator_precision

    task = get_task(recipe.task)
    check_method(recipe.method, task.task_type)  # a bad task/method combination fails before any loading
    cfg = recipe.train
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)

    # --- data ---------------------------------------------------------------------------------------
    splits = load_splits(recipe, task)
    if not splits["train"]:
        from ..errors import RecipeError

        raise RecipeError("data.train: the finetune stage needs training examples")
    every = recipe.eval.every if splits["eval"] else "no"
    strategy = "steps" if isinstance(every, int) else every
    saving = save_arguments(cfg.save_every, every, keep_best=strategy != "no")
    labels = task.fit_labels(splits["train"])
    if labels is not None and hasattr(recipe.task, "labels"):
        recipe.task.labels = labels  # config.yaml records the label order the head was built with

    # --- model + method -----------------------------------------------------------------------------
    model, tokenizer = build_model(recipe.model, task, cfg.seed)
    model = apply_method(model, recipe.method, task.task_type)
    trainable, total = count_parameters(model)
    run_dir = RunDir.start(recipe, resume)  # only now: a bad recipe, data or model leaves nothing behind
    run_dir.write_config(recipe)
    run_dir.log(f"task {recipe.task.type}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    run_dir.log(f"method {recipe.method.type}: {trainable:,} of {total:,} parameters train")

    encoded = {name: task.encode(records, tokenizer, cfg.max_length) for name, records in splits.items()}
    collator = task.collator(tokenizer)
    eval_split = "eval" if splits["eval"] else None

    # --- train --------------------------------------------------------------------------------------
    wanted = recipe.eval.metrics
    best_metric = recipe.eval.best_metric or task.best_metric

    def compute_metrics(prediction):
        outputs = split_trainer_outputs(prediction.predictions, encoded["eval"].features)
        preds = task.decode(outputs, encoded["eval"], len(splits["eval"]))
        metrics = task.score([task.gold(r) for r in splits["eval"]], preds)
        return {k: v for k, v in metrics.items() if not wanted or k in wanted or k == best_metric}

    match_accelerator_precision(cfg.bf16)
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        lr_scheduler_type=cfg.scheduler if cfg.scheduler != "constant" else "constant_with_warmup",
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of all steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        train_sampling_strategy=sampling_strategy(cfg, grouped=cfg.group_by_length),
        bf16=cfg.bf16,
        use_cpu=not torch.cuda.is_available(),  # bf16 autocast on CPU needs it said explicitly
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        eval_strategy=strategy,
        eval_steps=every if isinstance(every, int) else None,
        **saving,  # rotation: VerifiedCheckpoints (only after the new checkpoint verifies)
        load_best_model_at_end=strategy != "no",
        metric_for_best_model=f"eval_{best_metric}" if strategy != "no" else None,
        greater_is_better=True,
        label_names=list(task.label_names),
        report_to="none",
        dataloader_pin_memory=False,  # CPU-first: pinning only warns without an accelerator
        disable_tqdm=False,
    )
    OrderedEvalTrainer = _ordered_eval_trainer()  # noqa: N806
    callbacks = [
        *(callbacks or []),
        RunLog(run_dir),
        VerifiedCheckpoints(args.output_dir, cfg.keep_checkpoints),
    ]
    if recipe.eval.early_stopping_patience and strategy != "no":
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.eval.early_stopping_patience))
    trainer = OrderedEvalTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=encoded["train"].features,
        eval_dataset=encoded["eval"].features if eval_split else None,
        processing_class=tokenizer,
        compute_metrics=compute_metrics if eval_split else None,
        callbacks=callbacks,
    )
    checkpoint = latest_checkpoint(run_dir / "checkpoints", run_dir.log) if run_dir.resumed else None
    if checkpoint:
        run_dir.log(f"resuming from {checkpoint.name}")
    with compiled_layers(model, cfg.compile), timer() as train_time:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    model = trainer.model
    trainer.state.save_to_json(str(run_dir / "trainer_state.json"))
    run_dir.log(f"trained in {train_time():.1f}s")

    # --- evaluate -----------------------------------------------------------------------------------
    final, report, predictions = {}, {}, []
    infer_seconds = infer_examples = 0.0
    batch = cfg.eval_batch_size or 2 * cfg.batch_size
    for name in ("eval", "test"):
        records = splits[name]
        if not records:
            continue
        with timer() as infer_time:
            outputs = run_inference(model, encoded[name].features, collator, batch)
        infer_seconds += infer_time()
        infer_examples += len(records)
        preds = task.decode(outputs, encoded[name], len(records))
        golds = [task.gold(r) for r in records]
        final[name] = task.select(task.score(golds, preds), wanted)
        report[name] = task.report(golds, preds)
        predictions = [
            {"id": task.record_id(r, i), "prediction": p, "gold": g}
            for i, (r, p, g) in enumerate(zip(records, preds, golds, strict=True))
        ]
        run_dir.log(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in final[name].items()))

    # --- save ---------------------------------------------------------------------------------------
    save_trained(model, recipe.method, run_dir.path)
    write_jsonl(run_dir / "predictions.jsonl", predictions)  # the test split's (else eval's)
    write_json(run_dir / "report.json", report)
    history = history_from(trainer.state.log_history)
    save_plots(run_dir, history, report.get("test") or report.get("eval") or {}, best_metric)
    cost = {
        "train_seconds": round(train_time(), 2),
        "train_examples": len(splits["train"]),
        "resumed_from_step": _step_of(checkpoint),
        "trainable_params": trainable,
        "total_params": total,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "infer_examples_per_s": round(infer_examples / infer_seconds, 2) if infer_seconds else None,
    }
    run_dir.write_metrics(final=final, history=history, cost=cost)
    return run_dir.commit(keep_checkpoints=cfg.save_every is not None)


def _step_of(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else None


def _ordered_eval_trainer():
    from torch.utils.data import SequentialSampler

    from ..training.trainer import ResumableTrainer

    class OrderedEvalTrainer(ResumableTrainer):
        """Trainer that evaluates in dataset order.

        With `group_by_length`, transformers 5 also length-groups (shuffles) the eval set; our metrics decode
        each prediction back to its record by position, so evaluation must keep the order.
        """

        def _get_eval_sampler(self, eval_dataset):
            return SequentialSampler(eval_dataset) if eval_dataset is not None else None

    return OrderedEvalTrainer


def load_splits(recipe, task, with_gold: bool = True) -> dict[str, list[dict]]:
    """train / eval / test records through the shared readers (validated, subset by data.max_*)."""
    from ..data import load_split

    data = recipe.data
    fields = task.fields(with_gold)
    limits = {"train": data.max_train, "eval": data.max_eval, "test": data.max_test}
    return {
        name: load_split(data.source, getattr(data, name), fields, limit=limits[name], seed=data.seed)
        for name in ("train", "eval", "test")
    }


def history_from(log_history: list[dict]) -> list[dict]:
    """Trainer's log history -> [{step, epoch, split, metrics...}] (train losses and eval results)."""
    history = []
    for entry in log_history:
        base = {"step": entry.get("step"), "epoch": entry.get("epoch")}
        if "loss" in entry:
            history.append(base | {"split": "train", "loss": entry["loss"], "lr": entry.get("learning_rate")})
        elif any(k.startswith("eval_") for k in entry):
            metrics = {k[5:]: v for k, v in entry.items() if k.startswith("eval_") and "runtime" not in k}
            metrics = {k: v for k, v in metrics.items() if not k.endswith("per_second")}
            history.append(base | {"split": "eval"} | metrics)
    return history


def save_plots(run_dir: RunDir, history: list[dict], report: dict, best_metric: str) -> None:
    """plots/loss.png (train and eval loss, eval metric) and plots/confusion.png for single-label tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if h["split"] == "train"]
    evals = [h for h in history if h["split"] == "eval"]
    if train or evals:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([h["step"] for h in train], [h["loss"] for h in train], label="train loss")
        if any("loss" in h for h in evals):
            ax.plot([h["step"] for h in evals], [h.get("loss") for h in evals], "o-", label="eval loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if any(best_metric in h for h in evals):
            twin = ax.twinx()
            twin.plot([h["step"] for h in evals], [h.get(best_metric) for h in evals], "s--", color="green")
            twin.set_ylabel(f"eval {best_metric}", color="green")
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(run_dir / "plots" / "loss.png", dpi=100)
        plt.close(fig)
    if report.get("confusion"):
        labels, matrix = report["labels"], report["confusion"]
        fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(labels), 1 + 0.6 * len(labels)))
        ax.imshow(matrix, cmap="Blues")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, str(value), ha="center", va="center")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        fig.tight_layout()
        fig.savefig(run_dir / "plots" / "confusion.png", dpi=100)
        plt.close(fig)


def sampling_strategy(cfg, grouped: bool) -> str:
    """Trainer's `train_sampling_strategy` for the recipe: file order, length-grouped, or shuffled."""
    if not cfg.shuffle:
        return "sequential"
    return "group_by_length" if grouped else "random"
