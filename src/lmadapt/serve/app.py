"""The FastAPI app: OpenAI-compatible routes over the continuous-batching scheduler, /health, the web UI.

    app = create_app(served, ServeOptions(api_key="..."))      # served: load_served(...)

Every /v1 and /api route checks the key, and `Guard` (security.py) checks Host, Origin and content type before
anything is read. Work is capped in the model's own units before any is done: rows (prompts x n), prompt
characters (before tokenizing, which runs off the event loop), new tokens, body bytes; answered 400/413/429
in OpenAI's error shape. Every request has a generation deadline, and a stream whose client stops reading
is cut after `write_timeout` seconds; a client that goes away (or a server that shuts down) cancels its
rows, which leave the batch at the next step, and gives back its slot.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..infer.scheduler import Scheduler
from .openai_schema import UNSUPPORTED, ChatRequest, CompletionRequest, error_body
from .security import ApiError, BodyLimit, Guard, KeyCheck, Slots

__all__ = ["ServeOptions", "create_app"]

UI_DIR = Path(__file__).parent / "ui"


@dataclass
class ServeOptions:
    api_key: str | None = None
    max_tokens: int = 1024  # the most new tokens one request may ask for
    max_n: int = 4
    max_concurrent: int = 64
    max_body: int = 4 * 1024 * 1024
    max_batch: int = 16
    max_rows: int | None = None  # sequences (prompts x n) one request may ask for; None: max_batch
    max_prompt_chars: int = 200_000  # characters of prompt text per request, checked before tokenizing
    max_predict_rows: int = 10_000  # records one /api/predict upload may hold
    request_timeout: float = 600.0  # seconds one request may generate for
    write_timeout: float = 30.0  # seconds a stream may wait for its client to read
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides loopback ones when no key is set
    runs_root: Path | None = None

    @property
    def row_cap(self) -> int:
        return self.max_rows or self.max_batch


def create_app(
    served: dict, options: ServeOptions | None = None, scheduler: Scheduler | None = None
) -> FastAPI:
    from contextlib import asynccontextmanager

    options = options or ServeOptions()
    scheduler = scheduler or Scheduler(options.max_batch)

    @asynccontextmanager
    async def lifespan(app):
        yield
        scheduler.close()  # after uvicorn's graceful wait: whatever still runs is cancelled

    app = FastAPI(
        title="lmadapt serve", version="1", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.served, app.state.options, app.state.scheduler = served, options, scheduler
    app.state.slots = Slots(options.max_concurrent)
    key = Depends(KeyCheck(options.api_key))
    _errors(app)
    if options.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(options.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"], allow_credentials=False,
        )  # fmt: skip
    app.add_middleware(BodyLimit, limit=options.max_body)
    app.add_middleware(  # outermost: a foreign Host or Origin is refused before the body is read
        Guard, keyed=options.api_key is not None, allowed_hosts=options.allowed_hosts,
        cors_origins=options.cors_origins,
    )  # fmt: skip

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/openapi.json", dependencies=[key], include_in_schema=False)
    def openapi() -> JSONResponse:  # behind the key when one is set
        return JSONResponse(app.openapi())

    @app.get("/v1/models", dependencies=[key])
    def models() -> dict:
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "lmadapt"} for n in served]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", dependencies=[key])
    async def chat_completions(body: ChatRequest, request: Request):
        return await _complete(app, request, body, chat=True)

    @app.post("/v1/completions", dependencies=[key])
    async def completions(body: CompletionRequest, request: Request):
        return await _complete(app, request, body, chat=False)

    from .runs_api import add_runs_routes

    add_runs_routes(app, key, options.runs_root, options.max_predict_rows)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(UI_DIR / "index.html")

    @app.get("/ui/{name}", include_in_schema=False)
    def ui_file(name: str):
        files = {p.name: p for p in UI_DIR.iterdir() if p.is_file()}  # only the shipped files, by name
        if name not in files:
            raise ApiError(404, f"no UI file {name!r}", code="not_found")
        return FileResponse(files[name])

    _schema_names_the_models(app, list(served), options)
    return app


def _schema_names_the_models(app: FastAPI, names: list[str], options: ServeOptions) -> None:
    """/openapi.json lists the served names as `model`'s enum and the caps as bounds (clients and fuzzers
    see what this server takes)."""
    plain = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = plain()
            for name in ("ChatRequest", "CompletionRequest"):
                props = schema.get("components", {}).get("schemas", {}).get(name, {}).get("properties", {})
                if "model" in props:
                    props["model"]["enum"] = names
                for field in ("max_tokens", "max_completion_tokens"):
                    for option in props.get(field, {}).get("anyOf", []):
                        if option.get("type") == "integer":
                            option["maximum"] = options.max_tokens
                for option in [props.get("n", {})]:
                    option["maximum"] = options.max_n
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
        else:
            message = f"{param or 'body'}: {first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), code=exc.status_code), status_code=exc.status_code)


# ---------------------------------------------------------------- completions
def _check(app: FastAPI, body, chat: bool):
    """The served model and the decoding for `body`, or ApiError 400/404."""
    options = app.state.options
    for field, off in UNSUPPORTED.items():
        value = getattr(body, field, None)
        if value not in off:
            raise ApiError(400, f"{field} is not supported by this server", param=field, code="unsupported")
    served = app.state.served.get(body.model)
    if served is None:
        raise ApiError(404, f"the model {body.model!r} does not exist; see /v1/models", param="model",
                       code="model_not_found")  # fmt: skip
    if body.n > options.max_n:
        raise ApiError(400, f"n: at most {options.max_n} choices per request", param="n")
    wanted = (getattr(body, "max_completion_tokens", None) if chat else None) or body.max_tokens
    if wanted is not None and wanted > options.max_tokens:
        raise ApiError(400, f"max_tokens: at most {options.max_tokens} on this server", param="max_tokens")
    stop = body.stop_list()
    if len(stop) > 4:
        raise ApiError(400, "stop: at most 4 stop strings", param="stop")
    if not chat and isinstance(body.prompt, list) and not body.prompt:
        raise ApiError(400, "prompt: an empty list", param="prompt")
    texts = [m.content for m in body.messages] if chat else _prompt_list(body)
    rows = (1 if chat else len(texts)) * body.n
    if rows > options.row_cap:
        raise ApiError(
            400, f"this request asks for {rows} sequences (prompts x n); this server takes at most "
            f"{options.row_cap} per request", param="n" if chat else "prompt", code="too_many_sequences",
        )  # fmt: skip
    chars = sum(len(t) for t in texts)
    if chars > options.max_prompt_chars:
        raise ApiError(
            400, f"the prompt has {chars} characters; this server takes at most {options.max_prompt_chars}",
            param="messages" if chat else "prompt", code="context_length_exceeded",
        )  # fmt: skip
    return served, wanted, stop


def _prompt_list(body) -> list[str]:
    return body.prompt if isinstance(body.prompt, list) else [body.prompt]


def _prompts(served, body, chat: bool) -> list[list[int]]:
    engine = served.engine
    if chat:
        messages = [{"role": m.chat_role(), "content": m.content} for m in body.messages]
        try:
            return [engine.encode(messages)]
        except Exception as exc:  # a template that rejects this conversation (e.g. roles out of order)
            raise ApiError(
                400, f"messages: the chat template cannot render them: {exc}", param="messages"
            ) from None
    return [engine.encode(p) for p in _prompt_list(body)]


def _sequences(served, body, prompt_ids: list[list[int]], wanted, stop, cap: int):
    engine = served.engine
    limit = engine.context_length
    seqs = []
    for p, ids in enumerate(prompt_ids):
        room = limit - len(ids)
        if room < 1 or (wanted is not None and wanted > room):
            raise ApiError(
                400, f"this model's maximum context length is {limit} tokens; the prompt has {len(ids)} and "
                f"max_tokens asks for {wanted or 1} more", param="max_tokens", code="context_length_exceeded",
            )  # fmt: skip
        budget = min(wanted or cap, room)
        for i in range(body.n):
            seed = None if body.seed is None else body.seed + p * body.n + i
            decoding = engine.decoding(
                max_new_tokens=budget, do_sample=body.temperature > 0, temperature=body.temperature or 1.0,
                top_p=body.top_p, top_k=body.top_k, repetition_penalty=body.repetition_penalty, stop=stop,
                seed=seed,
            )  # fmt: skip
            seqs.append(engine.sequence(ids, decoding))
    return seqs


async def _complete(app: FastAPI, request: Request, body, chat: bool):
    served, wanted, stop = _check(app, body, chat)
    options = app.state.options
    app.state.slots.take()  # before tokenizing: that is work too
    try:
        prompt_ids = await run_in_threadpool(_prompts, served, body, chat)  # off the event loop
        seqs = _sequences(served, body, prompt_ids, wanted, stop, options.max_tokens)
        run = _Run(app.state.scheduler, served, seqs, options.request_timeout)
    except BaseException:
        app.state.slots.give()
        raise
    meta = {
        "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
        "created": int(time.time()),
        "model": body.model,
    }
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        release = _once(run.cancel, app.state.slots.give)  # the generator's end, or the response's
        stream = _stream(run, request, meta, chat, include_usage, body.n, release)
        headers = {"Cache-Control": "no-cache"}
        return _TimedStream(
            stream,
            options.write_timeout,
            run.deadline,
            release,
            media_type="text/event-stream",
            headers=headers,
        )
    try:
        await run.wait(request)
    finally:
        run.cancel()
        app.state.slots.give()
    if run.timed_out:
        raise ApiError(504, run.timeout_message(), type="server_error", code="timeout")
    if run.error is not None:
        raise ApiError(500, f"generation failed: {run.error}", type="server_error")
    choices = []
    for i, s in enumerate(seqs):
        item = {"index": i, "finish_reason": s.finish_reason, "logprobs": None}
        item |= {"message": {"role": "assistant", "content": s.text}} if chat else {"text": s.text}
        choices.append(item)
    obj = "chat.completion" if chat else "text_completion"
    return {**meta, "object": obj, "choices": choices, "usage": _usage(seqs, body.n)}


def _usage(seqs, n: int) -> dict:
    prompt = sum(
        len(seqs[k].prompt_ids) for k in range(0, len(seqs), n)
    )  # the n choices of a prompt share it
    completion = sum(len(s.new_ids) for s in seqs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Run:
    """One request's sequences on the scheduler; deltas arrive on an asyncio queue (index, text, finished)."""

    def __init__(self, scheduler: Scheduler, served, seqs, timeout: float):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.seqs, self.error = seqs, None
        self.timeout, self.deadline, self.timed_out = timeout, self.loop.time() + timeout, False
        self.index = {id(s): i for i, s in enumerate(seqs)}
        self.scheduler = scheduler
        try:
            self.job = scheduler.submit(served.target, seqs, self._delta, self._error)
        except RuntimeError as exc:  # shutting down
            raise ApiError(503, str(exc), type="server_error") from None

    def _delta(self, seq, text: str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (self.index[id(seq)], text, seq.finish_reason))

    def _error(self, exc: BaseException) -> None:
        self.error = exc
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)

    def timeout_message(self) -> str:
        return f"generation stopped at this server's deadline of {self.timeout:g} s per request"

    async def events(self, request: Request):
        """(index, text, finish_reason) until every sequence finished; stops early if the client left or the
        deadline passed (then `timed_out` is set and the rows are cancelled)."""
        left = len(self.seqs)
        while left and self.error is None:
            if self.loop.time() > self.deadline:
                self.timed_out = True
                self.cancel()
                return
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            if item is None:
                return
            if item[2] is not None:
                left -= 1
            yield item

    async def wait(self, request: Request) -> None:
        async for _ in self.events(request):
            pass

    def cancel(self) -> None:
        self.scheduler.cancel(self.job)


def _sse(obj) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def _once(*actions):
    """A callable that runs `actions` the first time it is called, and does nothing after."""
    pending = list(actions)

    def call() -> None:
        while pending:
            pending.pop(0)()

    return call


async def _stream(run: _Run, request: Request, meta: dict, chat: bool, include_usage: bool, n: int, release):
    """OpenAI's chunks: (chat) a role chunk per choice first, content deltas, a finish chunk per choice with
    its real finish_reason, the usage chunk when asked, then `data: [DONE]`. One id for every chunk."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    extra = {"usage": None} if include_usage else {}

    def chunk(index, text=None, finish=None, role=False):
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        return _sse({**meta, "object": obj, "choices": [choice], **extra})

    try:
        if chat:
            for i in range(len(run.seqs)):
                yield chunk(i, role=True)
        async for index, text, finish in run.events(request):
            if text:
                yield chunk(index, text)
            if finish is not None:
                yield chunk(index, finish=finish if finish in ("stop", "length") else "stop")
        if run.timed_out:
            yield _sse(error_body(run.timeout_message(), type="server_error", code="timeout"))
        elif run.error is not None:
            yield _sse(error_body(f"generation failed: {run.error}", type="server_error"))
        elif include_usage:
            yield _sse({**meta, "object": obj, "choices": [], "usage": _usage(run.seqs, n)})
        yield b"data: [DONE]\n\n"
    finally:  # finished, failed, or the client went away (the generator is closed): free the rows and slot
        release()


class _TimedStream(StreamingResponse):
    """A stream whose client stops reading (its socket buffers full, so a write waits) is cut after
    `write_timeout` seconds, and no write waits past the request's deadline plus that grace: the generator
    is closed, which cancels the rows and gives back the slot."""

    def __init__(self, content, write_timeout: float, deadline: float, release, **kwargs):
        super().__init__(content, **kwargs)
        self.write_timeout, self.deadline, self.release = write_timeout, deadline, release

    async def stream_response(self, send) -> None:
        loop = asyncio.get_running_loop()

        async def timed(message) -> None:
            limit = min(self.write_timeout, self.deadline + self.write_timeout - loop.time())
            if limit <= 0:
                raise TimeoutError
            await asyncio.wait_for(send(message), limit)

        try:
            await super().stream_response(timed)
        except TimeoutError:
            pass  # the connection is closed when the app returns with the response unfinished
        finally:  # also when the generator never started (the client left at once)
            self.release()
            await self.body_iterator.aclose()
