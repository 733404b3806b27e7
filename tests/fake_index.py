"""Offline stand-ins for the registries: a PEP 503 file:// package index and a tiny local HTTP server."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from packaging.utils import canonicalize_name


def use_only_index(monkeypatch, url: str) -> None:
    """Make pip's configuration (which lmadapt reads) name this one index and nothing else."""
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # pip: skip every config file
    monkeypatch.setenv("PIP_INDEX_URL", url)
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)


def archive_bytes(files: dict[str, bytes], kind: str) -> bytes:
    """A zip (wheel) or gzipped tar (sdist, npm) holding `files`."""
    buf = io.BytesIO()
    if kind == "wheel":
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def publish(root: Path, filename: str, data: bytes, advertise_hash: bool = True) -> str:
    """Put one archive on the file:// simple index at `root` (PEP 503 layout); return its sha256."""
    digest = hashlib.sha256(data).hexdigest()
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / filename).write_bytes(data)
    project = canonicalize_name(filename.split("-")[0])
    page = root / "simple" / project / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    fragment = f"#sha256={digest}" if advertise_hash else ""
    links = page.read_text() if page.exists() else ""
    page.write_text(f'{links}<a href="../../files/{filename}{fragment}">{filename}</a>\n')
    return digest


Route = Callable[[http.server.BaseHTTPRequestHandler, threading.Event], None]


@contextlib.contextmanager
def local_server(routes: dict[str, Route]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering `routes` (path -> handler, else 404); yields its base URL.

    A handler that stalls should wait on the event it is given: it is set when the block ends, so no
    request outlives the test (and none waits longer than its own bound either).
    """
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            route = routes.get(self.path.split("?")[0])
            if route is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            route(self, stop)

        def log_message(self, *args):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def reply(body: bytes, content_type: str = "application/octet-stream", status: int = 200, **headers) -> Route:
    def route(handler, stop):
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(body)

    return route


def stall(after: bytes | None = None, at_most: float = 10.0) -> Route:
    """Say nothing (after=None), or send headers and `after` then nothing, until the test ends."""

    def route(handler, stop):
        if after is not None:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Content-Length", str(len(after) + 1_000_000))
            handler.end_headers()
            handler.wfile.write(after)
            handler.wfile.flush()
        stop.wait(at_most)

    return route
