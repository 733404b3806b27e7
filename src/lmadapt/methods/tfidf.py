"""`tfidf`: the non-neural floor, TF-IDF features + logistic regression (classify, pair, tag and span tasks).

Only its recipe section lives here: it adapts no pretrained model, so it has no `METHOD`. It runs as a
baseline in place of stage finetune (lmadapt/baselines/tfidf.py, dispatched by `stages.BASELINES`).
The defaults are what a practitioner would tune by hand: the analyzer follows the script of the training
text, C is chosen by cross-validation on the training split, and classes are weighted against imbalance.
For tag tasks each token is classified on its own, from the n-grams of the tokens in a window around it.
For span tasks (extractive QA) each sentence of the context is classified as the answer or not, and the best
one is the predicted span (sentence selection).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config.base import Section

# analyzer -> the longest n-grams cross-validation chooses from when the recipe sets no ngram_max
# (measured: docs/results-baselines.md)
NGRAM_MAX = {"word": (1, 2), "char": (2, 3), "char_wb": (4, 5), "window": (2, 3), "sentence": (1, 2)}


class TfidfMethod(Section):
    """Non-neural floor: TF-IDF features + logistic regression (classify, pair, tag and span tasks)."""

    type: Literal["tfidf"] = "tfidf"
    analyzer: Literal["auto", "word", "char", "char_wb", "window", "sentence"] = Field(
        "auto",
        description=(
            "Features: 'word' n-grams, 'char' n-grams, or 'char_wb' (character n-grams inside word "
            "boundaries). 'auto': 'char' when most letters of the training text are in a script written "
            "without spaces (Chinese, Japanese, Thai, Lao, Khmer, Myanmar), else 'word' and 'char_wb' 2-5 "
            "(the latter only while ngram_max is null), chosen between by the cross-validation that "
            "chooses C. Tag tasks use 'window' (which 'auto' means there): each token's features are the "
            "n-grams of the tokens within `window` of it, marked with their offset. Span tasks use 'sentence' "
            "(which 'auto' means there): each sentence of the context is scored as the answer from its word "
            "n-grams and position, crossed with the question's words; the best one is the predicted span."
        ),
    )
    window: int = Field(
        2,
        ge=0,
        le=5,
        description=(
            "Tag tasks: tokens on each side of a token whose n-grams are its features (2: a 5-token window; "
            "for Chinese characters, 5 characters)."
        ),
    )
    ngram_min: int = Field(1, ge=1, le=6, description="Shortest n-gram (in words or characters).")
    ngram_max: int | None = Field(
        None,
        ge=1,
        le=6,
        description=(
            "Longest n-gram; default (null): chosen by the cross-validation that chooses C, from word 1 or "
            "2, char 2 or 3, char_wb 4 or 5, window 2 or 3 (tokens), sentence 1 or 2 (words)."
        ),
    )
    max_features: int | None = Field(
        200_000, ge=1, description="Keep the most frequent terms of train (null: all of them)."
    )
    C: float | None = Field(
        None,
        gt=0,
        description="Inverse regularisation strength; default (null): chosen from C_grid by cross-validation.",
    )
    C_grid: list[float] = Field(
        [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
        min_length=1,
        description=(
            "Values of C tried by stratified (seeded, shuffled) k-fold cross-validation on train, scored "
            "by macro-F1 (tag tasks: folds of whole sentences, macro-F1 over the tokens' tags); the best is "
            "refitted on all of train."
        ),
    )
    cv_folds: int = Field(5, ge=2, le=20, description="Folds of that cross-validation.")
    class_weight: Literal["balanced", "none"] = Field(
        "balanced",
        description="'balanced' weighs each class by the inverse of its frequency in train; 'none': equal.",
    )

    @field_validator("C_grid")
    @classmethod
    def _positive(cls, grid: list[float]) -> list[float]:
        if any(c <= 0 for c in grid):
            raise ValueError(f"every C must be > 0, got {grid}")
        return sorted(set(grid))

    @model_validator(mode="after")
    def _ngram_order(self) -> TfidfMethod:
        if self.ngram_max is not None and self.ngram_max < self.ngram_min:
            raise ValueError(f"ngram_max ({self.ngram_max}) is below ngram_min ({self.ngram_min})")
        return self


CONFIG = TfidfMethod
