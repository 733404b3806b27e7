"""Text generators for `lmadapt synth`: the local inference engine, any OpenAI-compatible server, a script.

All share one call: `generate(prompts, *, max_new_tokens, temperature, top_p, stop, seed) -> list[str]`,
one completion per prompt, stop strings already cut off.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from ..errors import SourceError


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


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """Text up to the first stop string (servers and engines may or may not have cut it already)."""
    end = len(text)
    for s in stop or ():
        i = text.find(s)
        if i != -1:
            end = min(end, i)
    return text[:end]


class LocalBackend:
    """Any causal LM through `lmadapt.infer.engine` (catalog name, local folder or run folder)."""

    def __init__(self, model: str, batch_size: int = 8, chat: bool = False, repetition_penalty: float = 1.0):
        from ..infer.engine import load_engine

        self.engine = load_engine(model)
        self.batch_size = batch_size
        self.chat = chat
        self.repetition_penalty = repetition_penalty

    def generate(self, prompts, *, max_new_tokens, temperature, top_p, stop=None, seed=0):
        inputs = [[{"role": "user", "content": p}] for p in prompts] if self.chat else list(prompts)
        outs = self.engine.generate(
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
        return [cut_at_stop(o, stop) for o in outs]


class OpenAIBackend:
    """An OpenAI-compatible HTTP endpoint (`/completions`, or `/chat/completions` when `chat`).

    Prompts are sent as concurrent requests; each retries on connection errors, timeouts, 429 and 5xx with
    exponential backoff, and gives up with a SourceError naming the URL after `max_retries` retries.
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
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
            return f"{self.base_url}/chat/completions", body
        body["prompt"] = prompt
        return f"{self.base_url}/completions", body

    def _post(self, url: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:200].decode('utf-8', 'replace')}"
                if exc.code != 429 and exc.code < 500:
                    raise SourceError(f"synth backend {url}: {last}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
        raise SourceError(f"synth backend {url}: gave up after {self.max_retries + 1} attempts ({last})")

    def _one(self, prompt: str, max_new_tokens, temperature, top_p, stop, seed) -> str:
        url, body = self._payload(prompt, max_new_tokens, temperature, top_p, stop, seed)
        reply = self._post(url, body)
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] if self.chat else choice["text"]
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
