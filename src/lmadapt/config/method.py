"""`method:` how the pretrained weights are adapted. Chosen by `type`; one module each in lmadapt.methods."""

from typing import Annotated, Literal

from pydantic import Field

from .base import Section


class FullMethod(Section):
    """Train every parameter."""

    type: Literal["full"] = "full"


class FreezeMethod(Section):
    """Feature extraction: backbone frozen, an MLP head trained; optionally unfreeze the top N layers."""

    type: Literal["freeze"] = "freeze"
    unfreeze_top: int = Field(0, ge=0, description="Number of top transformer layers left trainable.")
    head_hidden: int = Field(512, ge=1, description="Hidden size of the MLP head (encoder tasks).")
    head_dropout: float = Field(0.1, ge=0, lt=1)
    pooling: Literal["mean", "cls"] = Field(
        "mean", description="seq_cls: feed the head the masked mean of token states, or the [CLS] pooler."
    )


class LoraMethod(Section):
    type: Literal["lora"] = "lora"
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(
        0.05,
        ge=0,
        lt=1,
        description=(
            "Dropout on each adapted layer's input. Not free: every adapted layer keeps its own dropped copy "
            "for backward (SmolLM2, all-linear, CPU: 0.05 costs +54% training time and +0.9 GB); the "
            "shipped SFT recipes use 0."
        ),
    )
    target: list[str] | Literal["all-linear"] | None = Field(
        None, description="Module names to adapt; default: PEFT's choice for the architecture."
    )


class AdapterMethod(Section):
    """Bottleneck adapters (Houlsby) after attention and after the feed-forward block of every layer."""

    type: Literal["adapter"] = "adapter"
    bottleneck: int = Field(64, ge=1, description="Adapter hidden size.")
    dropout: float = Field(0.0, ge=0, lt=1)


class PrefixMethod(Section):
    type: Literal["prefix"] = "prefix"
    num_virtual_tokens: int = Field(20, ge=1)
    projection: bool = Field(False, description="Reparameterise the prefix through an MLP.")


class PromptMethod(Section):
    type: Literal["prompt"] = "prompt"
    num_virtual_tokens: int = Field(20, ge=1)
    init_text: str | None = Field(None, description="Initialise the soft prompt from this text's embeddings.")


class PtuningMethod(Section):
    type: Literal["ptuning"] = "ptuning"
    num_virtual_tokens: int = Field(20, ge=1)
    encoder_hidden_size: int = Field(128, ge=1)
    encoder_type: Literal["mlp", "lstm"] = "mlp"


class Ia3Method(Section):
    type: Literal["ia3"] = "ia3"
    target: list[str] | None = Field(None, description="Modules to rescale; default: PEFT's choice.")
    feedforward: list[str] | None = Field(None, description="Which of `target` are feed-forward modules.")


class TfidfMethod(Section):
    """Non-neural floor: TF-IDF features + logistic regression (classify and pair tasks)."""

    type: Literal["tfidf"] = "tfidf"
    max_features: int = Field(50000, ge=1)
    ngram_max: int = Field(2, ge=1, le=3)
    C: float = Field(1.0, gt=0, description="Inverse regularisation strength.")


MethodConfig = Annotated[
    FullMethod
    | FreezeMethod
    | LoraMethod
    | AdapterMethod
    | PrefixMethod
    | PromptMethod
    | PtuningMethod
    | Ia3Method
    | TfidfMethod,
    Field(discriminator="type"),
]
