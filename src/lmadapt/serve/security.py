"""Secure by default: loopback unless a key is set, the key checked in constant time, caps on what a request
may ask for, answered with OpenAI's error shape.

- `resolve_key`: --api-key, else --api-key-file (first line), else $LMADAPT_API_KEY; None when none is set.
- `check_bind`: any host but a loopback address needs a key (ServeError otherwise, before anything loads).
- `KeyCheck`: the dependency every inference and /api route carries (`Authorization: Bearer KEY`).
- `Guard`: the browser is a client too. Without a key, a request whose Host is not a loopback name (or one
  allowed with --allowed-host) is refused 403: a page rebound to 127.0.0.1 by DNS (the Ollama
  CVE-2024-28224 class) sends its own name as Host. On /v1, /api and /openapi.json a foreign Origin is
  refused 403 unless CORS allows it, key or no key. POST bodies must declare JSON (/v1) or a content type
  a browser cannot send cross-site without a preflight (/api/predict): no "simple" cross-site request does
  work. Every answer carries a Content-Security-Policy (no inline script), nosniff, no referrer, no framing.
- `BodyLimit`: an ASGI middleware that answers 413 before the app reads more than the cap.
- `Slots`: at most N requests in flight; the next one gets 429 with Retry-After at once (the bounded queue).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
import stat
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from starlette.requests import Request

from ..errors import LmadaptError
from .openai_schema import error_body

__all__ = [
    "ServeError", "resolve_key", "check_bind", "check_port", "check_cors", "KeyCheck", "Guard", "BodyLimit",
    "Slots", "ApiError", "is_loopback", "host_name",
]  # fmt: skip

KEY_ENV = "LMADAPT_API_KEY"


class ServeError(LmadaptError):
    """`lmadapt serve` cannot start as asked (exit code 2)."""


class ApiError(Exception):
    """An HTTP error answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status, self.body = status, error_body(message, type, param, code)
        self.headers: dict[str, str] = {}


def resolve_key(api_key: str | None, api_key_file: str | Path | None) -> str | None:
    if api_key:
        return api_key
    if api_key_file:
        path = Path(api_key_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ServeError(f"--api-key-file {path}: cannot read it ({exc.strerror})") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise ServeError(f"--api-key-file {path}: line 1 is empty; put the key there")
        if os.name == "posix" and path.stat().st_mode & (stat.S_IROTH | stat.S_IWOTH):
            print(
                f"warning: --api-key-file {path} can be read by every user of this machine; "
                f"`chmod 600 {path}`", file=sys.stderr, flush=True,
            )  # fmt: skip
        return key
    return os.environ.get(KEY_ENV) or None


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (a bracketed IPv6 literal too)."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without the port: 'localhost:8000' -> 'localhost', '[::1]:80' -> '[::1]'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def check_port(host: str, port: int) -> None:
    """A port that cannot be bound is a clear error before any model loads (not a traceback after)."""
    if not 1 <= port <= 65535:
        raise ServeError(f"--port {port}: a TCP port is 1-65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServeError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None


def check_cors(origins: list[str] | tuple[str, ...], key: str | None) -> None:
    """`--cors-origin '*'` lets every web page the user visits call the server: only with a key."""
    if "*" in origins and not key:
        raise ServeError(
            "--cors-origin '*' without an API key would let any web page you visit use this server; "
            "name the origins (--cors-origin http://localhost:3000) or set a key"
        )


def check_bind(host: str, key: str | None) -> None:
    if not is_loopback(host) and not key:
        raise ServeError(
            f"--host {host}: serving beyond this machine needs an API key "
            f"(--api-key, --api-key-file or ${KEY_ENV}); without one only 127.0.0.1 is allowed"
        )
    if key is not None and len(key) < 8:
        raise ServeError("the API key is shorter than 8 characters; use a longer one")


class KeyCheck:
    """FastAPI dependency: passes when no key is configured (loopback only), else needs the right bearer."""

    def __init__(self, key: str | None):
        self.key = key.encode("utf-8") if key else None

    def __call__(self, request: Request) -> None:
        if self.key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")
        if not hmac.compare_digest(given.strip().encode("utf-8"), self.key):
            raise ApiError(401, "incorrect API key provided", code="invalid_api_key")


SAFE_CONTENT_TYPES = {
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
}  # CORS-safelisted
GUARDED = ("/v1/", "/api/", "/openapi.json")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
     b"img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
     b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]  # fmt: skip


class Guard:
    """Pure ASGI middleware, outermost: Host, Origin and content-type checks before anything is read; the
    security headers on every answer (see the module docstring)."""

    def __init__(self, app, keyed: bool, allowed_hosts=(), cors_origins=()):
        self.app, self.keyed = app, keyed
        self.allowed_hosts = {h.lower().rstrip(".") for h in allowed_hosts}
        self.cors = set(cors_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        refusal = self.refusal(scope)
        if refusal is not None:
            status, message, code = refusal
            return await _json(with_headers, status, message, code)
        return await self.app(scope, receive, with_headers)

    def refusal(self, scope) -> tuple[int, str, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        if not self.keyed and not (is_loopback(host_name(host)) or host_name(host) in self.allowed_hosts):
            return 403, (
                f"Host {host!r} is not this server's name: without an API key only loopback names are "
                "served (start the server with --allowed-host NAME to add one)"
            ), "forbidden_host"  # fmt: skip
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if not path.startswith(GUARDED):
            return None
        origin = headers.get("origin")
        same = origin is not None and origin.lower() in (f"http://{host}".lower(), f"https://{host}".lower())
        if origin is not None and not same and origin not in self.cors and "*" not in self.cors:
            return 403, f"Origin {origin!r} may not call this server (see --cors-origin)", "forbidden_origin"
        if method == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if path.startswith("/v1/") and kind != "application/json":
                return 415, "send the body as Content-Type: application/json", "unsupported_media_type"
            if path.startswith("/api/") and (not kind or kind in SAFE_CONTENT_TYPES):
                return 415, (
                    "send the file as Content-Type: application/octet-stream (a type a browser cannot send "
                    "cross-site without asking first)"
                ), "unsupported_media_type"  # fmt: skip
        return None


class BodyLimit:
    """Pure ASGI middleware: a request body over `limit` bytes gets 413 (by Content-Length, or while read)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _json(send, 413, f"request body over {self.limit} bytes", "request_too_large")
        chunks, size, more = [], 0, True
        while more:  # read (at most limit + one chunk) before the app sees anything
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await _json(send, 413, f"request body over {self.limit} bytes", "request_too_large")
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        return await self.app(scope, replay, send)


async def _json(send, status: int, message: str, code: str) -> None:
    import json

    payload = json.dumps(error_body(message, "invalid_request_error", None, code)).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class Slots:
    """At most `limit` requests at a time: `take()` raises ApiError 429 when all are taken."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.used >= self.limit:
                error = ApiError(
                    429, f"the server is busy: {self.limit} requests in flight; retry shortly",
                    type="rate_limit_error", code="too_many_requests",
                )  # fmt: skip
                error.headers["Retry-After"] = "1"
                raise error
            self.used += 1

    def give(self) -> None:
        with self._lock:
            self.used = max(0, self.used - 1)

    @contextmanager
    def held(self):
        """`with slots.held():` one slot for the block (ApiError 429 when none is free)."""
        self.take()
        try:
            yield
        finally:
            self.give()
