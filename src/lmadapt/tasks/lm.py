"""`lm`: self-supervised (continued) pretraining on raw text: causal LM, masked LM, next-sentence prediction,
span corruption (T5), blank infilling (GLM).

Only its recipe section lives here; stage pretrain (lmadapt/stages/pretrain.py) trains it, with the corpus
readers and example builders of lmadapt/data/corpus.py and the batching of lmadapt/training/lm_collator.py,
so there is no encoder `TASK`. `train.max_length` is the block width (clm, mlm) or the longest sentence pair
(nsp) in tokens, special tokens included.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config.base import Section
from ..config.fields import FieldNames, as_list

OBJECTIVES = ("clm", "mlm", "nsp", "mlm+nsp", "span_corruption", "blank_infilling")


class LmConfig(Section):
    """Pretraining on raw text: `objective` says what the model learns to predict."""

    type: Literal["lm"] = "lm"
    objective: Literal["clm", "mlm", "nsp", "mlm+nsp", "span_corruption", "blank_infilling"] = Field(
        description=(
            "clm: next token (decoders); mlm: masked tokens (BERT-style encoders); nsp: is sentence B the "
            "one after A; mlm+nsp: both heads at once, as BERT was pretrained; span_corruption: T5's "
            "objective for encoder-decoder models (dropped spans -> sentinels in the input, the spans decoded); "
            "blank_infilling: GLM's objective for decoder-only models (each sampled span -> one [MASK] in a "
            "bidirectional Part A; the spans, shuffled, generated after it as Part B, [START] span [END]; "
            "2-D positions). [MASK]/[START]/[END] are added to the tokenizer if missing; the learned second "
            "position embedding is training scaffolding: model/ is the plain causal LM, the embedding is "
            "saved beside it (block_positions.safetensors) for a later blank_infilling run."
        )
    )
    text: FieldNames = Field(
        ["text"], description="Record field(s) holding the text (JSONL/CSV/datasets); several are joined."
    )
    documents: Literal["blank-line", "line"] = Field(
        "blank-line",
        description=".txt files: one document per blank-line-separated block, or one per line.",
    )
    pack: bool = Field(
        True,
        description=(
            "clm/mlm: join documents (EOS / [SEP] between them) and cut into train.max_length blocks, no "
            "padding; false: one example per document, truncated to train.max_length."
        ),
    )
    mlm_probability: float = Field(
        0.15, gt=0, lt=1, description="mlm: share of tokens chosen for prediction."
    )
    mask_replace_prob: float = Field(
        0.8, ge=0, le=1, description="mlm: of the chosen tokens, the share replaced by [MASK]."
    )
    random_replace_prob: float = Field(
        0.1, ge=0, le=1, description="mlm: of the chosen tokens, the share replaced by a random token."
    )
    whole_word: bool = Field(
        False, description="mlm: choose whole words (all their sub-word tokens at once), not single tokens."
    )
    noise_density: float = Field(
        0.15,
        gt=0,
        lt=1,
        description="span_corruption: share of each block's tokens that are dropped; blank_infilling: masked.",
    )
    mean_span_length: float = Field(
        3.0,
        ge=1,
        description=(
            "span_corruption: mean length of a dropped span, in tokens; blank_infilling: the Poisson lambda "
            "of the span lengths (GLM: 3)."
        ),
    )
    nsp_classes: Literal[2, 3] = Field(
        2,
        description=(
            "nsp: 2 = next sentence / random sentence of another document (BERT); 3 = next sentence / "
            "another sentence of the same document / a sentence of another document."
        ),
    )
    pseudo_perplexity_examples: int = Field(
        32,
        ge=0,
        description=(
            "mlm: held-out texts scored by pseudo-perplexity (each token masked in turn: one forward per "
            "token), before and after training; 0 skips it."
        ),
    )

    _list = field_validator("text", mode="before")(as_list)

    @model_validator(mode="after")
    def _replacement_split(self):
        if self.mask_replace_prob + self.random_replace_prob > 1 + 1e-9:
            raise ValueError(
                f"mask_replace_prob + random_replace_prob is {self.mask_replace_prob + self.random_replace_prob}"
                " but must be at most 1 (the rest of the chosen tokens stay unchanged)"
            )
        return self

    @property
    def masked(self) -> bool:
        """The objective predicts masked tokens."""
        return self.objective in ("mlm", "mlm+nsp")

    @property
    def pairs(self) -> bool:
        """The objective classifies sentence pairs."""
        return self.objective in ("nsp", "mlm+nsp")


CONFIG = LmConfig
