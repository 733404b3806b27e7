"""The set of models one server serves, by name: base models, merged exports, sft run folders.

`lmadapt serve smollm2-135m-instruct runs/a runs/b` serves three names: the base model, and the LoRA adapters
of runs a and b over that same base, loaded once (PEFT multi-adapter: the adapter is switched per batch).
`NAME=SPEC` picks a name; otherwise a run is named by its folder, a model by what was given (a folder by its
last part). A request's `model` is looked up in this set only, so no request can name a file on the server.
Encoder-decoder models (T5 family) are refused: the server's continuous batching is decoder-only (they are
served by `lmadapt generate` / `chat`, whose engine decodes them through transformers' `generate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..infer.engine import Engine, is_run_dir, load_engine
from ..infer.loading import is_encoder_decoder, load_lm
from ..infer.precision import for_generation
from ..infer.scheduler import Target
from .security import ServeError

__all__ = ["Served", "load_served"]


@dataclass
class Served:
    name: str
    kind: str  # "model" | "adapter" | "run"
    source: str  # what was given on the command line (shown only to the operator)
    target: Target

    @property
    def engine(self) -> Engine:
        return self.target.engine


def _split(spec: str) -> tuple[str | None, str]:
    name, eq, rest = spec.partition("=")
    if eq and name and "/" not in name and not Path(spec).exists():
        return name, rest
    return None, spec


def _lora_run(path: Path):
    """The recipe of a complete sft run whose weights are a LoRA adapter (shareable over one base), or None."""
    from ..runs import RunDir

    recipe = RunDir.open_complete(path, "serve").read_config()
    if recipe.stage != "sft":
        raise ServeError(f"{path}: a {recipe.stage} run; serve needs an sft run (or a model folder)")
    return recipe if recipe.method.type == "lora" and (path / "adapter").is_dir() else None


def load_served(
    specs: list[str], dtype: str = "float32", trust_remote_code: bool = False
) -> dict[str, Served]:
    """Load every spec; LoRA runs over the same base model share one copy of it."""
    served: dict[str, Served] = {}
    plan = []
    for spec in specs:
        name, where = _split(spec)
        path = Path(where)
        if is_run_dir(path):
            recipe = _lora_run(path)
            plan.append((name or path.resolve().name, where, "adapter" if recipe else "run", recipe))
        else:
            plan.append((name or (path.name if path.exists() else where), where, "model", None))
    for name, *_ in plan:
        if sum(n == name for n, *_ in plan) > 1:
            raise ServeError(f"two models would be served as {name!r}: name them with NAME=PATH")
    adapter_bases = {r.model.name for _, _, kind, r in plan if kind == "adapter"}
    shared: dict[str, list] = {}  # base model name -> [peft model or None, base model, tokenizer]
    pending = []  # (name, kind, where, base name, template): served over a shared base
    for name, where, kind, recipe in plan:
        base_name = recipe.model.name if kind == "adapter" else where
        if kind == "run" or (kind == "model" and base_name not in adapter_bases):
            engine = load_engine(where, trust_remote_code=trust_remote_code, dtype=dtype)
            refuse_seq2seq(name, where, engine.model)
            served[name] = Served(name, kind, where, Target(name, engine))
            continue
        if base_name not in shared:
            base, tokenizer = load_lm(base_name, "float32", trust_remote_code)
            shared[base_name] = [None, for_generation(base, dtype), tokenizer]
            refuse_seq2seq(name, base_name, shared[base_name][1])
        group = shared[base_name]
        if kind == "adapter":
            group[0] = _add_adapter(group[0], group[1], Path(where) / "adapter", name)
        pending.append(
            (name, kind, where, base_name, getattr(recipe.task, "template", "auto") if recipe else "auto")
        )
    for name, kind, where, base_name, template in pending:
        peft, _, tokenizer = shared[base_name]
        engine = Engine(peft, tokenizer, template)
        target = Target(name, engine, _switch(peft, name if kind == "adapter" else None))
        served[name] = Served(name, kind, where, target)
    return {name: served[name] for name, *_ in plan}


def refuse_seq2seq(name: str, where: str, model) -> None:
    """An encoder-decoder model cannot join the server's decoder-only continuous batch: a ServeError."""
    if is_encoder_decoder(model):
        raise ServeError(
            f"{name} ({where}): an encoder-decoder ({model.config.model_type}) model; lmadapt serve decodes "
            "decoder-only (causal) models only. Use `lmadapt generate` or `lmadapt chat` for it"
        )


def _add_adapter(peft, base, folder: Path, name: str):
    from peft import PeftModel

    if peft is None:
        return PeftModel.from_pretrained(base, str(folder), adapter_name=name, is_trainable=False).eval()
    peft.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    return peft


def _switch(model, adapter: str | None):
    """Turn on `adapter` (or every adapter off, for the base model) before a batch runs."""

    def activate() -> None:
        if not hasattr(model, "base_model") or not hasattr(model, "set_adapter"):
            return
        if adapter is None:
            model.base_model.disable_adapter_layers()
        else:
            model.base_model.enable_adapter_layers()
            model.set_adapter(adapter)

    return activate
