"""Chain-of-thought prompting with answer extraction (Kojima et al. 2022; Wei et al. 2022 for few-shot).

Step 1 asks for reasoning: the question, then the trigger ("Let's think step by step."). Step 2 appends the
reasoning and an answer-extraction prompt ("Therefore, the answer (one of: ...) is") and generates a short
answer that is mapped to a label. Few-shot CoT puts demonstrations before the question, each with its
rationale and answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .text import fill
from .zeroshot import generate_all


def question(instruction: str, template: str, values: Mapping[str, object]) -> str:
    return f"Q: {instruction.strip()}\n{fill(template, values, keep_mask=False)}"


def reasoning_prompt(
    instruction: str,
    template: str,
    query: Mapping[str, object],
    trigger: str,
    demos: Sequence[tuple[Mapping[str, object], str, str]] = (),
) -> str:
    """Demonstrations as (values, rationale, answer), then the question and 'A: <trigger>'."""
    blocks = [
        f"{question(instruction, template, values)}\nA: {rationale.strip()} So the answer is {answer}."
        for values, rationale, answer in demos
    ]
    blocks.append(f"{question(instruction, template, query)}\nA: {trigger}")
    return "\n\n".join(blocks)


def answer_prompt(reasoning_prompt_text: str, reasoning: str, extraction: str) -> str:
    return f"{reasoning_prompt_text} {reasoning.strip()}\n{extraction}"


def chain_of_thought(
    engine,
    prompts: Sequence[str],
    *,
    extraction: str,
    chat: bool,
    max_new_tokens: int,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[str], list[str]]:
    """Run both steps; returns (reasonings, answers)."""
    first = [[{"role": "user", "content": p}] for p in prompts] if chat else list(prompts)
    reasonings = generate_all(
        engine,
        first,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop=["\n\nQ:"],
        progress=progress,
    )
    if chat:
        second = [
            [*conv, {"role": "assistant", "content": r.strip()}, {"role": "user", "content": extraction}]
            for conv, r in zip(first, reasonings, strict=True)
        ]
    else:
        second = [answer_prompt(p, r, extraction) for p, r in zip(prompts, reasonings, strict=True)]
    answers = generate_all(engine, second, max_new_tokens=16, batch_size=batch_size, stop=["\n"])
    return reasonings, answers
