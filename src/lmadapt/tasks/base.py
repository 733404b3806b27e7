"""What every encoder task shares: the `Task` interface, features, model building and batched inference.

A task turns records (validated dicts from `lmadapt.data.load_split`) into model features, names the
`AutoModelFor*` head it needs (where transformers has none for an architecture, `build_model` puts
lmadapt's own head from `tasks.heads` on the backbone), turns the head's per-feature outputs back into one
prediction per record, and scores predictions against gold values. The finetune stage, the tfidf baseline
and `predict` all go through these same functions, so training, evaluation and prediction cannot drift
apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..errors import RecipeError

# `task.attention` of the token-level tasks (tag, span): one option, one description, applied in build_model
Attention = Literal["causal", "bidirectional"]
ATTENTION = Field(
    "causal",
    description=(
        "causal: the backbone's own attention (a decoder reads each token from the tokens before it and "
        "itself). bidirectional: every token also sees the tokens after it (LLM2Vec-style, the causal mask "
        "dropped; no masked-token pretraining step, the task training adapts to it): only for decoders whose "
        "transformers code has a flag for it (Gemma 3 text); any other model, an encoder included (it is "
        "bidirectional already), is a recipe error."
    ),
)


@dataclass
class Encoded:
    """Features for the model (`features`), and for each one the record it came from plus decoding info."""

    features: list[dict]
    example: list[int]
    extra: list[dict] = field(default_factory=list)


class Task:
    """Base class; one subclass per task type (one module each)."""

    task_type: str = "seq_cls"  # what lmadapt.methods calls it
    head: str = "AutoModelForSequenceClassification"
    default_metrics: tuple[str, ...] = ()
    best_metric: str = ""
    label_names: tuple[str, ...] = ("labels",)

    def __init__(self, cfg):
        self.cfg = cfg
        self.labels: list[str] | None = getattr(cfg, "labels", None)

    # --- data -------------------------------------------------------------------------------------
    def fields(self, with_gold: bool = True) -> dict[str, str]:
        """Field name -> kind, for `load_split`."""
        raise NotImplementedError

    def gold_fields(self, fields: dict[str, str], gold: str | None) -> dict[str, str]:
        """`fields`, where the recipe lists the labels, with the gold field held to them (checked on read)."""
        if gold is None or not self.labels:
            return fields
        from ..data import Fields

        return Fields(fields, allowed={gold: (self.labels, "task.labels")})

    def id_fields(self) -> dict[str, str]:
        # optional: records without an id are numbered by position
        return {self.cfg.id: "label?"} if getattr(self.cfg, "id", None) else {}

    def fit_labels(self, train: list[dict]) -> list[str] | None:
        """Fix the label set (from the recipe, else from the training records) and return it."""
        return self.labels

    def findings(self, splits: dict[str, list[dict]]) -> tuple[dict, list[str]]:
        """What the task found in the data once its labels are fixed: facts for metrics.json's `task`, and
        lines for the run log ("warning: ..." for what the user should look at). None by default."""
        return {}, []

    def gold(self, record: dict) -> Any:
        raise NotImplementedError

    def record_id(self, record: dict, index: int) -> Any:
        value = record.get(getattr(self.cfg, "id", None) or "id")
        return index if value in (None, "") else value

    # --- model ------------------------------------------------------------------------------------
    def model_kwargs(self) -> dict:
        """Keyword arguments for the head's `from_pretrained` (label count and names)."""
        labels = self.labels or []
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }

    def encode(self, records: list[dict], tokenizer, max_length: int, with_gold: bool = True) -> Encoded:
        raise NotImplementedError

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # --- outputs ----------------------------------------------------------------------------------
    def decode(self, outputs: list[np.ndarray], encoded: Encoded, n_records: int) -> list[Any]:
        """Per-feature head outputs -> one prediction per record."""
        raise NotImplementedError

    def score(self, golds: list[Any], preds: list[Any]) -> dict[str, float]:
        raise NotImplementedError

    def report(self, golds: list[Any], preds: list[Any]) -> dict[str, Any]:
        """Extra detail for report.json (per-class scores, confusion matrix); empty by default."""
        return {}

    def select(self, metrics: dict[str, float], wanted: list[str] | None) -> dict[str, float]:
        """Keep the metrics a recipe asks for (`eval.metrics`); unknown names are recipe errors."""
        if not wanted:
            return metrics
        unknown = [m for m in wanted if m not in metrics]
        if unknown:
            raise RecipeError(
                f"eval.metrics: {unknown} not computed for task '{self.cfg.type}' "
                f"(available: {', '.join(sorted(metrics))})"
            )
        return {k: metrics[k] for k in wanted}


def label_error(path: str, value: Any, labels: list[str]) -> RecipeError:
    return RecipeError(f"{path}: label {value!r} is not in the label set {labels}")


TOKEN_LEVEL = ("token_cls", "span")  # task types whose head gives one output per token


def build_model(model_cfg, task: Task, seed: int = 0):
    """The pretrained model with `task`'s head and its tokenizer.

    Weights the checkpoint lacks (the new head, sometimes a pooler) are initialised from `seed`, so a run
    and its later reload start from the same base: frozen-but-fresh weights are not saved by every method.
    """
    import torch
    import transformers

    from ..sources import model_load_errors, resolve_model

    path = resolve_model(model_cfg.name)
    common = {"trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.revision:
        common["revision"] = model_cfg.revision
    with model_load_errors(model_cfg.name):  # a folder that is not a model: a clear error, no traceback
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, **common)
    if not tokenizer.is_fast:
        raise RecipeError(f"model {model_cfg.name!r}: a fast tokenizer is needed (offsets and word ids)")
    attention = attention_kwargs(getattr(task.cfg, "attention", "causal"), model_cfg.name, path, common)
    torch.manual_seed(seed)
    with model_load_errors(model_cfg.name):
        model = head_class(task, path, common).from_pretrained(
            path, dtype=getattr(torch, model_cfg.dtype), **task.model_kwargs(), **attention, **common
        )
    if tokenizer.pad_token is None:  # decoder tokenizers: pad with EOS so batches can be padded
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if task.task_type in TOKEN_LEVEL:
        # Per-token outputs are read from the start of each padded row (`run_inference`,
        # `split_trainer_outputs`), and a decoder numbers positions from the row's start: both need right
        # padding, which decoder tokenizers (Gemma 3's, left) do not always have.
        tokenizer.padding_side = "right"
    return model, tokenizer


def attention_kwargs(attention: str, name: str, path: str, common: dict) -> dict:
    """Config keyword arguments for `task.attention` ({} for causal); a RecipeError where the model has no
    way to attend both ways (lmadapt.tasks.heads.BIDIRECTIONAL says which model types do)."""
    if attention == "causal":
        return {}
    import transformers

    from ..sources import model_load_errors
    from .heads import bidirectional_kwargs

    with model_load_errors(name):
        config = transformers.AutoConfig.from_pretrained(path, **common)
    return bidirectional_kwargs(config, name)


def head_class(task: Task, path: str, common: dict):
    """transformers' `AutoModelFor<Task>` class (`task.head`), or, where it has none for this architecture,
    lmadapt's own head on the backbone's hidden states (lmadapt.tasks.heads)."""
    import transformers

    auto = getattr(transformers, task.head)
    config = transformers.AutoConfig.from_pretrained(path, **common)
    # `_model_mapping`: the config classes the Auto class serves; remote code names its own in `auto_map`
    if type(config) in auto._model_mapping or task.head in (getattr(config, "auto_map", None) or {}):
        return auto
    from .heads import HEADS

    return HEADS.get(task.task_type, auto)  # no head of ours for this task: the Auto class says why not


def run_inference(model, features: list[dict], collator, batch_size: int = 32) -> list[np.ndarray]:
    """Run the head over `features` in length-sorted batches; return each feature's output, unpadded.

    Sequence heads give [num_labels]; token heads [length, num_labels]; span heads [length, 2] (start, end).
    """
    import torch

    model.eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    outputs: list[np.ndarray | None] = [None] * len(features)
    drop = {"labels", "start_positions", "end_positions"}
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = collator([{k: v for k, v in features[i].items() if k not in drop} for i in idx])
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            if getattr(out, "start_logits", None) is not None:
                logits = torch.stack([out.start_logits, out.end_logits], dim=-1)
            else:
                logits = out.logits
            logits = logits.float().cpu().numpy()
            for row, i in enumerate(idx):
                value = logits[row]
                outputs[i] = value[: len(features[i]["input_ids"])] if value.ndim == 2 else value
    return outputs  # type: ignore[return-value]


def split_trainer_outputs(predictions, features: list[dict]) -> list[np.ndarray]:
    """Trainer's concatenated, -100-padded eval outputs -> per-feature arrays as `run_inference` gives."""
    if isinstance(predictions, tuple):
        if (
            len(predictions) == 2
            and predictions[0].ndim == 2
            and predictions[0].shape == predictions[1].shape
        ):
            predictions = np.stack(predictions, axis=-1)  # span head: (start, end)
        else:
            predictions = predictions[0]
    out = []
    for i, feat in enumerate(features):
        value = predictions[i]
        out.append(value[: len(feat["input_ids"])] if value.ndim == 2 else value)
    return out
