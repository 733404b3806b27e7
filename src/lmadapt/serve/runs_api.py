"""/api routes for the web UI: run folders and compare leaderboards under --runs-root, and predictions.

Only files under the root are served, named by their path relative to it; the resolved path (symlinks
followed) must still be under the root and have a known suffix, else 404. Without --runs-root these routes
answer 404: nothing on disk is reachable.
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


def inside(root: Path, rel: str) -> Path:
    """`root/rel` when it is a file under `root` with a served suffix; ApiError 404 otherwise."""
    if not rel or "\x00" in rel or Path(rel).is_absolute():
        raise ApiError(404, "no such file under the runs root", code="not_found")
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file() or path.suffix.lower() not in SERVED_SUFFIXES:
        raise ApiError(404, "no such file under the runs root", code="not_found")
    return path


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


def _read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def list_runs(root: Path) -> dict:
    """Every complete run folder and every leaderboard under `root` (paths relative to it)."""
    import yaml

    runs, boards = [], []
    for folder in _folders(root):
        rel = folder.relative_to(root).as_posix()
        if (folder / "leaderboard.json").is_file():
            png = folder / "leaderboard.png"
            boards.append({"path": rel, "plot": f"{rel}/leaderboard.png" if png.is_file() else None,
                           "board": _read_json(folder / "leaderboard.json")})  # fmt: skip
        status = _read_json(folder / "status.json")
        if not (folder / "config.yaml").is_file() or not isinstance(status, dict):
            continue
        try:
            config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            config = {}
        metrics = _read_json(folder / "metrics.json") or {}
        plots = sorted(f"{rel}/plots/{p.name}" for p in (folder / "plots").glob("*.png")) if rel else []
        method = config.get("method") or {}
        runs.append({
            "path": rel, "status": status.get("status"), "stage": config.get("stage"),
            "model": (config.get("model") or {}).get("name") if isinstance(config.get("model"), dict)
            else config.get("model"),
            "method": method.get("type") if isinstance(method, dict) else None,
            "final": metrics.get("final", {}), "history": metrics.get("history", [])[-200:],
            "recipe": f"{rel}/config.yaml", "plots": plots,
        })  # fmt: skip
    return {"runs": runs, "leaderboards": boards}


def add_runs_routes(app: FastAPI, key, runs_root: Path | None) -> None:
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
        return await run_in_threadpool(_predict, predictors, run_dir, data, suffix, output)


def _predict(cache: dict, run_dir: Path, data: bytes, suffix: str, output: str) -> Response:
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
            preds = predict(records)
            rows = [{"id": task.record_id(r, i), "prediction": p}
                    for i, (r, p) in enumerate(zip(records, preds, strict=True))]  # fmt: skip
            write_rows(dest, rows)
        except LmadaptError as exc:
            raise ApiError(400, str(exc).replace(tmp, "upload")) from None
        media = "text/csv" if output == "csv" else "application/jsonl"
        headers = {"Content-Disposition": f'attachment; filename="predictions.{output}"'}
        return Response(dest.read_bytes(), media_type=media, headers=headers)
