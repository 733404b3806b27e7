"""Task heads for any backbone: token classification and span start/end on `AutoModel`'s hidden states.

transformers has `AutoModelForTokenClassification` / `AutoModelForQuestionAnswering` classes for most encoders
and many decoders, but not for every config (Gemma 3 text: "Unrecognized configuration class Gemma3TextConfig
for this kind of AutoModel"). Only for those, `tasks.base.build_model` uses the classes here instead: the
pretrained backbone, loaded by `AutoModel` (so any checkpoint layout transformers reads: a bare model or a
`*ForCausalLM` one), plus one new linear layer on its last hidden states. They are `PreTrainedModel`s, so
what works with a transformers head works with them: the Hugging Face `Trainer`; every method (the layer is
named as transformers names it, `score` / `qa_outputs`, so the methods find the head and PEFT trains and saves
it through `modules_to_save`); `save_pretrained` (safetensors) and `from_pretrained`, which reads a saved head
back and, given a base checkpoint instead, puts a new head on it.

A decoder sees only left context, so a word's tag (or an answer's start) is read from the words before it and
itself, never the ones after. `task.attention: bidirectional` (tag and span) drops the causal mask
(LLM2Vec-style, without LLM2Vec's masked next-token pretraining step: the task's own training adapts the
backbone) where transformers' modeling code has a flag for it that every attention implementation and the
sliding-window layers obey (`BIDIRECTIONAL`); `build_model` passes the flag into the backbone's config, so it
is saved with a full model, and a run's reload (which rebuilds the base from the recipe) gets it too.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import QuestionAnsweringModelOutput, TokenClassifierOutput

from ..errors import RecipeError

IGNORE = -100
# model type -> its config flag that drops the causal mask, checked in transformers 5's modeling code: Gemma 3
# text ORs an all-true mask into its full-attention masks and a symmetric window into its sliding-window ones,
# in eager and SDPA alike, and marks its attention modules non-causal (flash attention). Not listed though
# their configs have the field: Gemma and Gemma 2 read it only for the modules' SDPA `is_causal`, not for the
# mask; Gemma 3n's modeling code never reads it. Other decoders (Llama...): masking_utils reads a
# `config.is_causal = False`, but the attention modules keep `is_causal = True`, which flash attention obeys.
BIDIRECTIONAL = {"gemma3_text": "use_bidirectional_attention"}
# what that flag sets in a config: itself and, in Gemma 3, the sliding window
BIDIRECTIONAL_FIELDS = ("use_bidirectional_attention", "sliding_window")
# forward arguments meant for the wrapper (or the Trainer's loss), not for the backbone
NOT_FOR_BACKBONE = ("return_dict", "num_items_in_batch")


def bidirectional_kwargs(config: PreTrainedConfig, name: str) -> dict:
    """The config keyword arguments that make this model type attend both ways; a RecipeError naming the
    model type where it cannot."""
    flag = BIDIRECTIONAL.get(config.model_type)
    if flag is None:
        raise RecipeError(
            f"task.attention: bidirectional: model {name!r} (model type {config.model_type!r}) has no "
            f"bidirectional attention lmadapt can turn on (model types that have: {', '.join(BIDIRECTIONAL)}); "
            "an encoder attends both ways already. Use task.attention: causal"
        )
    # transformers sets a from_pretrained keyword on a config after building it, so the config's own
    # conversion for the flag (Gemma 3: a sliding window halved, as a bidirectional window reaches both ways)
    # would not run; take every value it changes from a config built with the flag, as a saved one reloads
    built = vars(type(config).from_dict({**config.to_dict(), flag: True}))
    return {
        key: value
        for key, value in built.items()
        if key in BIDIRECTIONAL_FIELDS and value != getattr(config, key)
    }


class BackboneModel(PreTrainedModel):
    """A pretrained backbone (`AutoModel`, under `.backbone`) that a subclass puts one task head on.

    `config` is the backbone's own config (any model type), with the task's `num_labels`/`id2label` added.
    """

    config_class = PreTrainedConfig  # any architecture's: a saved one is read back with AutoConfig
    base_model_prefix = "backbone"
    # the wrapper allows every attention implementation; the backbone checks its own support when it is built
    # (and a reload picks what AutoModel would for the backbone: see `from_pretrained`)
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = True

    def __init__(self, config, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config)
        self.supports_gradient_checkpointing = self.backbone.supports_gradient_checkpointing

    @classmethod
    def from_pretrained(cls, path, *args, config=None, **kwargs):
        """A saved model of this class (its head included), or a base checkpoint with a new head.

        For a base checkpoint, keyword arguments that are not loading options (`num_labels`, `id2label`, ...)
        go into the backbone's config, as with transformers' `AutoModelFor*`.
        """
        if config is None:
            options = {k: kwargs[k] for k in ("trust_remote_code", "revision") if k in kwargs}
            config = AutoConfig.from_pretrained(path, **options)
        if cls.__name__ not in (getattr(config, "architectures", None) or []):
            return cls.from_backbone(path, *args, **kwargs)
        backbone = AutoModel._model_mapping.get(type(config), None)  # the class AutoModel builds for it
        if "attn_implementation" not in kwargs and backbone is not None and not backbone._supports_sdpa:
            kwargs["attn_implementation"] = "eager"  # the default (SDPA) would be refused by the backbone
        return super().from_pretrained(path, *args, config=config, **kwargs)

    @classmethod
    def from_backbone(cls, path, *args, **kwargs):
        """The pretrained backbone at `path` and a new head, initialised as transformers initialises heads
        (normal, std `initializer_range`; the caller seeds torch to make it reproducible)."""
        backbone = AutoModel.from_pretrained(path, *args, **kwargs)
        return cls(backbone.config, backbone)

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def new_head(self, n_outputs: int) -> nn.Linear:
        """A linear layer from the backbone's hidden size, in the backbone's dtype."""
        hidden = self.config.get_text_config().hidden_size
        return nn.Linear(hidden, n_outputs, dtype=self.backbone.dtype)

    def backbone_outputs(self, input_ids, attention_mask, inputs_embeds, kwargs: dict):
        """The backbone's outputs; unset options (PEFT passes `output_attentions=None`...) are left out, and a
        decoder keeps no cache (each batch is one full forward pass)."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None and k not in NOT_FOR_BACKBONE}
        if getattr(self.config, "use_cache", None) is not None:
            kwargs["use_cache"] = False
        return self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
        )


class BackboneForTokenClassification(BackboneModel):
    """One label per token: dropout, then a linear layer on each token's last hidden state."""

    def __init__(self, config, backbone: PreTrainedModel | None = None):
        super().__init__(config, backbone)
        dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(0.1 if dropout is None else dropout)  # transformers' generic head's default
        self.score = self.new_head(config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):
        outputs = self.backbone_outputs(input_ids, attention_mask, inputs_embeds, kwargs)
        logits = self.score(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:  # the mean over the labelled tokens (IGNORE marks the others)
            loss = nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten().to(logits.device), ignore_index=IGNORE
            )
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class BackboneForQuestionAnswering(BackboneModel):
    """Extractive QA: a linear layer gives each token a start and an end score."""

    def __init__(self, config, backbone: PreTrainedModel | None = None):
        super().__init__(config, backbone)
        self.qa_outputs = self.new_head(2)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        inputs_embeds=None,
        start_positions=None,
        end_positions=None,
        **kwargs,
    ):
        outputs = self.backbone_outputs(input_ids, attention_mask, inputs_embeds, kwargs)
        start_logits, end_logits = (
            x.contiguous() for x in self.qa_outputs(outputs.last_hidden_state).unbind(-1)
        )
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def span_loss(start_logits, end_logits, start_positions, end_positions) -> torch.Tensor:
    """Mean of the start and end cross-entropies; positions past the sequence are ignored (as transformers'
    QA heads do)."""
    length = start_logits.size(1)
    starts = start_positions.to(start_logits.device).clamp(0, length)
    ends = end_positions.to(end_logits.device).clamp(0, length)
    start_loss = nn.functional.cross_entropy(start_logits.float(), starts, ignore_index=length)
    end_loss = nn.functional.cross_entropy(end_logits.float(), ends, ignore_index=length)
    return (start_loss + end_loss) / 2


# task type (lmadapt.methods) -> the head used where transformers has no AutoModelFor<Task> for the config
HEADS: dict[str, type[BackboneModel]] = {
    "token_cls": BackboneForTokenClassification,
    "span": BackboneForQuestionAnswering,
}
