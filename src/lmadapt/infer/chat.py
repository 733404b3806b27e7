"""Multi-turn chat on the inference engine: history kept until the prompt would not fit, then oldest turns go.

The system prompt is never dropped; a turn is a user message with the replies that follow it, dropped whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

__all__ = ["ChatSession", "truncate_history", "run_chat"]


def truncate_history(
    messages: Sequence[dict], count_tokens: Callable[[list[dict]], int], limit: int
) -> list[dict]:
    """Drop the oldest turns (never the system prompt, never the last turn) until `count_tokens` <= `limit`.

    Returns the kept messages. When even the system prompt plus the last turn is too long, that is returned
    and the caller decides (the engine still generates; the model sees a prompt beyond its context).
    """
    system = [dict(m) for m in messages[:1] if m["role"] == "system"]
    turns: list[list[dict]] = []
    for m in messages[len(system) :]:
        if m["role"] == "user" or not turns:
            turns.append([])
        turns[-1].append(dict(m))
    while len(turns) > 1 and count_tokens(system + [m for t in turns for m in t]) > limit:
        turns.pop(0)
    return system + [m for t in turns for m in t]


class ChatSession:
    """A conversation with an Engine: `ask(text) -> reply`; `reset()` forgets everything but the system."""

    def __init__(self, engine, system: str | None = None, max_new_tokens: int = 256, **decoding):
        self.engine = engine
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.decoding = decoding
        self.messages: list[dict] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def prompt_tokens(self, messages: list[dict]) -> int:
        return len(self.engine.encode(messages))

    def ask(self, text: str) -> str:
        self.messages.append({"role": "user", "content": text})
        limit = self.engine.context_length - self.max_new_tokens
        self.messages = truncate_history(self.messages, self.prompt_tokens, limit)
        reply = self.engine.generate([self.messages], max_new_tokens=self.max_new_tokens, **self.decoding)[0]
        self.messages.append({"role": "assistant", "content": reply.strip()})
        return reply.strip()


def run_chat(
    model_or_run: str,
    system: str | None = None,
    max_new_tokens: int = 256,
    lines: Iterable[str] | None = None,
    write: Callable[[str], None] = print,
    trust_remote_code: bool = False,
    dtype: str = "auto",
    **decoding,
) -> ChatSession:
    """Terminal loop: each input line is a user turn; `/reset` clears the history, `/exit` (or EOF) ends."""
    import sys

    from .engine import load_engine

    session = ChatSession(
        load_engine(model_or_run, trust_remote_code=trust_remote_code, dtype=dtype),
        system,
        max_new_tokens,
        **decoding,
    )
    interactive = lines is None and sys.stdin.isatty()
    source = iter(lines if lines is not None else sys.stdin)
    write("chat: /reset clears the history, /exit quits")
    while True:
        if interactive:
            sys.stdout.write("you> ")
            sys.stdout.flush()
        line = next(source, None)
        if line is None:
            break
        line = line.strip()
        if not line:
            continue
        if line == "/exit":
            break
        if line == "/reset":
            session.reset()
            write("(history cleared)")
            continue
        write(f"assistant> {session.ask(line)}")
    return session
