"""Zero-shot and few-shot classification by generation: instruction, k demonstrations, the query, 'Answer:'.

The generated text is mapped back to the first label it names (`match_label`); an answer naming no label
counts as wrong. With `chat`, the whole prompt is one user message in the model's chat template.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .text import fill


def default_instruction(labels: Sequence[str]) -> str:
    return f"Classify the text as one of: {', '.join(labels)}. Reply with the label only."


def build_prompt(
    instruction: str,
    template: str,
    query: Mapping[str, object],
    demos: Sequence[tuple[Mapping[str, object], str]] = (),
    answer_cue: str = "Answer:",
) -> str:
    """instruction, then each demonstration (template + 'Answer: label'), then the query and the cue."""
    blocks = [instruction.strip()]
    blocks += [
        f"{fill(template, values, keep_mask=False)}\n{answer_cue} {answer}" for values, answer in demos
    ]
    blocks.append(f"{fill(template, query, keep_mask=False)}\n{answer_cue}")
    return "\n\n".join(blocks)


def as_inputs(prompts: Sequence[str], chat: bool) -> list:
    """Engine inputs: raw strings, or one-message conversations for chat-template models."""
    return [[{"role": "user", "content": p}] for p in prompts] if chat else list(prompts)


def generate_all(
    engine,
    inputs: Sequence,
    *,
    max_new_tokens: int,
    batch_size: int,
    stop: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy generation in chunks, so long runs report progress."""
    outputs: list[str] = []
    chunk = batch_size * 2
    for start in range(0, len(inputs), chunk):
        part = list(inputs[start : start + chunk])
        outputs += engine.generate(part, max_new_tokens=max_new_tokens, stop=stop, batch_size=batch_size)
        if progress:
            progress(len(part))
    return outputs
