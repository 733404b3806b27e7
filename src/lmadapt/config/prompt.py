"""`prompt:` how `stage: prompt` asks a pretrained model for answers without changing any weight."""

import difflib
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from .base import Section

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")  # {field}; {mask} is the verbalizer's slot
MASK = "{mask}"


def _word(word: str) -> str:
    if not word.strip():
        raise ValueError("a label word must not be empty or blank")
    return word


LabelWords = Annotated[list[Annotated[str, AfterValidator(_word)]], Field(min_length=1)]


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
    verbalizer: dict[str, LabelWords] | None = Field(
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
    dtype: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        "auto",
        description="zero_shot / few_shot / cot generation precision: auto = bf16 matmuls with float32 "
        "activations where the CPU has native bf16, else float32 (docs/performance.md); int8 weight-only.",
    )

    @property
    def n_demos(self) -> int:
        """Demonstrations actually used: none for zero_shot, `k` (default 4 for few_shot) otherwise."""
        if self.mode == "zero_shot":
            return 0
        return self.k if self.k is not None else (4 if self.mode == "few_shot" else 0)

    @field_validator("template")
    @classmethod
    def _mask_slot(cls, template: str | None, info: ValidationInfo):
        mode = info.data.get("mode")
        if template is None or mode is None:
            return template
        if mode == "verbalizer" and template.count(MASK) != 1:
            found = template.count(MASK)
            raise ValueError(
                f"a verbalizer template needs exactly one {MASK} where the label word goes ({found} found)"
            )
        if mode != "verbalizer" and MASK in template:
            raise ValueError(
                f"{MASK} is the verbalizer's slot; mode {mode} writes the answer after the template"
            )
        return template

    @model_validator(mode="after")
    def _check(self):
        if self.mode == "cot" and self.n_demos and not self.rationale:
            raise ValueError(
                "rationale: few-shot chain-of-thought (k > 0) needs the field holding each demo's reasoning"
            )
        return self


def prompt_problems(prompt: PromptConfig, task) -> list[tuple[tuple, str]]:
    """What `prompt:` asks of `task:`: a single-label classify or pair task, templates over its text fields,
    verbalizer labels equal to the task's labels. As (key path, message) pairs."""
    if task.type not in ("classify", "pair") or getattr(task, "multi_label", False):
        kind = "multi-label classify" if task.type == "classify" else repr(task.type)
        return [(("task", "type"), f"stage prompt handles single-label classify and pair, not {kind}")]
    found = []
    fields = [task.text_a, task.text_b] if task.type == "pair" else list(task.text)
    named = "task.text_a, task.text_b" if task.type == "pair" else "task.text"
    for name in dict.fromkeys(PLACEHOLDER.findall(prompt.template or "")):
        if name != "mask" and name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"; did you mean {{{close[0]}}}?" if close else ""
            found.append(
                (
                    ("prompt", "template"),
                    f"placeholder {{{name}}} is not one of the task's text fields ({named}: "
                    f"{', '.join(fields)}){hint}",
                )
            )
    labels = getattr(task, "labels", None)
    words = prompt.verbalizer
    if prompt.mode == "verbalizer" and words is not None and labels and set(words) != set(labels):
        message = f"labels {sorted(words)} differ from task.labels {sorted(labels)}"
        found.append((("prompt", "verbalizer"), message))
    return found
