"""Evaluate on the eval and test splits, then write what every run folder holds: predictions, report, metrics.

One sequence for the finetune stage, the tfidf baseline and the prompt stage: predict each split, score it
with the task's metrics, keep its report and (for the last split, test if there is one) one prediction row
per record, measure inference speed, and write predictions.jsonl, report.json, metrics.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .runs import RunDir, peak_rss_mb, timer
from .utils.io import write_json, write_jsonl

SPLITS = ("eval", "test")

# (split name, records) -> (one prediction per record, optional extra fields per record)
Predict = Callable[[str, list[dict]], tuple[list, list[dict] | None]]


@dataclass
class Evaluation:
    final: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metric -> value
    report: dict[str, dict] = field(default_factory=dict)  # split -> task report (confusion, per class)
    predictions: list[dict] = field(default_factory=list)  # the test split's rows (else eval's)
    infer_seconds: float = 0.0
    infer_examples: int = 0

    @property
    def examples_per_s(self) -> float | None:
        return round(self.infer_examples / self.infer_seconds, 2) if self.infer_seconds else None

    @property
    def shown_report(self) -> dict:
        """The report a run plots: the test split's, else eval's."""
        return self.report.get("test") or self.report.get("eval") or {}


def evaluate_splits(task, splits: dict[str, list[dict]], predict: Predict, wanted, log) -> Evaluation:
    """Predict, score and report every non-empty eval/test split; `wanted` limits the metrics kept."""
    result = Evaluation()
    for name in SPLITS:
        records = splits.get(name) or []
        if not records:
            continue
        with timer() as infer_time:
            preds, extra = predict(name, records)
        result.infer_seconds += infer_time()
        result.infer_examples += len(records)
        golds = [task.gold(r) for r in records]
        result.final[name] = task.select(task.score(golds, preds), wanted)
        result.report[name] = task.report(golds, preds)
        extra = extra or [{}] * len(records)
        result.predictions = [
            {"id": task.record_id(r, i), "prediction": p, "gold": g} | x
            for i, (r, p, g, x) in enumerate(zip(records, preds, golds, extra, strict=True))
        ]
        log(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.final[name].items()))
    return result


def cost_record(
    train_seconds: float, train_examples: int, trainable: int, total: int, infer_per_s, **extra: Any
) -> dict[str, Any]:
    """metrics.json's `cost`: what the run took (compare's columns), plus anything else measured."""
    return {
        "train_seconds": round(train_seconds, 2),
        "train_examples": train_examples,
        **extra,
        "trainable_params": trainable,
        "total_params": total,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "infer_examples_per_s": infer_per_s,
    }


def write_results(
    run_dir: RunDir, evaluation: Evaluation, history: list[dict], cost: dict, task: dict | None = None
) -> None:
    """predictions.jsonl, report.json and metrics.json (the run's results; status is written at commit);
    `task`: what the task found in the data (the tag scheme...), metrics.json's `task`."""
    write_jsonl(run_dir / "predictions.jsonl", evaluation.predictions)
    write_json(run_dir / "report.json", evaluation.report)
    run_dir.write_metrics(final=evaluation.final, history=history, cost=cost, task=task)
