"""`sft`: instruction tuning on Alpaca records or `messages` conversations, the loss on assistant tokens only.

Only its recipe section lives here; stage sft (lmadapt/stages/sft.py) trains it, so there is no encoder
`TASK`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config.base import Section


class SftConfig(Section):
    """Instruction tuning: Alpaca records or `messages` conversations; loss on assistant tokens only."""

    type: Literal["sft"] = "sft"
    format: Literal["auto", "alpaca", "messages"] = Field(
        "auto", description="Record shape; auto detects it."
    )
    template: Literal["auto", "model", "alpaca", "plain"] = Field(
        "auto", description="auto: the model's chat template if it has one, else alpaca."
    )
    system: str | None = Field(None, description="System prompt added to every example without one.")


CONFIG = SftConfig
