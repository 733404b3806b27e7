"""`prompt`: trained soft-prompt embeddings prepended to the input (PEFT prompt tuning).

The virtual tokens shift every position, so tasks that label positions (token_cls, span) are not
supported; for causal_lm PEFT pads the labels itself (logits gain `num_virtual_tokens` leading positions).
Decoder seq_cls (Llama `score`) then sees only `inputs_embeds` and pools the LAST position: pad on the left.
`init_text` initialises the prompt from that text's token embeddings, using the tokenizer stored in the
model's folder (`model.name_or_path`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..config.base import Section
from .base import Method, method_error
from .peft_common import peft_kwargs, wrap

if TYPE_CHECKING:
    from torch import nn

POSITION_TASKS_WHY = "virtual tokens prepended to the input shift the labelled positions"


class PromptMethod(Section):
    type: Literal["prompt"] = "prompt"
    num_virtual_tokens: int = Field(20, ge=1)
    init_text: str | None = Field(None, description="Initialise the soft prompt from this text's embeddings.")


def apply(model: nn.Module, cfg: PromptMethod, task_type: str, inference: bool = False) -> nn.Module:
    from peft import PromptTuningConfig, PromptTuningInit

    init = {"prompt_tuning_init": PromptTuningInit.RANDOM}
    if cfg.init_text and not inference:  # on reload the trained embeddings replace the init anyway
        folder = getattr(model, "name_or_path", "") or ""
        if (
            not (Path(folder) / "tokenizer_config.json").exists()
            and not (Path(folder) / "tokenizer.json").exists()
        ):
            raise method_error(
                "prompt",
                f"init_text needs the model's tokenizer, but the model's folder {folder!r} has none",
            )
        init = {
            "prompt_tuning_init": PromptTuningInit.TEXT,
            "prompt_tuning_init_text": cfg.init_text,
            "tokenizer_name_or_path": folder,
        }
    config = PromptTuningConfig(
        num_virtual_tokens=cfg.num_virtual_tokens,
        **init,
        **peft_kwargs(model, task_type, "prompt", inference),
    )
    return wrap(model, config, "prompt")


CONFIG = PromptMethod
METHOD = Method(
    name="prompt",
    apply=apply,
    storage="peft",
    injects_inputs=True,
    tasks=frozenset({"seq_cls", "causal_lm"}),
    why_not={
        "token_cls": POSITION_TASKS_WHY,
        "span": POSITION_TASKS_WHY,
        "masked_lm": "PEFT has no masked-LM model class for prompt-learning methods",
    },
)
