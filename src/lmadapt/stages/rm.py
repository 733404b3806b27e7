"""`stage: rm`: train a reward model on preferences (task `preference`): pairs, or K answers ranked best first.

Reads top to bottom: load the preferences, the model with a one-output head (AutoModelForSequenceClassification,
any causal LM or encoder), encode every answer as prompt + answer, apply the method (LoRA saves the head with
the adapter), measure held-out ranking metrics, train (the Hugging Face `Trainer`, resumable, with the
K-wise loss), measure again, save.

One training example is one prompt with all its K answers; its loss is the mean of -log sigmoid(r_i - r_j)
over the C(K,2) pairs i < j (ties in `scores` form no pair), then the mean over the prompts of the batch
(InstructGPT; Open-Assistant's RMLoss): K = 2 is the usual pairwise loss. The score is read at the last real
token, from the attention mask (lmadapt/training/reward_model.py). Metrics on eval and test: pairwise
accuracy, mean margin, loss; for rankings Kendall tau and top-1 accuracy.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, RecipeError
from ..runs import RunDir, timer
from ..utils import distributed
from ..utils.io import write_jsonl
from ..utils.seed import seed_everything

SPLITS = ("eval", "test")


def run(recipe, callbacks: list | None = None, resume: bool = False) -> Path:
    """Train and evaluate a reward model; `resume` continues the interrupted run from its last checkpoint."""
    from ..evaluation import cost_record
    from ..methods import apply_method, count_parameters, save_trained
    from ..plots import save_plots
    from ..tasks.preference import load_preferences
    from ..templates import resolve_template
    from ..training.checkpoints import train_from_latest
    from ..training.progress import history_from, run_callbacks
    from ..training.reward_model import build_reward_model

    cfg = check_recipe(recipe)
    seed_everything(cfg.seed)

    # --- data, model, examples ------------------------------------------------------------------------
    splits = load_preferences(recipe)
    model, tokenizer = build_reward_model(
        recipe.model.name, recipe.model.dtype, recipe.model.trust_remote_code
    )
    template = resolve_template(tokenizer, recipe.task.template)
    splits, features, dropped = prepare_examples(splits, tokenizer, template, cfg.max_length)

    # --- run folder (only now: a bad recipe, data or model leaves nothing behind), method -----------
    run_dir = start_run(recipe, resume, features, dropped, template)
    model = apply_method(model, recipe.method, "seq_cls")
    trainable, total = count_parameters(model)
    run_dir.log(f"method {recipe.method.type}: {trainable:,} of {total:,} parameters train (head included)")

    # --- train, with the held-out metrics before and after -------------------------------------------
    trainer = build_trainer(recipe, model, tokenizer, features, run_dir)
    for callback in [*(callbacks or []), *run_callbacks(run_dir, cfg.keep_checkpoints)]:
        trainer.add_callback(callback)
    ranked, batch = recipe.task.ranked, cfg.eval_batch_size or 2 * cfg.batch_size
    held = (features.get("eval") or features["test"]) if distributed.is_main() else None  # once, on rank 0
    before = evaluate_split(model, tokenizer.pad_token_id, held, ranked, batch)
    train_seconds, resumed_from = train_from_latest(trainer, run_dir)
    distributed.leave_unless_main()  # the other ranks are done: evaluation and saving run once, on rank 0
    model = trainer.model.eval()

    # --- evaluate -----------------------------------------------------------------------------------
    with timer() as infer_time:
        final, predictions = evaluate_splits(model, tokenizer.pad_token_id, features, splits, ranked, batch)
    if before:
        final[next(iter(final))] |= {f"{k}_before": v for k, v in before.items() if k != "pairs"}
    for name, metrics in final.items():
        run_dir.log(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    # --- save ---------------------------------------------------------------------------------------
    save_trained(model, recipe.method, run_dir.path)
    write_jsonl(run_dir / "predictions.jsonl", predictions)
    history = history_from(trainer.state.log_history)
    save_plots(run_dir / "plots", history, {}, "pairwise_accuracy")
    answers = sum(len(f["input_ids"]) for n in SPLITS for f in features[n])
    cost = cost_record(
        train_seconds, len(features["train"]), trainable, total,
        round(answers / infer_time(), 2) if answers else None, resumed_from_step=resumed_from,
        train_answers=sum(len(f["input_ids"]) for f in features["train"]),
    )  # fmt: skip
    run_dir.write_metrics(final=final, history=history, cost=cost)
    return run_dir.commit(keep_checkpoints=cfg.save_every is not None)


def check_recipe(recipe):
    """The recipe's train section, once task and method are known to fit stage rm (before any loading)."""
    from ..methods import check_method

    if recipe.task.type != "preference":
        raise RecipeError(f"stage rm: task type {recipe.task.type!r} is not supported; use preference")
    method = check_method(recipe.method, "seq_cls")
    if method.injects_inputs:
        raise RecipeError(
            f"stage rm: method {method.name!r} adds virtual tokens, which would shift the last token the "
            "score is read at; use lora, ia3, adapter, freeze or full"
        )
    if recipe.train.num_threads:
        import torch

        torch.set_num_threads(recipe.train.num_threads)
    return recipe.train


def start_run(recipe, resume: bool, features: dict, dropped: dict, template: str) -> RunDir:
    run_dir = RunDir.start(recipe, resume)
    run_dir.write_config(recipe)
    shown = ", ".join(
        f"{k} {len(v)} prompts / {sum(len(f['input_ids']) for f in v)} answers" for k, v in features.items()
    )
    run_dir.log(
        f"task preference ({'rankings' if recipe.task.ranked else 'pairs'}), template {template}: {shown}"
    )
    for name, count in dropped.items():
        if count:
            run_dir.log(
                f"warning: {name}: {count} prompts left out (their answers tie or are the same text: no pair "
                "to learn from)"
            )
    return run_dir


# --- examples ---------------------------------------------------------------------------------------------
def prepare_examples(splits: dict, tokenizer, template: str, max_length: int):
    """(records kept, features, dropped counts) per split. One feature per prompt: the token ids of each
    answer (prompt + answer, the prompt's start cut beyond max_length) and the scores that order them."""
    from ..tasks.preference import pairs_of, same_answers
    from ..training.reward_model import encode_answer

    kept, features, dropped = {}, {}, {}
    for name, records in splits.items():
        kept[name] = [r for r in records if pairs_of(r)]
        dropped[name] = len(records) - len(kept[name])
        features[name] = [
            {
                "input_ids": [
                    encode_answer(tokenizer, r["prompt"], a, template, max_length) for a in r["responses"]
                ],
                "scores": rank_scores(r),
            }
            for r in kept[name]
        ]
    same = sum(same_answers(r) for r in splits["train"])
    if not features["train"]:
        raise DataError(
            f"data.train: stage rm needs training preferences; {dropped['train']} prompts were read, and none "
            f"has two different answers of different rank ({same} have the chosen answer equal to the rejected)"
        )
    return kept, features, dropped


def rank_scores(record: dict) -> list[float]:
    """The record's scores, or for a plain ranking K-1 .. 0 (every earlier answer beats every later one)."""
    k = len(record["responses"])
    return list(record["scores"]) if record.get("scores") else [float(k - 1 - i) for i in range(k)]


class RankCollator:
    """A batch of prompts -> their answers as rows (right-padded), each distinct row once (`answer` maps each
    answer back to its row: a metric ranks many identical samples), with each prompt's K and scores."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        from ..training.reward_model import pad_rows

        rows: dict[tuple, int] = {}
        answer = [rows.setdefault(tuple(ids), len(rows)) for f in features for ids in f["input_ids"]]
        batch = pad_rows(list(rows), self.pad_id, side="right")
        batch["answer"] = torch.tensor(answer, dtype=torch.long)
        batch["sizes"] = torch.tensor([len(f["input_ids"]) for f in features], dtype=torch.long)
        batch["scores"] = torch.tensor([s for f in features for s in f["scores"]], dtype=torch.float)
        return batch


# --- training ---------------------------------------------------------------------------------------------
def build_trainer(recipe, model, tokenizer, features: dict, run_dir: RunDir):
    """The resumable Trainer with the K-wise loss; its evaluations report the ranking metrics."""
    from ..training.arguments import training_arguments

    cfg = recipe.train
    eval_features = features["eval"]
    args = training_arguments(
        cfg, str(run_dir / "checkpoints"), eval_every=recipe.eval.every, has_eval=bool(eval_features),
        eval_batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, grouped=False,
        remove_unused_columns=False, label_names=[],
    )  # fmt: skip
    return _reward_trainer()(
        model=model,
        args=args,
        data_collator=RankCollator(tokenizer.pad_token_id),
        train_dataset=features["train"],
        eval_dataset=eval_features or None,
        processing_class=tokenizer,
        ranked=recipe.task.ranked,
    )


def _reward_trainer():
    from ..training.ranking_loss import ranking_loss
    from ..training.reward_model import reward_scores
    from ..training.trainer import ResumableTrainer

    class RewardTrainer(ResumableTrainer):
        """ResumableTrainer with the K-wise ranking loss; `evaluate` reports the ranking metrics."""

        def __init__(self, *args, ranked: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.ranked = ranked
            self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: the Trainer divides by GA

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            rows = reward_scores(model, inputs["input_ids"], inputs["attention_mask"])
            rewards = rows[inputs["answer"]]  # each answer's reward, prompt after prompt
            sizes = inputs["sizes"].tolist()
            scores = inputs["scores"].split(sizes)
            loss = ranking_loss(rewards, sizes, [s.tolist() for s in scores])
            return (loss, {"rewards": rewards}) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            if not self.is_world_process_zero():  # the ranking metrics once, on rank 0, not once per rank
                self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, {})
                return {}
            dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
            training = self.model.training
            metrics = evaluate_split(
                self.model,
                self.processing_class.pad_token_id,
                dataset,
                self.ranked,
                self.args.eval_batch_size,
            )
            self.model.train(training)
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return RewardTrainer


# --- evaluation -------------------------------------------------------------------------------------------
def score_features(model, pad_id: int, features: list[dict], batch_size: int) -> list[list[float]]:
    """Each prompt's answer rewards (in its rank order), answers batched across prompts, no gradients."""
    import torch

    from ..training.reward_model import pad_rows, reward_scores

    rows = list(dict.fromkeys(tuple(ids) for f in features for ids in f["input_ids"]))  # each distinct once
    rows.sort(key=len)  # similar lengths together: little padding
    score: dict[tuple, float] = {}
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = pad_rows(chunk, pad_id)
            out = reward_scores(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
            score.update(zip(chunk, out.tolist(), strict=True))
    flat = [score[tuple(ids)] for f in features for ids in f["input_ids"]]
    grouped, at = [], 0
    for f in features:
        grouped.append(flat[at : at + len(f["input_ids"])])
        at += len(f["input_ids"])
    return grouped


def evaluate_split(model, pad_id: int, features: list[dict] | None, ranked: bool, batch_size: int) -> dict:
    """Ranking metrics of one split's features ({} when it has none)."""
    from ..training.ranking_loss import ranking_metrics

    if not features:
        return {}
    rewards = score_features(model, pad_id, features, batch_size)
    return ranking_metrics(rewards, [f["scores"] for f in features], ranked)


def evaluate_splits(model, pad_id: int, features: dict, splits: dict, ranked: bool, batch_size: int):
    """(final metrics per split, prediction rows of the test split, else eval): rewards per answer."""
    from ..training.ranking_loss import ranking_metrics

    final, predictions = {}, []
    for name in SPLITS:
        if not features[name]:
            continue
        rewards = score_features(model, pad_id, features[name], batch_size)
        final[name] = ranking_metrics(rewards, [f["scores"] for f in features[name]], ranked)
        predictions = [
            {"id": r.get("id", i), "rewards": [round(x, 4) for x in rw], "scores": f["scores"],
             "best_first": rw == sorted(rw, reverse=True)}
            for i, (r, rw, f) in enumerate(zip(splits[name], rewards, features[name], strict=True))
        ]  # fmt: skip
    return final, predictions
