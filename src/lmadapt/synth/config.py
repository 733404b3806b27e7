"""The `lmadapt synth` config: one strict YAML file (recipes/synth/*.yaml), dotted overrides on the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, model_validator

from ..config import load_config, parse_config
from ..config.base import Section
from .filters import DEFAULT_BLACKLIST


class LocalBackendConfig(Section):
    """Generate with the local inference engine."""

    type: Literal["local"] = "local"
    model: str = Field("smollm2-135m-instruct", description="Catalog name, model folder or run folder.")
    batch_size: int = Field(8, ge=1, description="Prompts per forward pass.")
    chat: bool = Field(
        False, description="Wrap each prompt in the model's chat template (else raw completion)."
    )
    repetition_penalty: float = Field(1.0, gt=0)
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 where the CPU has native bf16 matmuls, else float32."
    )


class OpenAIBackendConfig(Section):
    """Generate with an OpenAI-compatible HTTP server (vLLM, llama.cpp server, OpenAI, ...)."""

    type: Literal["openai"]
    base_url: str = Field(..., description="e.g. http://127.0.0.1:8000/v1")
    model: str = Field(..., description="Model name the server expects.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (none: no key)."
    )
    chat: bool = Field(False, description="Use /chat/completions instead of /completions.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0)
    backoff_s: float = Field(
        1.0,
        ge=0,
        description="Retry backoff (urllib3 Retry's backoff_factor): the first retry is at once, the n-th waits "
        "backoff_s * 2**(n-1) seconds; a server's Retry-After header wins.",
    )


class SamplingConfig(Section):
    """Decoding settings shared by every generation step."""

    temperature: float = Field(0.8, ge=0, description="0 means greedy.")
    top_p: float = Field(0.95, gt=0, le=1)
    instruction_max_tokens: int = Field(
        128, ge=1, description="New tokens per instruction-generation prompt."
    )
    classify_max_tokens: int = Field(3, ge=1)
    instance_max_tokens: int = Field(160, ge=1)
    alpaca_max_tokens: int = Field(1024, ge=1, description="New tokens per Alpaca prompt (20 tasks).")


class FilterConfig(Section):
    """What a generated instruction and its instances must pass."""

    rouge_threshold: float = Field(
        0.7, gt=0, le=1, description="Reject when ROUGE-L vs any pool item >= this."
    )
    min_words: int = Field(3, ge=1, description="Fewest words (text that is not mostly CJK).")
    max_words: int = Field(150, ge=1, description="Most words (text that is not mostly CJK).")
    min_chars: int = Field(5, ge=1, description="Fewest characters of a mostly-CJK (Chinese) instruction.")
    max_chars: int = Field(300, ge=1, description="Most characters of a mostly-CJK (Chinese) instruction.")
    blacklist: list[str] = Field(default_factory=lambda: list(DEFAULT_BLACKLIST))
    max_instances: int = Field(5, ge=1, description="Keep at most this many instances per task.")


class SynthConfig(Section):
    """Self-Instruct (or Alpaca-style) data generation from seed tasks."""

    method: Literal["self-instruct", "alpaca"] = "self-instruct"
    seeds: str = Field(
        "self-instruct-seeds",
        description="Catalog dataset name or a JSONL file of seed tasks: {instruction, instances, "
        "is_classification} records, or Alpaca {instruction, input, output} rows (e.g. alpaca-zh).",
    )
    max_seeds: int | None = Field(
        None, ge=1, description="Draw this many seed tasks (seeded by `seed`) from the source; null: all."
    )
    language: Literal["en", "zh"] = Field("en", description="Language of the prompt frames.")
    backend: Annotated[LocalBackendConfig | OpenAIBackendConfig, Field(discriminator="type")] = Field(
        default_factory=LocalBackendConfig
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    target: int = Field(200, ge=1, description="Stop once this many tasks (with instances) are accepted.")
    prompts_per_round: int = Field(
        8, ge=1, description="Instruction-generation prompts per round (one batch)."
    )
    prompt_instructions: int = Field(8, ge=1, description="In-context instructions per Self-Instruct prompt.")
    machine_per_prompt: int = Field(2, ge=0, description="Of those, how many come from earlier generations.")
    alpaca_examples: int = Field(3, ge=1, description="Seed examples per Alpaca prompt.")
    alpaca_tasks: int = Field(20, ge=2, description="Tasks requested per Alpaca prompt.")
    classify_shots: int = Field(8, ge=0, description="Few-shot examples in the classification prompt.")
    instance_demos: int = Field(2, ge=0, description="Seed tasks shown in each instance-generation prompt.")
    max_rounds: int | None = Field(
        None, ge=1, description="Give up after this many rounds in one invocation."
    )
    seed: int = 0
    output: str = Field("runs/synth", description="Output folder (resumed when it exists).")

    @model_validator(mode="before")
    @classmethod
    def _default_backend_type(cls, data):
        # `backend: {model: x}` (or an override like backend.batch_size=4) means the local engine.
        if isinstance(data, dict) and isinstance(data.get("backend"), dict) and "type" not in data["backend"]:
            data = {**data, "backend": {"type": "local", **data["backend"]}}
        return data


def parse_synth_config(raw, source: str = "<synth config>", text: str = "") -> SynthConfig:
    """Validate a raw mapping, raising RecipeError that lists every problem with its YAML line."""
    return parse_config(raw, SynthConfig, source, text, what="synth config")


def load_synth_config(path: str | Path, overrides: list[str] | None = None) -> SynthConfig:
    """Read, override and validate a synth config file (strict, like recipes)."""
    return load_config(path, SynthConfig, overrides, what="synth config")


def synth_config_to_yaml(cfg: SynthConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
