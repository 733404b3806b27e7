"""`tfidf`: the non-neural floor, TF-IDF features + logistic regression (classify and pair tasks).

Only its recipe section lives here: it adapts no pretrained model, so it has no `METHOD`. It runs as a
baseline in place of stage finetune (lmadapt/baselines/tfidf.py, dispatched by `stages.BASELINES`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config.base import Section


class TfidfMethod(Section):
    """Non-neural floor: TF-IDF features + logistic regression (classify and pair tasks)."""

    type: Literal["tfidf"] = "tfidf"
    max_features: int = Field(50000, ge=1)
    ngram_max: int = Field(2, ge=1, le=3)
    C: float = Field(1.0, gt=0, description="Inverse regularisation strength.")


CONFIG = TfidfMethod
