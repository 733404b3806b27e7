"""The OpenAI request bodies lmadapt serves, field by field; anything else in a request is a 400.

Parameters OpenAI defines but lmadapt does not implement (logprobs, tools, response_format, ...) are named in
UNSUPPORTED so the error says so, instead of being silently ignored; unknown fields are rejected like OpenAI's
"Unrecognized request argument". `top_k` and `repetition_penalty` are extensions (vLLM and llama.cpp take
them too).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "StreamOptions",
    "UNSUPPORTED",
    "error_body",
]

# OpenAI parameters not implemented: a request that sets one (to anything but its "off" value) gets a 400.
UNSUPPORTED = {
    "logprobs": (None, False),
    "top_logprobs": (None,),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None,),
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
    "service_tier": (None, "auto", "default"),
    "store": (None, False),
    "metadata": (None, {}),
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


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=1_000_000)
    name: str | None = None


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
    parallel_tool_calls: bool | None = None
    response_format: dict | None = None
    audio: dict | None = None
    modalities: list[str] | None = None
    prediction: dict | None = None
    reasoning_effort: str | None = None
    web_search_options: dict | None = None
    service_tier: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="A string, or a list of strings (one completion each).")
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
