"""`keyphrase`: the unsupervised floor for keyword extraction, TF-IDF-ranked candidate phrases (keywords tasks).

Only its recipe section lives here: it adapts no pretrained model, so it has no `METHOD`. It runs as a
baseline in place of stage finetune (lmadapt/baselines/keyphrase.py, dispatched by `stages.BASELINES`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config.base import Section


class KeyphraseMethod(Section):
    """Unsupervised keyword floor: candidate phrases of the text ranked by TF-IDF, the top k kept."""

    type: Literal["keyphrase"] = "keyphrase"
    top_k: int = Field(
        7,
        ge=1,
        le=100,
        description=(
            "Keywords predicted per document (pubmed-keywords validation: 5 to 7 score alike, 10 lower)."
        ),
    )
    max_words: int = Field(3, ge=1, le=8, description="Longest candidate phrase, in words.")
    first_field_weight: float = Field(
        3.0,
        ge=0,
        description=(
            "An occurrence in the first text field (the title) counts this many times (1: like any other)."
        ),
    )
    min_df: int = Field(
        2,
        ge=1,
        description="Phrases in fewer training documents than this are not stored (they count as unseen).",
    )


CONFIG = KeyphraseMethod
