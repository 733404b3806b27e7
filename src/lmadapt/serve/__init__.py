"""`lmadapt serve`: an OpenAI-compatible server (and web UI) for base models, exports and sft run folders."""

from __future__ import annotations

from pathlib import Path

from .security import ServeError, check_bind, check_cors, check_port, resolve_key

__all__ = ["serve", "ServeError"]


def serve(
    specs: list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    api_key_file: str | Path | None = None,
    cors_origins: list[str] | None = None,
    allowed_hosts: list[str] | None = None,
    runs_root: str | Path | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    threads: int | None = None,
    **caps,
) -> None:
    """Check the bind and key first (before any model loads), load the models, run uvicorn until SIGINT/TERM.

    Shutdown is graceful: new connections stop, in-flight requests get `graceful_s` seconds to finish, then
    what still streams is cancelled (its rows leave the batch) and the decode thread stops."""
    key = resolve_key(api_key, api_key_file)
    check_bind(host, key)  # before anything heavy is imported or loaded
    check_cors(cors_origins or (), key)
    for name, value in caps.items():
        if value is not None and value <= 0:
            raise ServeError(f"--{name.replace('_', '-')} {value}: must be above 0")
    check_port(host, port)
    import torch
    import uvicorn

    from ..infer.loading import inference_dtype
    from .app import ServeOptions, create_app
    from .models import load_served

    if runs_root is not None and not Path(runs_root).is_dir():
        raise ServeError(f"--runs-root {runs_root}: no such folder")
    if not specs:
        raise ServeError("name at least one model or run folder to serve")
    if threads:
        torch.set_num_threads(threads)
    graceful = caps.pop("graceful_s", 10)
    served = load_served(specs, inference_dtype(dtype), trust_remote_code)
    options = ServeOptions(
        api_key=key, cors_origins=tuple(cors_origins or ()), allowed_hosts=tuple(allowed_hosts or ()),
        runs_root=Path(runs_root) if runs_root else None, **caps,
    )  # fmt: skip
    app = create_app(served, options)
    names = ", ".join(served)
    print(
        f"serving {names} on http://{host}:{port} (key {'required' if key else 'off: loopback only'})",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=graceful)
