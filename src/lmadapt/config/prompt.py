"""`prompt:` how `stage: prompt` asks a pretrained model for answers without changing any weight."""

from typing import Literal

from pydantic import Field, model_validator

from .base import Section


class PromptConfig(Section):
    """Zero-shot, few-shot, chain-of-thought generation, or PET-style cloze scoring with a verbalizer."""

    mode: Literal["zero_shot", "few_shot", "cot", "verbalizer"] = Field(
        "zero_shot",
        description="zero_shot/few_shot/cot generate an answer and map it to a label; verbalizer scores "
        "label words at the [MASK] (masked LMs) or as the next tokens (causal LMs).",
    )
    k: int | None = Field(
        None,
        ge=0,
        description="Demonstrations per prompt; default 4 for few_shot, else 0 (zero_shot: always 0).",
    )
    selection: Literal["random", "similar"] = Field(
        "random",
        description="Pick demonstrations at random (seeded) or by embedding similarity to the input.",
    )
    encoder: str = Field("minilm-l6", description="Encoder whose mean-pooled embeddings rank demonstrations.")
    instruction: str | None = Field(
        None, description="Instruction before the examples; default: 'Classify the text as one of: <labels>.'"
    )
    template: str | None = Field(
        None,
        description="How one example is written, with {field} placeholders (and {mask} for the verbalizer: "
        "where the label word goes). Default: the task's text fields, one per line.",
    )
    verbalizer: dict[str, list[str]] | None = Field(
        None, description="label -> label words (verbalizer mode; default: each label's own name)."
    )
    aggregate: Literal["logsumexp", "mean"] = Field(
        "logsumexp",
        description="Combine several words of a label: logsumexp = total probability of any of them; "
        "mean = mean log-probability (PET).",
    )
    calibrate: bool = Field(
        False, description="Divide label probabilities by those on content-free inputs (Zhao et al. 2021)."
    )
    content_free: list[str] = Field(
        ["N/A", "", "[MASK]"], description="Content-free inputs whose mean label probabilities calibrate."
    )
    chat: bool = Field(
        False, description="Causal LMs: wrap the prompt in the model's chat template (for instruct models)."
    )
    cot_trigger: str = Field(
        "Let's think step by step.", description="Chain-of-thought trigger (Kojima et al.)."
    )
    answer_prompt: str = Field(
        "Therefore, the answer (one of: {labels}) is",
        description="Answer-extraction prompt after the reasoning.",
    )
    rationale: str | None = Field(
        None, description="cot with k > 0: field holding each demonstration's reasoning (few-shot CoT)."
    )
    max_new_tokens: int = Field(16, ge=1, description="Tokens generated per answer (cot: per reasoning).")
    batch_size: int = Field(8, ge=1)

    @property
    def n_demos(self) -> int:
        """Demonstrations actually used: none for zero_shot, `k` (default 4 for few_shot) otherwise."""
        if self.mode == "zero_shot":
            return 0
        return self.k if self.k is not None else (4 if self.mode == "few_shot" else 0)

    @model_validator(mode="after")
    def _check(self):
        if self.mode == "verbalizer" and self.template is not None and "{mask}" not in self.template:
            raise ValueError("verbalizer template needs a {mask} placeholder where the label word goes")
        if self.verbalizer is not None and not all(self.verbalizer.values()):
            raise ValueError("every verbalizer label needs at least one word")
        return self
