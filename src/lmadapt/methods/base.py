"""What every method shares: the `Method` record, task types, and helpers that find heads and layers.

A method is one module exposing its recipe section (`CONFIG`) and `METHOD = Method(...)`; one line in
`lmadapt.methods.MODULES` registers both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RecipeError

if TYPE_CHECKING:
    from torch import nn

TASK_TYPES = ("seq_cls", "token_cls", "span", "causal_lm", "masked_lm", "seq2seq_lm")
ENCODER_TASKS = frozenset({"seq_cls", "token_cls", "span"})
LM_TASKS = frozenset({"causal_lm", "masked_lm", "seq2seq_lm"})

# Names Hugging Face gives the task head of each *ForXxx class (BERT/RoBERTa: classifier, Llama: score).
HEAD_NAMES = {
    "seq_cls": ("classifier", "score"),
    "token_cls": ("classifier", "score"),
    "span": ("qa_outputs",),
    "causal_lm": (),
    "masked_lm": (),
    "seq2seq_lm": (),
}
# The last normalisation of decoder stacks (Llama/Mistral: norm, OPT: final_layer_norm, GPT-2: ln_f).
FINAL_NORM_NAMES = ("norm", "final_layer_norm", "ln_f", "final_layernorm")

# apply(model, method_cfg, task_type, inference) -> model
ApplyFn = Callable[["nn.Module", Any, str, bool], "nn.Module"]


@dataclass(frozen=True)
class Method:
    """One adaptation method.

    `storage` is how `save_trained` writes it: "full" (`model/`, whole model), "trainable"
    (`model/trainable.safetensors`, only trainable tensors) or "peft" (`adapter/`, PEFT format).
    `tasks` lists the task types it supports; `why_not` explains each unsupported one. `injects_inputs`: the
    PEFT wrapper's forward adds virtual tokens or past key values, so code that calls the decoder directly
    (the chunked training loss) would skip them.
    """

    name: str
    apply: ApplyFn
    storage: str
    tasks: frozenset[str]
    why_not: dict[str, str]
    injects_inputs: bool = False


def method_error(name: str, message: str) -> RecipeError:
    return RecipeError(f"method '{name}': {message}")


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def set_trainable(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


def head_names(model: nn.Module, task_type: str) -> list[str]:
    """Names of the direct children of `model` that form the task head (empty for LM tasks)."""
    children = dict(model.named_children())
    return [n for n in HEAD_NAMES[task_type] if n in children]


def require_head(model: nn.Module, task_type: str, method: str) -> list[str]:
    """Like `head_names`, but an encoder task without a recognisable head is a recipe error."""
    names = head_names(model, task_type)
    if task_type in ENCODER_TASKS and not names:
        raise method_error(
            method,
            f"{type(model).__name__} has no task head for {task_type} "
            f"(looked for a child module named {' or '.join(HEAD_NAMES[task_type])})",
        )
    return names


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks: the (first) ModuleList as long as `config.num_hidden_layers`."""
    from torch import nn

    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and n:
            return module
    raise RecipeError(f"cannot find the transformer layers of {type(model).__name__} (num_hidden_layers={n})")


def find_final_norm(model: nn.Module) -> nn.Module | None:
    """The decoder's final normalisation layer, if the architecture has one."""
    from torch import nn

    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in FINAL_NORM_NAMES and not isinstance(module, nn.ModuleList):
            return module
    return None


def hidden_size(model: nn.Module) -> int:
    config = model.config
    for attr in ("hidden_size", "d_model", "n_embd", "dim"):
        if getattr(config, attr, None):
            return int(getattr(config, attr))
    raise RecipeError(f"cannot tell the hidden size of {type(model).__name__}")
