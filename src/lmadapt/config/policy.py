"""Recipe fields that stages ppo, dpo and grpo share: where the policy starts, how long its answers may be."""

from __future__ import annotations

from pydantic import Field


def start_policy_field():
    """`policy:` an sft run folder to start from, or None for the recipe's `model:`."""
    return Field(
        None,
        description="A complete sft run folder to start from (a LoRA adapter is merged into the base, so the "
        "reference is the SFT policy); default: `model:` as it is.",
    )


def answer_length_field():
    """`max_new_tokens:` the sampled answers' length limit, or None for the generate task's."""
    return Field(None, ge=1, description="Answer length limit; default: the generate task's max_new_tokens.")
