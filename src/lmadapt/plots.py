"""Run-folder plots: the loss curve (with the eval metric) and the confusion matrix."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def save_plots(plots_dir: Path, history: list[dict], report: dict, best_metric: str) -> None:
    """plots/loss.png (train and eval loss, eval metric) and plots/confusion.png for single-label tasks."""
    save_loss_curve(plots_dir / "loss.png", history, best_metric)
    if report.get("confusion"):
        save_confusion(plots_dir / "confusion.png", report["labels"], report["confusion"])


def save_loss_curve(path: Path, history: list[dict], best_metric: str) -> None:
    train = [h for h in history if h["split"] == "train"]
    evals = [h for h in history if h["split"] == "eval"]
    if not (train or evals):
        return
    plt = _pyplot()
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_confusion(path: Path, labels: list, matrix: list[list[int]]) -> None:
    plt = _pyplot()
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
