"""`stage: finetune`: adapt a pretrained encoder to a classify / pair / tag / keywords / span task (tag and
span on any backbone: where transformers has no head for a decoder, lmadapt.tasks.heads gives one).

Reads top to bottom: data, model + method, run folder, train (Hugging Face `Trainer`, resumable), evaluate,
save. The non-neural `method: tfidf` baseline is dispatched by `stages.run_stage`, not here.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RecipeError
from ..runs import RunDir
from ..utils import distributed
from ..utils.seed import seed_everything


def run(recipe, callbacks: list | None = None, resume: bool = False) -> Path:
    """Train and evaluate; `callbacks` are extra `TrainerCallback`s (the benchmark's step timer);
    `resume` continues the interrupted run of this recipe from its last verified checkpoint."""
    from ..evaluation import cost_record, evaluate_splits, write_results
    from ..methods import apply_method, check_method, count_parameters, save_trained
    from ..plots import save_plots
    from ..tasks import build_model, get_task
    from ..training.checkpoints import save_arguments, train_from_latest
    from ..training.compile import compiled_layers
    from ..training.progress import history_from, run_callbacks

    task = get_task(recipe.task)
    check_method(recipe.method, task.task_type)  # a bad task/method combination fails before any loading
    cfg = recipe.train
    _set_threads(cfg.num_threads)
    seed_everything(cfg.seed)

    # --- data ---------------------------------------------------------------------------------------
    splits = load_task_data(recipe, task)

    # --- model + method -----------------------------------------------------------------------------
    model, tokenizer = build_model(recipe.model, task, cfg.seed)
    model = apply_method(model, recipe.method, task.task_type)
    trainable, total = count_parameters(model)
    encoded = {name: task.encode(records, tokenizer, cfg.max_length) for name, records in splits.items()}
    collator = task.collator(tokenizer)
    best_metric = recipe.eval.best_metric or task.best_metric
    save_arguments(cfg.save_every, recipe.eval.every if splits["eval"] else "no", keep_best=True)  # checked

    # --- run folder (only now: a bad recipe, data or model leaves nothing behind) ---------------------
    run_dir = RunDir.start(recipe, resume)
    run_dir.write_config(recipe)
    findings = log_start(run_dir, recipe, task, splits, f"{trainable:,} of {total:,}")
    trainer = build_trainer(
        recipe, task, model, tokenizer, splits, encoded, collator, best_metric, run_dir / "checkpoints"
    )
    for callback in [*(callbacks or []), *run_callbacks(run_dir, cfg.keep_checkpoints)]:
        trainer.add_callback(callback)

    # --- train --------------------------------------------------------------------------------------
    train_seconds, resumed_from = train_from_latest(trainer, run_dir, compiled_layers(model, cfg.compile))
    distributed.leave_unless_main()  # the other ranks are done: evaluation and saving run once, on rank 0
    model = trainer.model
    trainer.state.save_to_json(str(run_dir / "trainer_state.json"))

    # --- evaluate -----------------------------------------------------------------------------------
    predict = encoder_predictor(task, model, encoded, collator, cfg.eval_batch_size or 2 * cfg.batch_size)
    evaluation = evaluate_splits(task, splits, predict, recipe.eval.metrics, run_dir.log)

    # --- save ---------------------------------------------------------------------------------------
    save_trained(model, recipe.method, run_dir.path)
    history = history_from(trainer.state.log_history)
    save_plots(run_dir / "plots", history, evaluation.shown_report, best_metric)
    cost = cost_record(
        train_seconds, len(splits["train"]), trainable, total, evaluation.examples_per_s,
        resumed_from_step=resumed_from,
    )  # fmt: skip
    write_results(run_dir, evaluation, history, cost, task=findings)
    return run_dir.commit(keep_checkpoints=cfg.save_every is not None)


def load_task_data(recipe, task) -> dict[str, list[dict]]:
    """The splits, checked; the label set read from train goes into the recipe (config.yaml records the
    label order the head is built with)."""
    from ..data.splits import load_splits

    splits = load_splits(recipe, task.fields(True))
    if not splits["train"]:
        raise RecipeError("data.train: the finetune stage needs training examples")
    labels = task.fit_labels(splits["train"])
    if labels is not None and hasattr(recipe.task, "labels"):
        recipe.task.labels = labels
    if recipe.task.type in ("classify", "pair"):
        check_labels_known(task, splits, labels)
    golds = [task.gold(r) for r in splits["train"][:2]]
    task.select(task.score(golds, golds), recipe.eval.metrics)  # an unknown eval.metrics fails now, not later
    return splits


def log_start(run_dir, recipe, task, splits: dict[str, list[dict]], parameters: str) -> dict:
    """Log the data, what the task found in it (tag scheme, unseen labels...) and the method; return the
    findings (metrics.json's `task`)."""
    run_dir.log(f"task {recipe.task.type}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    findings, notes = task.findings(splits)
    for note in notes:
        run_dir.log(note)
    run_dir.log(f"method {recipe.method.type}: {parameters} parameters train")
    return findings


def check_labels_known(task, splits: dict[str, list[dict]], labels: list[str]) -> None:
    """Every eval/test label must be one the head is built for (read from train, or task.labels)."""
    known = set(labels)
    for name in ("eval", "test"):
        for record in splits[name]:
            gold = task.gold(record)
            unseen = [v for v in (gold if isinstance(gold, list) else [gold]) if v not in known]
            if unseen:
                where = getattr(record, "where", "") or f"data.{name}"
                raise RecipeError(
                    f"{where}: {task.cfg.label}: label {unseen[0]!r} is not among the labels the model "
                    f"is trained for ({', '.join(sorted(known))}); add training examples of it, or list "
                    "every label in task.labels"
                )


def build_trainer(recipe, task, model, tokenizer, splits, encoded, collator, best_metric, output_dir: Path):
    """The Trainer, checkpointing into `output_dir`; the best checkpoint on `best_metric` is kept and loaded
    at the end (when there is an eval split)."""
    from transformers import EarlyStoppingCallback

    from ..tasks import split_trainer_outputs
    from ..training.arguments import training_arguments

    cfg, has_eval = recipe.train, bool(splits["eval"])
    wanted = recipe.eval.metrics

    def compute_metrics(prediction):
        outputs = split_trainer_outputs(prediction.predictions, encoded["eval"].features)
        preds = task.decode(outputs, encoded["eval"], len(splits["eval"]))
        metrics = task.score([task.gold(r) for r in splits["eval"]], preds)
        return {k: v for k, v in metrics.items() if not wanted or k in wanted or k == best_metric}

    args = training_arguments(
        cfg, str(output_dir), eval_every=recipe.eval.every, has_eval=has_eval,
        eval_batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, grouped=cfg.group_by_length,
        keep_best=True, best_metric=best_metric, label_names=list(task.label_names),
    )  # fmt: skip
    callbacks = []
    if recipe.eval.early_stopping_patience and args.eval_strategy != "no":
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.eval.early_stopping_patience))
    return _ordered_eval_trainer()(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=encoded["train"].features,
        eval_dataset=encoded["eval"].features if has_eval else None,
        processing_class=tokenizer,
        compute_metrics=compute_metrics if has_eval else None,
        callbacks=callbacks,
    )


def encoder_predictor(task, model, encoded, collator, batch_size: int):
    """predict(split, records) for evaluate_splits: the model's outputs decoded into the task's predictions."""
    from ..tasks import run_inference

    def predict(name: str, records: list[dict]):
        outputs = run_inference(model, encoded[name].features, collator, batch_size)
        return task.decode(outputs, encoded[name], len(records)), None

    return predict


def _set_threads(num_threads: int | None) -> None:
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)


def _ordered_eval_trainer():
    from torch.utils.data import SequentialSampler

    from ..training.trainer import ResumableTrainer

    class OrderedEvalTrainer(ResumableTrainer):
        """Trainer that evaluates in dataset order, and averages the heads' per-example losses.

        With `group_by_length`, transformers 5 also length-groups (shuffles) the eval set; our metrics decode
        each prediction back to its record by position, so evaluation must keep the order.

        The encoder heads' losses are means over their batch that ignore `num_items_in_batch`, but their
        forward takes **kwargs, so the Trainer takes them for token-normalised: it would neither divide by
        the gradient accumulation steps nor keep DDP's average (measured: grad_accum 2 and 2 processes each
        trained on twice the gradient of batch_size x 2 in one step). Said plainly here, they are averaged.
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False

        def _get_eval_sampler(self, eval_dataset):
            return SequentialSampler(eval_dataset) if eval_dataset is not None else None

    return OrderedEvalTrainer
