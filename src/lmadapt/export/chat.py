"""The chat template an exported model carries, checked against lmadapt's own rendering.

A run prompted with the tokenizer's template ("model") exports that template as it is. A run tuned on a named
template ("alpaca", "plain") exports a Jinja template written here that renders the same text, so llama.cpp and
Ollama prompt the model the way it was trained. `templates.render` is the reference for both: every template
written here is rendered on a few probe conversations and compared with it before it is used.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from ..errors import LmadaptError
from ..templates import ALPACA_SYSTEM, render

__all__ = ["PROBES", "check_renders_like", "chat_template_for"]

# Conversations every exported template must render exactly as lmadapt does (with and without a system
# prompt, several turns, text with quotes, braces and newlines).
PROBES: list[list[dict]] = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}],
    [
        {"role": "user", "content": 'Say "yes"'},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "and {{no}}?\nthen"},
    ],
    [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
        {"role": "user", "content": "e"},
    ],
]

# (default system prompt, user tag, assistant tag, separator) of lmadapt's named templates (templates.render)
NAMED = {
    "alpaca": (ALPACA_SYSTEM, "### Instruction:\n", "### Response:\n", "\n\n"),
    "plain": ("", "User: ", "Assistant: ", "\n"),
}


def _named_jinja(template: str) -> str:
    """Jinja (as Hugging Face chat templates are written) rendering lmadapt's named `template`."""
    system, user_tag, bot_tag, sep = (json.dumps(x) for x in NAMED[template])
    return (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set rest = messages[1:] -%}"
        f"{{%- else -%}}{{%- set system = {system} -%}}{{%- set rest = messages -%}}{{%- endif -%}}"
        f"{{%- if system -%}}{{{{ system + {sep} }}}}{{%- endif -%}}"
        "{%- for message in rest -%}"
        f"{{%- if message['role'] == 'user' -%}}{{{{ {user_tag} + message['content'] + {sep} }}}}"
        f"{{%- elif message['role'] == 'assistant' -%}}"
        f"{{{{ {bot_tag} + message['content'] + (eos_token or '') + {sep} }}}}"
        "{%- endif -%}{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{ {bot_tag} }}}}{{%- endif -%}}"
    )


def check_renders_like(
    tokenizer, template: str, candidate: Callable[[Sequence[Mapping], bool], str], what: str
) -> None:
    """Raise unless `candidate(messages, add_generation_prompt)` equals lmadapt's rendering on every probe."""
    for messages in PROBES:
        for generation in (True, False):
            want = render(tokenizer, messages, template, add_generation_prompt=generation)
            got = candidate(messages, generation)
            if got != want:
                raise LmadaptError(
                    f"{what} does not render the {template!r} chat template as lmadapt does "
                    f"(messages {messages!r}: expected {want!r}, got {got!r})"
                )


def chat_template_for(tokenizer, template: str) -> str:
    """The Jinja chat template to export for a run prompted with `template` ("model", "alpaca", "plain")."""
    if template == "model":
        return tokenizer.chat_template
    jinja = _named_jinja(template)

    def rendered(messages, generation):
        return tokenizer.apply_chat_template(
            [dict(m) for m in messages],
            chat_template=jinja,
            tokenize=False,
            add_generation_prompt=generation,
        )

    check_renders_like(tokenizer, template, rendered, f"the exported Jinja template for {template!r}")
    return jinja
