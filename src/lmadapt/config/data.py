"""`data:` where the examples come from and which splits to use."""

from pydantic import Field

from .base import Section


class DataConfig(Section):
    source: str | None = Field(
        None,
        description="Catalog dataset (`lmadapt data list`), a folder of split files, or a Hub dataset id. "
        "Leave empty when train/eval/test are file paths.",
    )
    train: str | None = Field("train", description="Split name within `source`, or a file path.")
    eval: str | None = Field("validation", description="Split for evaluation during training (or a file).")
    test: str | None = Field("test", description="Split for the final evaluation (or a file).")
    max_train: int | None = Field(None, ge=1, description="Use at most this many training examples.")
    max_eval: int | None = Field(None, ge=1, description="Use at most this many evaluation examples.")
    max_test: int | None = Field(None, ge=1, description="Use at most this many test examples.")
    seed: int = Field(0, description="Seed for the subset drawn by max_*.")
