"""`lmadapt compare`: run several recipes (and a grid of overrides), then rank them on one leaderboard.

Each configuration gets its own run folder under OUTPUT/runs/NAME. A folder whose metrics.json exists and
whose config.yaml equals the resolved recipe is reused, not retrained. Every run is a separate process
(`python -m lmadapt train`), so its peak memory is its own. The leaderboard (Markdown, CSV, JSON) lists the
task metrics, trainable parameters, train time, peak memory and inference speed; leaderboard.png plots
quality against train time (log scale).

Finished run folders can be named too (`lmadapt compare runs/a runs/b`, or a folder of run folders): they
join the leaderboard as they are, under their folder's name, whatever command wrote them.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import Recipe, load_recipe, recipe_to_yaml
from .errors import RecipeError
from .runs import RunDir
from .utils.io import write_json, write_text

PREFERRED_METRICS = (
    *("accuracy", "f1_macro", "f1", "keyword_f1", "entity_f1", "token_f1", "exact_match"),
    *("pairwise_accuracy", "reward_accuracy", "reward"),  # rm, dpo, ppo/grpo runs (all higher-is-better)
)
PRIMARY_ORDER = (
    *("f1_macro", "accuracy", "keyword_f1", "entity_f1", "token_f1", "exact_match"),
    *("pairwise_accuracy", "reward_accuracy", "reward"),
)
COST_COLUMNS = ("trainable_params", "train_seconds", "peak_rss_mb", "infer_examples_per_s")


@dataclass
class Planned:
    """One configuration: a recipe file plus overrides, resolved."""

    name: str
    source: Path
    overrides: list[str]
    recipe: Recipe
    status: str = "pending"  # reused | trained | failed
    folder: bool = False  # a finished run folder named on the command line, not a recipe
    wall_seconds: float | None = None
    log: Path | None = None
    metrics: dict = field(default_factory=dict)


def is_run_folder(path: Path) -> bool:
    """A run folder, finished or not: status.json is the first file a run writes."""
    return path.is_dir() and (path / "status.json").is_file()


def expand_recipes(paths: Sequence[str | Path]) -> list[Path]:
    """Recipe files and run folders; a folder of recipes stands for its *.yaml files (sorted), a folder of
    run folders for its finished ones (sorted; incomplete .NAME.incomplete folders are not runs yet)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if is_run_folder(p) or p.is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(p.glob("*.yaml")) or sorted(
                r
                for r in p.iterdir()
                if is_run_folder(r) and not r.name.startswith(".") and RunDir(r).is_finished()
            )
            if not found:
                raise RecipeError(f"{p}: folder holds no *.yaml recipes and no finished run folders")
            out += found
        else:
            raise RecipeError(f"{p}: recipe file or run folder not found")
    return out


def run_folder(path: Path, grid: Sequence[str]) -> Planned:
    """A finished run folder as a leaderboard row (its own config.yaml and metrics.json)."""
    if grid:
        raise RecipeError(f"{path}: --grid varies recipes; a run folder is one finished run")
    if not RunDir(path).is_finished():
        raise RecipeError(f"{path}: not a finished run (status.json does not say complete); nothing to show")
    recipe = load_recipe(path / "config.yaml", [f"output={path.as_posix()}"])
    return Planned(run_name(path.name), path, [], recipe, status="reused", folder=True)


def expand_grid(grid: Sequence[str]) -> list[list[str]]:
    """`["method.type=freeze,lora", "train.lr=1e-4,1e-3"]` -> every combination as a list of overrides."""
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise RecipeError(
                f"--grid {item!r}: expected dotted.key=value1,value2 (e.g. method.type=freeze,lora)"
            )
        axes.append([f"{key.strip()}={v.strip()}" for v in values.split(",") if v.strip()])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def plan(recipes: Sequence[str | Path], grid: Sequence[str], output: Path) -> list[Planned]:
    """Resolve each (recipe, grid point) into a recipe writing to OUTPUT/runs/NAME; all errors up front."""
    planned, problems = [], []
    for path in expand_recipes(recipes):
        if is_run_folder(path):
            try:
                planned.append(run_folder(path, grid))
            except RecipeError as exc:
                problems.append(str(exc))
            continue
        for combo in expand_grid(grid):
            suffix = "-".join(o.partition("=")[2] for o in combo)
            name = run_name(f"{path.stem}-{suffix}" if suffix else path.stem)
            overrides = [*combo, f"output={(output / 'runs' / name).as_posix()}"]
            try:
                planned.append(Planned(name, path, overrides, load_recipe(path, overrides)))
            except RecipeError as exc:
                problems.append(f"{name}: {exc}")
    if problems:
        raise RecipeError("\n".join(problems))
    names = [p.name for p in planned]
    if len(set(names)) != len(names):
        same = sorted({n for n in names if names.count(n) > 1})
        sources = sorted({str(p.source) for p in planned if p.name in same})
        raise RecipeError(
            f"two configurations share a run name {same} (from {', '.join(sources)}): rename a recipe file "
            "or make the --grid values differ in letters, digits, '.', '_' or '-'"
        )
    return planned


def run_name(text: str) -> str:
    """A folder name from a recipe name and grid values: anything but letters, digits, '.', '_', '-' becomes
    '_', so a value such as 'a/b' or '../x' can never make a path outside OUTPUT/runs."""
    name = re.sub(r"[^\w.\-]", "_", text).strip(".") or "run"
    return name


def _comparable(config: dict, wanted: dict) -> dict:
    """Stages fill in task.labels when the recipe leaves it empty; that alone is not a different run."""
    task = dict(config.get("task") or {})
    if (wanted.get("task") or {}).get("labels") is None:
        task["labels"] = None
    return config | {"task": task}


def finished_run(recipe: Recipe) -> bool:
    """True when recipe.output holds a finished run of exactly this recipe."""
    run = RunDir(recipe.output)
    if not run.is_finished() or not (run / "config.yaml").is_file():
        return False
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    wanted = recipe.model_dump(mode="json")
    return _comparable(saved, wanted) == wanted


def run_in_subprocess(recipe_file: Path, log_file: Path) -> int:
    """`python -m lmadapt train RECIPE` in a fresh process (its own peak RSS), output into log_file."""
    with open(log_file, "w", encoding="utf-8") as log:
        return subprocess.run(
            [sys.executable, "-m", "lmadapt", "train", str(recipe_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode


def run_compare(
    recipes: Sequence[str | Path],
    grid: Sequence[str] = (),
    output: str | Path = "runs/compare",
    metric: str | None = None,
    runner: Callable[[Path, Path], int] | None = None,
) -> Path:
    """Run (or reuse) every configuration, then write the leaderboard; returns leaderboard.md's path."""
    from rich.console import Console
    from tqdm.auto import tqdm

    output = Path(output)
    runner = runner or run_in_subprocess
    planned = plan(recipes, grid, output)
    (output / "recipes").mkdir(parents=True, exist_ok=True)
    (output / "logs").mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)

    def say(message: str) -> None:  # a rich line above the bar (tqdm clears and redraws it)
        with tqdm.external_write_mode(file=sys.stderr):
            console.print(message)

    with tqdm(total=len(planned), desc="compare", unit="run", file=sys.stderr) as progress:
        for item in planned:
            item.log = output / "logs" / f"{item.name}.log"
            if item.folder:
                say(f"[green]shown[/] {item.name} ({item.source})")
            elif finished_run(item.recipe):
                item.status = "reused"
                say(f"[green]reused[/] {item.name} ({item.recipe.output})")
            else:
                progress.set_description(f"running {item.name}")
                recipe_file = output / "recipes" / f"{item.name}.yaml"
                write_text(recipe_file, recipe_to_yaml(item.recipe))
                start = time.perf_counter()
                code = runner(recipe_file, item.log)
                item.wall_seconds = round(time.perf_counter() - start, 1)
                ok = code == 0 and RunDir(item.recipe.output).is_finished()
                item.status = "trained" if ok else "failed"
                if ok:
                    say(f"[green]done[/] {item.name} in {item.wall_seconds}s")
                else:
                    tail = "\n".join(
                        item.log.read_text(encoding="utf-8", errors="replace").splitlines()[-12:]
                    )
                    say(f"[red]failed[/] {item.name} (exit {code}); log {item.log}:\n{tail}")
            if item.status != "failed":
                item.metrics = RunDir(item.recipe.output).read_metrics()
            progress.update(1)
        progress.set_description("compare")
    return write_leaderboard(planned, output, metric)


# ---------------------------------------------------------------------------------------------- leaderboard
def _method_label(recipe: Recipe) -> str:
    if recipe.stage == "prompt":
        mode = recipe.prompt.mode if recipe.prompt else "zero_shot"
        return f"prompt:{mode}"
    return recipe.method.type


def _split_metrics(metrics: dict) -> tuple[str | None, dict]:
    final = metrics.get("final") or {}
    for split in ("test", "eval"):
        if final.get(split):
            return split, final[split]
    return None, {}


def leaderboard_rows(planned: Sequence[Planned]) -> tuple[list[dict], list[str]]:
    """One row per configuration and the metric columns (preferred metrics first)."""
    rows, names = [], []
    for item in planned:
        split, scores = _split_metrics(item.metrics)
        cost = item.metrics.get("cost") or {}
        names += [k for k in scores if k not in names]
        rows.append(
            {
                "name": item.name,
                # tfidf trains its own features and loads no model, whatever the shared recipe names
                "model": "-" if item.recipe.method.type == "tfidf" else item.recipe.model.name,
                "method": _method_label(item.recipe),
                "status": item.status,
                "split": split,
                **scores,
                **{k: cost.get(k) for k in COST_COLUMNS},
                "run": item.recipe.output,
            }
        )
    metric_cols = [m for m in PREFERRED_METRICS if m in names] + [
        m for m in names if m not in PREFERRED_METRICS
    ]
    return rows, metric_cols


def _fmt(value, key: str) -> str:
    if value is None:
        return "-"
    if key == "trainable_params":
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1.0 and key not in COST_COLUMNS else f"{value:,.1f}"
    return str(value)


def write_leaderboard(planned: Sequence[Planned], output: Path, metric: str | None = None) -> Path:
    """leaderboard.md / .csv / .json / .png in OUTPUT, rows sorted by `metric` (best first)."""
    rows, metric_cols = leaderboard_rows(planned)
    primary = metric or next(
        (m for m in PRIMARY_ORDER if m in metric_cols), metric_cols[0] if metric_cols else None
    )
    if metric and metric not in metric_cols:
        raise RecipeError(f"--metric {metric!r}: the runs report {metric_cols}")
    rows.sort(key=lambda r: (r.get(primary) is None, -(r.get(primary) or 0.0)))
    shown = [m for m in metric_cols if m in PREFERRED_METRICS][:3] or metric_cols[:3]  # all in csv/json
    head = ["name", "model", "method", *shown, *COST_COLUMNS, "status"]
    titles = {
        "trainable_params": "trainable params",
        "train_seconds": "train s",
        "peak_rss_mb": "peak RSS MB",
        "infer_examples_per_s": "infer ex/s",
    }
    lines = [
        f"| {' | '.join(titles.get(h, h) for h in head)} |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    lines += [f"| {' | '.join(_fmt(r.get(h), h) for h in head)} |" for r in rows]
    splits = sorted({r["split"] for r in rows if r["split"]})
    note = f"Metrics on the {' / '.join(splits)} split; sorted by {primary}." if primary else ""
    write_text(output / "leaderboard.md", "\n".join(lines) + "\n\n" + note + "\n")

    keys = ["name", "model", "method", "status", "split", *metric_cols, *COST_COLUMNS, "run"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(output / "leaderboard.csv", buffer.getvalue())
    write_json(output / "leaderboard.json", {"metric": primary, "metrics": metric_cols, "rows": rows})
    if primary:
        plot_quality_vs_time(rows, primary, output / "leaderboard.png")
    return output / "leaderboard.md"


def plot_quality_vs_time(rows: Sequence[dict], metric: str, path: Path, floor: float = 0.1) -> None:
    """Scatter of `metric` against train seconds on a log axis; runs without training sit at `floor`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .utils.io import atomic_path

    points = [r for r in rows if r.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.set_xscale("log")
    xy = [(max(r.get("train_seconds") or 0.0, floor), r[metric]) for r in points]
    for r, (x, y) in zip(points, xy, strict=True):
        prompt = r["method"].startswith("prompt:")
        ax.scatter(
            [x], [y], marker="^" if prompt else "o", s=60, color="tab:orange" if prompt else "tab:blue"
        )
    ax.margins(x=0.12, y=0.1)  # room for the labels of the outermost points
    ax.set_xlabel(f"train time, seconds (log; no training = {floor} s)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against train time (orange triangles: prompting, no training)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    _label_points(ax, [r["name"] for r in points], xy)  # after the layout: needs the final axes
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _label_points(ax, names: Sequence[str], xy: Sequence[tuple[float, float]], size: int = 8) -> None:
    """Name each point right or left of it, on the nearest line that overprints no other label or marker.

    Runs with close train times and scores (lora and full, say) otherwise print their names on top of each
    other. Positions are compared in points (1/72 inch), after the axis limits are final.
    """
    ax.autoscale_view()  # limits first: the data -> display transform depends on them
    to_points = 72.0 / ax.figure.dpi
    where = [tuple(v * to_points for v in ax.transData.transform(p)) for p in xy]
    frame = ax.get_window_extent()
    low, high = frame.y0 * to_points, frame.y1 * to_points
    # Boxes already taken (left, bottom, width, height): every marker, then each label once placed.
    markers = [(px - 5, py - 5, 10.0, 10.0) for px, py in where]
    labels: list[tuple[float, float, float, float]] = []
    for i in sorted(range(len(xy)), key=lambda i: (-xy[i][1], xy[i][0])):  # top to bottom
        px, py = where[i]
        width = 0.6 * size * len(names[i])
        others = [m for j, m in enumerate(markers) if j != i] + labels
        lines = [0] + [k for n in range(1, len(others) + 1) for k in (-n, n)]  # 0, down 1, up 1, ...
        for line, right in ((line, right) for line in lines for right in (True, False)):
            box = (px + 5 if right else px - 5 - width, py + 4 + line * (size + 2), width, float(size))
            inside = low <= box[1] and box[1] + box[3] <= high
            if inside and not any(_overlap(box, other) for other in others):
                break
        labels.append(box)
        ax.annotate(
            names[i],
            xy[i],
            textcoords="offset points",
            xytext=(5 if right else -5, box[1] - py),
            ha="left" if right else "right",
            fontsize=size,
        )


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two (left, bottom, width, height) boxes intersect."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
