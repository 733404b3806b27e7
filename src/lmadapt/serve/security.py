"""Secure by default: loopback unless a key is set, the key checked in constant time, caps on what a request
may ask for, answered with OpenAI's error shape.

- `resolve_key`: --api-key, else --api-key-file (first line), else $LMADAPT_API_KEY; None when none is set.
- `check_bind`: any host but a loopback address needs a key (ServeError otherwise, before anything loads).
- `KeyCheck`: the dependency every inference and /api route carries (`Authorization: Bearer KEY`).
- `BodyLimit`: an ASGI middleware that answers 413 before the app reads more than the cap.
- `Slots`: at most N requests in flight; the next one gets 429 at once (not a queue that grows).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
from pathlib import Path

from starlette.requests import Request

from ..errors import LmadaptError
from .openai_schema import error_body

__all__ = ["ServeError", "resolve_key", "check_bind", "KeyCheck", "BodyLimit", "Slots", "ApiError"]

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
        return key
    return os.environ.get(KEY_ENV) or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
