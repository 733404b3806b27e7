"""`model:` which pretrained model to start from."""

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class ModelConfig(Section):
    name: str = Field(
        description="Catalog name (`lmadapt models list`), a local folder, a local .gguf file (dequantized "
        "once into the cache), or a Hub id."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype when loading; training keeps fp32 master weights."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for Hub ids.")
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with a Hub repo. Off by default."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value):
        # `model: minilm-l6` is shorthand for `model: {name: minilm-l6}`.
        return {"name": value} if isinstance(value, str) else value
