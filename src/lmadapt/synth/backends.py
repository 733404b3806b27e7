"""Text generators for `lmadapt synth`: the local inference engine, any OpenAI-compatible server, a script.

All share one call: `generate(prompts, *, max_new_tokens, temperature, top_p, stop, seed) -> list[str]`,
one completion per prompt, stop strings already cut off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from ..errors import SourceError
from ..infer.engine import cut_at_stop

RETRY_STATUSES = frozenset({429, *range(500, 600)})  # rate limited, or the server failed: worth another try


class Backend(Protocol):
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str] | None = None,
        seed: int = 0,
    ) -> list[str]: ...


class LocalBackend:
    """Any causal LM through `lmadapt.infer.engine` (catalog name, local folder or run folder)."""

    def __init__(
        self, model: str, batch_size: int = 8, chat: bool = False, repetition_penalty: float = 1.0,
        dtype: str = "auto",
    ):  # fmt: skip
        from ..infer.engine import load_engine

        self.engine = load_engine(model, dtype=dtype)
        self.batch_size = batch_size
        self.chat = chat
        self.repetition_penalty = repetition_penalty

    def generate(self, prompts, *, max_new_tokens, temperature, top_p, stop=None, seed=0):
        inputs = [[{"role": "user", "content": p}] for p in prompts] if self.chat else list(prompts)
        return self.engine.generate(  # the engine stops at, and cuts off, the stop strings
            inputs,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            top_p=top_p,
            repetition_penalty=self.repetition_penalty,
            stop=list(stop) if stop else None,
            batch_size=self.batch_size,
            seed=seed,
        )


class OpenAIBackend:
    """An OpenAI-compatible HTTP endpoint (`/completions`, or `/chat/completions` when `chat`).

    Prompts are sent as concurrent requests; each retries (urllib3's `Retry`, through requests) on connection
    errors, timeouts, 429 and 5xx with exponential backoff (or the server's Retry-After), and gives up with a
    SourceError naming the URL after `max_retries` retries.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        chat: bool = False,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.chat = chat
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise SourceError(
                    f"synth backend: environment variable {api_key_env} (api_key_env) is not set"
                )

    def _payload(self, prompt: str, max_new_tokens, temperature, top_p, stop, seed) -> tuple[str, dict]:
        body = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        body["seed"] = seed
        if stop:
            body["stop"] = list(stop)[:4]  # the OpenAI API accepts at most 4 stop strings
        if self.chat or isinstance(prompt, list):  # a list is a conversation already (lmadapt generate)
            body["messages"] = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            return f"{self.base_url}/chat/completions", body
        body["prompt"] = prompt
        return f"{self.base_url}/completions", body

    def _session(self):
        """A requests session whose adapter retries: every method (completions are POSTs), 429 and any 5xx."""
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util import Retry

        retry = Retry(
            total=self.max_retries,
            backoff_factor=self.backoff_s,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,
            raise_on_status=False,  # the last reply comes back, so the error below can quote it
        )
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _post(self, url: str, body: dict) -> dict:
        import requests

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        gave_up = f"synth backend {url}: gave up after {self.max_retries + 1} attempts"
        try:
            with self._session() as session:  # one per request: sessions are not thread-safe
                resp = session.post(
                    url, data=json.dumps(body).encode("utf-8"), headers=headers, timeout=self.timeout_s
                )
        except (requests.ConnectionError, requests.Timeout) as exc:  # what is left once the retries ran out
            raise SourceError(f"{gave_up} ({type(exc).__name__}: {exc})") from None
        except requests.RequestException as exc:
            raise SourceError(f"synth backend {url}: {exc}") from None
        if resp.status_code >= 400:
            last = f"HTTP {resp.status_code}: {resp.content[:200].decode('utf-8', 'replace')}"
            if resp.status_code in RETRY_STATUSES:
                raise SourceError(f"{gave_up} ({last})")
            raise SourceError(f"synth backend {url}: {last}")
        try:
            return resp.json()
        except ValueError:
            raise SourceError(f"synth backend {url}: reply is not JSON: {resp.text[:200]}") from None

    def _one(self, prompt: str, max_new_tokens, temperature, top_p, stop, seed) -> str:
        url, body = self._payload(prompt, max_new_tokens, temperature, top_p, stop, seed)
        reply = self._post(url, body)
        try:
            choice = reply["choices"][0]
            chat = self.chat or isinstance(prompt, list)
            text = choice["message"]["content"] if chat else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise SourceError(f"synth backend {url}: unexpected reply {str(reply)[:200]}") from None
        return cut_at_stop(text or "", stop)

    def generate(self, prompts, *, max_new_tokens, temperature, top_p, stop=None, seed=0):
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [
                pool.submit(self._one, p, max_new_tokens, temperature, top_p, stop, seed + i)
                for i, p in enumerate(prompts)
            ]
            return [f.result() for f in futures]


def generate_file_via_server(
    base_url: str,
    model: str,
    input,
    output,
    *,
    api_key_env: str | None = None,
    concurrency: int = 8,
    **decoding,
) -> int:
    """`lmadapt generate --server URL`: every record of `input` through an OpenAI-compatible server (lmadapt
    serve, vLLM, llama.cpp, ...): chat records go to /chat/completions, `prompt` records to /completions; the
    records plus `output` are written as JSONL, like the in-process engine's generate_file."""
    from ..data import read_records
    from ..infer.batch import record_prompt
    from ..utils.io import write_jsonl

    records = read_records(input)
    prompts = [record_prompt(r) for r in records]
    backend = OpenAIBackend(base_url, model, api_key_env=api_key_env, concurrency=concurrency)
    outputs = backend.generate(prompts, **decoding)
    write_jsonl(output, [dict(r) | {"output": o} for r, o in zip(records, outputs, strict=True)])
    return len(outputs)


class ScriptedBackend:
    """Answers from a function of the prompt (for tests and dry runs); records every prompt it was given.

    `fail_after` makes the call that would exceed that many prompts raise, to simulate a crash.
    """

    def __init__(self, respond: Callable[[str], str], fail_after: int | None = None):
        self.respond = respond
        self.fail_after = fail_after
        self.prompts: list[str] = []

    def generate(self, prompts, *, max_new_tokens, temperature, top_p, stop=None, seed=0):
        if self.fail_after is not None and len(self.prompts) + len(prompts) > self.fail_after:
            raise RuntimeError(f"scripted backend: simulated crash after {len(self.prompts)} prompts")
        self.prompts.extend(prompts)
        return [cut_at_stop(self.respond(p), stop) for p in prompts]
