"""`lmadapt predict RUN_DIR --input FILE --output FILE`: predictions from a finished finetune run.

The model is rebuilt from the run folder alone: `config.yaml` says which base model, task (with its label
set) and method; `lmadapt.methods.load_trained` puts the trained weights back (or the tfidf baseline is
reloaded). Input goes through the same readers and validation as training data; gold fields are optional.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import LmadaptError, RecipeError
from .runs import RunDir
from .utils.io import atomic_path, write_jsonl


def load_predictor(run_dir: str | Path, trust_remote_code: bool = False):
    """(task, predict_fn) for a complete run; predict_fn(records) -> one prediction per record.

    `trust_remote_code` is the caller's (a flag), never the run folder's own config.yaml."""
    run = RunDir.open_complete(run_dir, "predict")
    recipe = run.read_config(trust_remote_code)
    from .tasks import get_task

    if recipe.stage != "finetune":
        raise LmadaptError(
            f"{run_dir}: a {recipe.stage} run; predict reads finetune runs (a prompt run's answers are in its "
            "predictions.jsonl; re-run its recipe with data.test set to your file)"
        )
    task = get_task(recipe.task)
    if recipe.method.type == "tfidf":
        from .baselines.tfidf import TfidfModel, inputs

        model = TfidfModel.load(run.path)
        return task, lambda records: model.predict(inputs(task, records))

    from .methods import load_trained
    from .tasks import build_model, run_inference

    base, tokenizer = build_model(recipe.model, task, recipe.train.seed)
    model = load_trained(base, recipe.method, run.path, task.task_type)
    collator = task.collator(tokenizer)
    batch = recipe.train.eval_batch_size or 2 * recipe.train.batch_size

    def predict(records: list[dict]) -> list:
        encoded = task.encode(records, tokenizer, recipe.train.max_length, with_gold=False)
        outputs = run_inference(model, encoded.features, collator, batch)
        return task.decode(outputs, encoded, len(records))

    return task, predict


def predict_file(
    run_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    submission: str | Path | None = None,
    trust_remote_code: bool = False,
) -> int:
    """Predict every record of `input_path`; write JSONL or CSV (by extension) and optionally id,label CSV."""
    from .data import load_split

    task, predict = load_predictor(run_dir, trust_remote_code)
    records = load_split(None, str(input_path), task.fields(with_gold=False))
    if not records:
        raise LmadaptError(f"{input_path}: no records to predict")
    preds = predict(records)
    rows = [
        {"id": task.record_id(r, i), "prediction": p}
        for i, (r, p) in enumerate(zip(records, preds, strict=True))
    ]
    write_rows(Path(output_path), rows)
    if submission:
        if isinstance(preds[0], list) and task.cfg.type != "classify":
            raise RecipeError(f"--submission: task '{task.cfg.type}' does not predict one label per record")
        write_rows(
            Path(submission), [{"id": r["id"], "label": r["prediction"]} for r in rows], force_csv=True
        )
    return len(rows)


def write_rows(path: Path, rows: list[dict], force_csv: bool = False) -> None:
    """JSONL for .jsonl/.json, CSV for .csv (lists joined with '|'); written atomically."""
    suffix = path.suffix.lower()
    if not force_csv and suffix in (".jsonl", ".json"):
        write_jsonl(path, rows)
        return
    if not force_csv and suffix != ".csv":
        raise LmadaptError(f"{path}: output must end in .jsonl or .csv")
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "|".join(v) if isinstance(v, list) else v for k, v in row.items()})
