"""Wrapping a model with PEFT: the task-type mapping and turning PEFT's errors into recipe errors."""

from __future__ import annotations

from peft import PeftConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from .base import method_error, require_head

PEFT_TASK_TYPES = {
    "seq_cls": TaskType.SEQ_CLS,
    "token_cls": TaskType.TOKEN_CLS,
    "span": TaskType.QUESTION_ANS,
    "causal_lm": TaskType.CAUSAL_LM,
    "masked_lm": None,  # PEFT has no masked-LM task class; the plain PeftModel passes calls through
}


def peft_kwargs(model: nn.Module, task_type: str, method: str, inference: bool) -> dict:
    """Arguments every PEFT config gets: task type, the task head to train and save, inference mode."""
    heads = require_head(model, task_type, method)
    return {
        "task_type": PEFT_TASK_TYPES[task_type],
        "modules_to_save": heads or None,
        "inference_mode": inference,
    }


def check_targets(model: nn.Module, targets: list[str] | None, method: str, field: str = "target") -> None:
    """Every named target must match some module (PEFT's rule: the name or its last dotted parts)."""
    if not isinstance(targets, list):
        return
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
    try:
        return get_peft_model(model, config)
    except (ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise method_error(method, f"PEFT cannot apply it to {type(model).__name__}: {exc}") from exc
