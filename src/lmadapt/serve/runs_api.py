"""/api routes for the web UI: run folders and compare leaderboards under --runs-root, and predictions.

Only files under the root are served or read, named by their path relative to it; the resolved path
(symlinks followed) must still be under the root, be a regular file of a known suffix and under a size cap,
else 404 (served) or left out (read for the listing). A malformed run folder (a config.yaml that is not a
mapping, metrics that are not JSON objects, a file that points outside the root) is skipped and named in the
listing's `skipped`, never a 500 for the whole list. Without --runs-root these routes answer 404: nothing on
disk is reachable. /api/predict holds one of the server's request slots while it runs, and caps the records
an upload may hold.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, Response

from .security import ApiError

__all__ = ["add_runs_routes", "list_runs", "inside"]

SERVED_SUFFIXES = {".png", ".json", ".yaml", ".md", ".csv", ".txt", ".jsonl"}
MAX_DEPTH = 4  # how deep under the root run folders are looked for (compare puts them at OUTPUT/runs/NAME)
MAX_FILE = 20 * 1024 * 1024
MAX_META = 4 * 1024 * 1024  # config, status, metrics and leaderboard files read for the listing


def inside(root: Path, rel: str) -> Path:
    """`root/rel` when it is a file under `root` with a served suffix; ApiError 404 otherwise."""
    path = _regular(root, root, rel) if rel and "\x00" not in rel and not Path(rel).is_absolute() else None
    if path is None or path.suffix.lower() not in SERVED_SUFFIXES:
        raise ApiError(404, "no such file under the runs root", code="not_found")
    return path


def _regular(root: Path, folder: Path, name: str) -> Path | None:
    """`folder/name` resolved (symlinks followed) when it is a regular file still under `root`, else None."""
    import stat

    try:
        path = (folder / name).resolve()
        return path if path.is_relative_to(root) and stat.S_ISREG(path.stat().st_mode) else None
    except (OSError, ValueError):
        return None


class _Malformed(Exception):
    """A run folder or leaderboard the listing leaves out (the reason is shown)."""


def _meta(root: Path, folder: Path, name: str, kind: type = dict, required: bool = False):
    """The parsed JSON/YAML file `name` of `folder`, if it is a regular file under the root, under the size
    cap, and of type `kind`; None when absent; _Malformed otherwise."""
    import json

    import yaml

    if not (folder / name).exists() and not (folder / name).is_symlink():
        if required:
            raise _Malformed(f"no {name}")
        return None
    path = _regular(root, folder, name)
    if path is None:
        raise _Malformed(f"{name} is not a regular file under the runs root")
    if path.stat().st_size > MAX_META:
        raise _Malformed(f"{name} is over {MAX_META // (1024 * 1024)} MiB")
    try:
        text = path.read_text(encoding="utf-8")
        value = yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise _Malformed(f"{name} cannot be read ({type(exc).__name__})") from None
    if not isinstance(value, kind):
        raise _Malformed(f"{name} is not a {'mapping' if kind is dict else kind.__name__}")
    return value


def _folders(root: Path):
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        yield folder
        if depth < MAX_DEPTH:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            stack += [(c, depth + 1) for c in reversed(children) if c.resolve().is_relative_to(root)]


def list_runs(root: Path) -> dict:
    """Every complete run folder and every leaderboard under `root` (paths relative to it), and the folders
    left out with the reason."""
    runs, boards, skipped = [], [], []
    for folder in _folders(root):
        rel = folder.relative_to(root).as_posix()
        try:
            board = _meta(root, folder, "leaderboard.json")
            if board is not None:
                if not isinstance(board.get("rows", []), list):
                    raise _Malformed("leaderboard.json: rows is not a list")
                plot = f"{rel}/leaderboard.png" if _regular(root, folder, "leaderboard.png") else None
                boards.append({"path": rel, "plot": plot, "board": board})
        except _Malformed as exc:
            skipped.append({"path": rel, "reason": str(exc)})
        try:
            if (folder / "config.yaml").exists() and (folder / "status.json").exists():
                runs.append(_run_entry(root, folder, rel))
        except _Malformed as exc:
            skipped.append({"path": rel, "reason": str(exc)})
    return {"runs": runs, "leaderboards": boards, "skipped": skipped}


def _run_entry(root: Path, folder: Path, rel: str) -> dict:
    status = _meta(root, folder, "status.json", required=True)
    config = _meta(root, folder, "config.yaml", required=True)
    metrics = _meta(root, folder, "metrics.json") or {}
    final, history = metrics.get("final", {}), metrics.get("history", [])
    if not isinstance(final, dict) or not isinstance(history, list):
        raise _Malformed("metrics.json: final is not a mapping or history not a list")
    plots = []
    if rel and (folder / "plots").is_dir():
        plots = sorted(f"{rel}/plots/{p.name}" for p in (folder / "plots").glob("*.png")
                       if _regular(root, p.parent, p.name))  # fmt: skip
    model, method = config.get("model"), config.get("method")
    return {
        "path": rel, "status": status.get("status"), "stage": config.get("stage"),
        "model": model.get("name") if isinstance(model, dict) else model,
        "method": method.get("type") if isinstance(method, dict) else None,
        "final": final, "history": history[-200:], "recipe": f"{rel}/config.yaml", "plots": plots,
    }  # fmt: skip


def add_runs_routes(app: FastAPI, key, runs_root: Path | None, max_predict_rows: int = 10_000) -> None:
    root = Path(runs_root).resolve() if runs_root else None

    def need_root() -> Path:
        if root is None:
            raise ApiError(404, "this server was started without --runs-root", code="not_found")
        return root

    @app.get("/api/runs", dependencies=[key])
    def runs() -> dict:
        return list_runs(need_root())

    @app.get("/api/file", dependencies=[key])
    def file(path: str = Query(..., max_length=1000)):
        found = inside(need_root(), path)
        if found.stat().st_size > MAX_FILE:
            raise ApiError(413, "file too large to serve", code="too_large")
        return FileResponse(found)

    predictors: dict = {}

    @app.post("/api/predict", dependencies=[key])
    async def predict(request: Request, run: str = Query(..., max_length=1000),
                      filename: str = Query(..., max_length=200), output: str = Query("jsonl")):  # fmt: skip
        """Body: the records file (.csv .jsonl .json .tsv); answer: the predictions file (jsonl or csv)."""
        from starlette.concurrency import run_in_threadpool

        base = need_root()
        run_dir = inside(base, f"{run}/status.json").parent
        suffix = Path(filename).suffix.lower()
        if suffix not in {".csv", ".jsonl", ".json", ".tsv"}:
            raise ApiError(400, "filename: upload a .csv, .jsonl, .json or .tsv file", param="filename")
        if output not in {"jsonl", "csv"}:
            raise ApiError(400, "output: jsonl or csv", param="output")
        data = await request.body()
        with app.state.slots.held():  # a prediction is work like a generation: it takes a slot
            return await run_in_threadpool(
                _predict, predictors, run_dir, data, suffix, output, max_predict_rows, run
            )


def _predict(
    cache: dict, run_dir: Path, data: bytes, suffix: str, output: str, max_rows: int, name: str
) -> Response:
    from ..data import load_split
    from ..errors import LmadaptError
    from ..predict import load_predictor, write_rows

    with tempfile.TemporaryDirectory(prefix="lmadapt-predict-") as tmp:
        src = Path(tmp) / f"input{suffix}"
        src.write_bytes(data)
        dest = Path(tmp) / f"predictions.{output}"
        try:
            if run_dir not in cache:
                cache.clear()  # one model in memory at a time
                cache[run_dir] = load_predictor(run_dir)
            task, predict = cache[run_dir]
            records = load_split(None, str(src), task.fields(with_gold=False))
            if not records:
                raise LmadaptError("the file has no records")
            if len(records) > max_rows:
                raise LmadaptError(
                    f"the file has {len(records)} records; this server predicts at most {max_rows}"
                )
            preds = predict(records)
            rows = [{"id": task.record_id(r, i), "prediction": p}
                    for i, (r, p) in enumerate(zip(records, preds, strict=True))]  # fmt: skip
            write_rows(dest, rows)
        except LmadaptError as exc:  # said without the server's own paths
            message = (
                str(exc).replace(str(src), "the upload").replace(tmp, "upload").replace(str(run_dir), name)
            )
            raise ApiError(400, message) from None
        media = "text/csv" if output == "csv" else "application/jsonl"
        headers = {"Content-Disposition": f'attachment; filename="predictions.{output}"'}
        return Response(dest.read_bytes(), media_type=media, headers=headers)
