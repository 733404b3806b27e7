"""Training curves of the alignment stages: one small panel per logged quantity against the step."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def save_curves(path: Path, history: Sequence[dict], panels: Sequence[tuple[str, str]]) -> None:
    """A grid of line plots, one per (key, title) in `panels` that the history holds; nothing if it is empty."""
    shown = [(key, title) for key, title in panels if any(key in h for h in history)]
    if not shown:
        return
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server or in CI
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_path

    cols = 4 if len(shown) > 4 else len(shown)
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, shown, strict=False):
        points = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], ".-")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
