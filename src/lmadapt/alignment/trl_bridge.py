"""What stages dpo and grpo share around TRL's trainers: the config built from the shared TrainingArguments,
and preference / prompt records rendered with the project's templates.

TRL's DPOConfig and GRPOConfig subclass transformers' TrainingArguments. Building them from
training/arguments.py's `training_arguments` (every init field copied over) keeps one mapping from the
recipe's `train:` section to the Trainer, and overrides TRL's own defaults that differ from the other stages
(TRL turns on gradient checkpointing and bf16 by default; a recipe says what it wants).
"""

from __future__ import annotations

import dataclasses


def trl_config(config_class, base, **extra):
    """`config_class` (DPOConfig, GRPOConfig) with every TrainingArguments field of `base`, plus `extra`."""
    from transformers import TrainingArguments

    shared = {f.name: getattr(base, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    return config_class(**(shared | extra))


def render_pair(tokenizer, template: str, prompt, chosen: str, rejected: str) -> dict:
    """{prompt, chosen, rejected} as text: the prompt through the template, each answer as the rest of the
    rendered conversation (its end-of-turn marker included), so DPO sees what stage sft trained on."""
    from ..tasks.preference import prompt_messages
    from ..templates import render, render_prompt

    messages = prompt_messages(prompt)
    head = render_prompt(tokenizer, messages, template)

    def answer(text: str) -> str:
        full = render(tokenizer, [*messages, {"role": "assistant", "content": text}], template, False)
        return (full[len(head) :] if full.startswith(head) else text).rstrip()

    return {"prompt": head, "chosen": answer(chosen), "rejected": answer(rejected)}


def best_vs_rest(record: dict) -> list[tuple[int, int]]:
    """The (chosen, rejected) pairs DPO trains on: a pair as is; a K-wise ranking as its best answer against
    each other answer (K - 1 pairs, skipping ties with the best). All C(K, 2) pairs would weight the
    middle of a ranking as much as its top; DPO's data are usually best-vs-other (as in UltraFeedback)."""
    scores = record.get("scores")
    k = len(record["responses"])
    return [(0, j) for j in range(1, k) if scores is None or scores[0] > scores[j]]


def lora_for_trl(model, method_cfg):
    """(plain model, peft_config) for TRL: the project's method builds (and checks) the LoRA config, TRL
    applies it, so TRL's reference is this model with the adapter switched off. (model, None) otherwise."""
    from ..methods import apply_method

    if method_cfg.type != "lora":
        return apply_method(model, method_cfg, "causal_lm"), None
    wrapped = apply_method(model, method_cfg, "causal_lm")
    config = wrapped.peft_config["default"]
    return wrapped.unload(), config
