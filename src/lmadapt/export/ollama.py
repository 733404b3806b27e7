"""`lmadapt export RUN --format ollama --output DIR`: DIR/model.gguf plus DIR/Modelfile for `ollama create`.

Ollama's TEMPLATE is a Go template, not Jinja, so the run's chat template is taken apart by rendering it
(lmadapt's `templates.render`, the reference) with marker contents: what comes before and after a system,
user and assistant message, what a conversation without a system prompt starts with (a default system
prompt, say), and the generation prompt. The Go template is built from those pieces, and the same pieces,
put together as Ollama will, must render lmadapt's probe conversations exactly (`chat.check_renders_like`);
a template that cannot be written this way is an error that points to --format gguf.

The PARAMETER lines are `lmadapt generate`'s defaults (greedy, 128 new tokens, no repetition penalty) and the
tokens lmadapt's engine stops at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import LmadaptError
from ..templates import render
from ..utils.io import atomic_path
from .chat import check_renders_like
from .folder import Merged, write_merged
from .gguf_file import prepare_gguf, write_gguf

__all__ = ["ChatPieces", "chat_pieces", "export_ollama", "go_template", "modelfile"]

GGUF_NAME = "model.gguf"
MAX_NEW_TOKENS = 128  # `lmadapt generate --max-new-tokens` default
MAX_NUM_CTX = 8192  # Ollama reserves the KV cache for num_ctx up front: no more than this by default
# Message contents that no template writes by itself.
SYSTEM, USER, ASSISTANT, USER2 = "\x01S\x01", "\x01U\x01", "\x01A\x01", "\x01V\x01"


@dataclass(frozen=True)
class ChatPieces:
    """A chat template as the text around each message: what Ollama's Go template is built from."""

    head: str  # starts a conversation without a system message (e.g. a default system prompt)
    system: tuple[str, str]  # (before, after) a system message's content; `before` starts the conversation
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str  # after the last message: where the model's answer starts

    def render(self, messages, add_generation_prompt: bool = True) -> str:
        """The text Ollama renders with the Go template from these pieces."""
        parts = [] if messages and messages[0]["role"] == "system" else [self.head]
        for m in messages:
            before, after = getattr(self, m["role"])
            parts += [before, m["content"], after]
        return "".join(parts) + (self.generation if add_generation_prompt else "")


def _split(text: str, marker: str, what: str) -> tuple[str, str]:
    if text.count(marker) != 1:
        raise ValueError(f"the {what} content appears {text.count(marker)} times")
    before, after = text.split(marker)
    return before, after


def _cut(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise ValueError(f"{what} does not extend the shorter conversation")
    return text[len(prefix) :]


def chat_pieces(tokenizer, template: str) -> ChatPieces:
    """Take the chat `template` apart into ChatPieces, checked against lmadapt's rendering."""
    from jinja2 import TemplateError

    def text(messages, generation=False):
        return render(tokenizer, [{"role": r, "content": c} for r, c in messages], template, generation)

    try:
        pieces = _take_apart(text)
        check_renders_like(tokenizer, template, pieces.render, "the Ollama TEMPLATE")
    except (ValueError, TemplateError, LmadaptError) as exc:
        raise LmadaptError(
            f"the {template!r} chat template cannot be written as an Ollama TEMPLATE ({exc}); export "
            "--format gguf instead (the GGUF carries the Jinja template) and write the Modelfile by hand"
        ) from exc
    bos = tokenizer.bos_token
    ids = tokenizer("x")["input_ids"]
    if bos and ids and ids[0] == tokenizer.bos_token_id:  # llama.cpp adds BOS itself, as the tokenizer does
        system = (pieces.system[0].removeprefix(bos), pieces.system[1])
        pieces = ChatPieces(
            pieces.head.removeprefix(bos), system, pieces.user, pieces.assistant, pieces.generation
        )
    return pieces


def _take_apart(text) -> ChatPieces:
    """ChatPieces from `text(messages, generation)`, the rendering of (role, content) pairs; ValueError when
    the template does not write each message the same way wherever it stands."""
    user_first, user_after = _split(text([("user", USER)]), USER, "user")
    rest = _cut(text([("user", USER), ("assistant", ASSISTANT)]), user_first + USER + user_after, "a reply")
    assistant = _split(rest, ASSISTANT, "assistant")
    turn = ("user", USER), ("assistant", ASSISTANT)
    rest = _cut(text([*turn, ("user", USER2)]), text(list(turn)), "a second turn")
    user_before, after = _split(rest, USER2, "second user")
    if after != user_after or not user_first.endswith(user_before):
        raise ValueError("a user message is written differently in the first and later turns")
    head = user_first[: len(user_first) - len(user_before)]
    system_before, rest = _split(text([("system", SYSTEM), ("user", USER)]), SYSTEM, "system")
    if not rest.endswith(user_before + USER + user_after):
        raise ValueError("the user message after a system message is written differently")
    system_after = rest[: len(rest) - len(user_before + USER + user_after)]
    generation = _cut(text([("user", USER)], True), text([("user", USER)]), "the generation prompt")
    return ChatPieces(head, (system_before, system_after), (user_before, user_after), assistant, generation)


def _literal(text: str) -> str:
    """Text for a Go template inside a Modelfile's triple quotes: as is when safe, else a Go string."""
    if not text:
        return ""
    if "{{" in text or '"' in text or "\\" in text:
        return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"
    return text


def go_template(pieces: ChatPieces) -> str:
    """Ollama's TEMPLATE (Go text/template over .Messages) rendering what `pieces.render` does."""
    role = "{{{{ {} eq $m.Role {} }}}}{}{{{{ $m.Content }}}}{}"
    head = "{{ if eq $i 0 }}" + _literal(pieces.head) + "{{ end }}" if pieces.head else ""
    sys_before, sys_after = (_literal(x) for x in pieces.system)
    user_before, user_after = (_literal(x) for x in pieces.user)
    bot_before, bot_after = (_literal(x) for x in pieces.assistant)
    return (
        "{{ range $i, $m := .Messages }}"
        + role.format("if", '"system"', sys_before, sys_after)
        + role.format("else if", '"user"', head + user_before, user_after)
        + role.format("else if", '"assistant"', bot_before, bot_after)
        + "{{ end }}{{ end }}"
        + _literal(pieces.generation)
    )


def modelfile(merged: Merged, pieces: ChatPieces, source: str) -> str:
    """The Modelfile text: FROM the GGUF beside it, the TEMPLATE, stop tokens and lmadapt's defaults."""
    tokens = merged.tokenizer.convert_ids_to_tokens(merged.eos_ids)
    stops = list(dict.fromkeys(t for t in tokens if t))
    lines = [
        f"# Written by `lmadapt export --format ollama` from {source} (chat template: {merged.template}).",
        "# Create the model with: ollama create NAME -f Modelfile",
        f"FROM ./{GGUF_NAME}",
        f'TEMPLATE """{go_template(pieces)}"""',
        *(f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops),
        "# The defaults of `lmadapt generate`: greedy decoding, 128 new tokens, no repetition penalty.",
        "PARAMETER temperature 0",
        "PARAMETER repeat_penalty 1",
        f"PARAMETER num_predict {MAX_NEW_TOKENS}",
        f"PARAMETER num_ctx {min(merged.context_length, MAX_NUM_CTX)}",
    ]
    return "\n".join(lines) + "\n"


def export_ollama(
    run_dir: str | Path,
    output: str | Path,
    quant: str = "f16",
    trust_remote_code: bool = False,
    llama_quantize: str | Path | None = None,
) -> Path:
    """Write the folder `output`: the run's model as model.gguf and a Modelfile for `ollama create`."""
    run_dir, output = Path(run_dir), Path(output)
    if output.exists():
        raise LmadaptError(f"{output}: exists; choose a new folder")
    converter, quantizer = prepare_gguf(run_dir, quant, llama_quantize)
    with atomic_path(output) as tmp:
        tmp.mkdir()
        merged = write_merged(run_dir, tmp.parent / "hf", trust_remote_code)
        pieces = chat_pieces(merged.tokenizer, merged.template)  # before the conversion: fail early
        write_gguf(merged, tmp / GGUF_NAME, quant, converter, quantizer, tmp.parent)
        (tmp / "Modelfile").write_text(modelfile(merged, pieces, str(run_dir)), encoding="utf-8")
    return output
