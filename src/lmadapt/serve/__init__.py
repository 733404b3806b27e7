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
    what still streams is cancelled (its rows leave the batch) and the decode loop stops. The main thread
    decodes (where the models were loaded: see infer/scheduler.py) and uvicorn runs in a thread beside it, so
    the signals are caught here and handed to uvicorn, as its own handler would (a second Ctrl-C forces)."""
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
    from ..infer.scheduler import Scheduler
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
    scheduler = Scheduler(options.max_batch, start=False)
    app = create_app(served, options, scheduler)
    names = ", ".join(served)
    print(
        f"serving {names} on http://{host}:{port} (key {'required' if key else 'off: loopback only'})",
        flush=True,
    )
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=graceful
    )
    _run_beside(uvicorn.Server(config), scheduler, f"{host}:{port}")


def _run_beside(server, scheduler, where: str) -> None:
    """uvicorn in a thread, the decode loop on this (main) thread, until a signal or a failed start."""
    import signal
    import threading

    caught: list[int] = []

    def on_signal(sig, frame):
        caught.append(sig)
        server.handle_exit(sig, frame)  # first: graceful; a second SIGINT: force

    def http():
        try:
            server.run()
        finally:  # stopped, or never started (the port taken since check_port): end the decode loop too
            scheduler.close(timeout=0)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=http, name="lmadapt-http", daemon=True)
    thread.start()
    try:
        scheduler.run()
        thread.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise ServeError(f"the HTTP server did not start on {where} (see the message above)")
    for sig in caught[:1]:  # end as the signal would have ended us (exit -15 for SIGTERM), as uvicorn does
        signal.raise_signal(sig)
