"""Wrapping a model with PEFT: the task-type mapping and turning PEFT's errors into recipe errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import method_error, require_head

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel
    from torch import nn

# torch and PEFT are imported only when a method is applied: a recipe reads the sections without them.
PEFT_TASK_TYPES = {  # our task type -> the name of PEFT's TaskType
    "seq_cls": "SEQ_CLS",
    "token_cls": "TOKEN_CLS",
    "span": "QUESTION_ANS",
    "causal_lm": "CAUSAL_LM",
    "masked_lm": None,  # PEFT has no masked-LM task class; the plain PeftModel passes calls through
    "seq2seq_lm": "SEQ_2_SEQ_LM",  # encoder-decoder models (T5 family)
}


def peft_kwargs(model: nn.Module, task_type: str, method: str, inference: bool) -> dict:
    """Arguments every PEFT config gets: task type, the task head to train and save, inference mode."""
    from peft import TaskType

    heads = require_head(model, task_type, method)
    name = PEFT_TASK_TYPES[task_type]
    return {
        "task_type": TaskType[name] if name else None,
        "modules_to_save": heads or None,
        "inference_mode": inference,
    }


def check_targets(model: nn.Module, targets: list[str] | None, method: str, field: str = "target") -> None:
    """Every named target must match some module (PEFT's rule: the name or its last dotted parts)."""
    if not isinstance(targets, list):
        return
    from torch import nn

    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise method_error(
            method,
            f"{field} modules {missing} not found in {type(model).__name__}; "
            f"its linear layers are named {', '.join(linear)}",
        )


def wrap(model: nn.Module, config: PeftConfig, method: str) -> PeftModel:
    """`get_peft_model`, with PEFT's complaints about the model (missing targets...) as recipe errors."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except (ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise method_error(method, f"PEFT cannot apply it to {type(model).__name__}: {exc}") from exc
