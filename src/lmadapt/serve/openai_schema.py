"""The OpenAI request bodies lmadapt serves, field by field; anything else in a request is a 400.

Parameters OpenAI defines but lmadapt does not implement (logprobs, tools, response_format, ...) are named in
UNSUPPORTED so the error says so, instead of being silently ignored; their neutral values (the ones that would
not change the answer: `tools: []`, `logprobs: false`, `parallel_tool_calls`, `metadata`, `store`, ...) are
accepted, since common clients send them. Unknown fields are rejected like OpenAI's "Unrecognized request
argument". Message content may be a string or a list of text parts (joined with a newline); image, audio and
file parts are a 400. Role `developer` (OpenAI's newer name for system) is read as `system`. `top_k` and
`repetition_penalty` are extensions (vLLM and llama.cpp take them too).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "StreamOptions",
    "UNSUPPORTED",
    "error_body",
]

# OpenAI parameters not implemented: a request that sets one to anything but a value that leaves the answer as
# it is gets a 400. (parallel_tool_calls, metadata, store, service_tier and user never change the answer.)
UNSUPPORTED = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),  # with no tools, "auto" is "none"
    "functions": (None, []),
    "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
}


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code=None
) -> dict:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


TEXT_PARTS = {"text", "input_text"}


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] = Field(
        description="A string, or a list of text parts ({'type': 'text', 'text': ...}) joined by newlines."
    )
    name: str | None = Field(None, max_length=512)

    @field_validator("content")
    @classmethod
    def _text_only(cls, content):
        """Text parts joined into one string; any other part (image_url, input_audio, file, ...) refused."""
        if isinstance(content, str):
            return content
        texts = []
        for i, part in enumerate(content):
            kind = part.get("type")
            if kind not in TEXT_PARTS:
                raise ValueError(f"part {i} is of type {kind!r}: this server takes text parts only")
            if not isinstance(part.get("text"), str) or set(part) - {"type", "text"}:
                raise ValueError(f"part {i}: a text part is {{'type': 'text', 'text': '...'}}")
            texts.append(part["text"])
        return "\n".join(texts)

    def chat_role(self) -> str:
        return "system" if self.role == "developer" else self.role


class _Sampling(_Strict):
    model: str = Field(max_length=512, description="One of the names /v1/models lists.")
    max_tokens: int | None = Field(None, ge=1, description="New tokens at most (default: the server's cap).")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0: greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, le=1_000_000, description="Extension; 0: off.")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="Extension; 1: off.")
    n: int = Field(1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings.")
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    user: str | None = Field(None, max_length=512)
    # declared so the schema shows them; any "on" value is refused (UNSUPPORTED)
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    def stop_list(self) -> list[str]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stop if s]


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    functions: list[dict] | None = None
    function_call: str | dict | None = None
    parallel_tool_calls: bool | None = None  # accepted: without tools it changes nothing
    response_format: dict | None = None
    audio: dict | None = None
    modalities: list[str] | None = None
    prediction: dict | None = None
    reasoning_effort: str | None = None
    web_search_options: dict | None = None
    service_tier: str | None = Field(None, max_length=64)  # accepted: scheduling, not the answer
    store: bool | None = None  # accepted: nothing is stored here either way
    metadata: dict[str, str] | None = Field(None, max_length=16)  # accepted: a label, not the answer


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="A string, or a list of strings (one completion each).")
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
