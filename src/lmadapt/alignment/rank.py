"""`lmadapt rank RECIPE`: K-wise ranking data the InstructGPT way, for `stage: rm`.

For each prompt of the recipe's `rank.split` the policy (an sft run folder or a model, through the shared
inference engine) samples K answers; a scorer orders them best first: a person at the terminal (`human`),
a reward-model run, a task metric against the record's gold answer, or a Python function (the `reward:`
sources of lmadapt/alignment/rewards.py). Each ranked prompt is appended to `rank.output` as one JSON line:

    {"key": ..., "id": ..., "prompt": [{role, content}], "responses": [best, ..., worst],
     "scores": [...] | null, "gold": ..., "provenance": {policy, template, k, temperature, top_p, top_k,
     max_new_tokens, seed, scorer, lmadapt, created}}

`stage: rm` reads it with `task: {type: preference, responses: responses, scores: scores}`; equal scores
are ties (no pair is formed between them). `scores` is null for a person's order (every answer ranks apart).

Resumable: prompts whose `key` is in the output already are skipped (a torn last line is cut off). Prompts
are sampled in fixed batches, each with seed `rank.seed + batch number`, and a batch is sampled whole even
when some of its prompts are done, so a resumed run samples exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ..errors import DataError, LmadaptError, RecipeError
from ..utils.io import append_jsonl, read_appendable_jsonl

__all__ = ["rank", "ask_order", "parse_order", "prompt_key"]


def rank(recipe, ask: Callable[[str], str] = input, show: Callable[[str], None] = print) -> Path:
    """Rank the prompts of `recipe.rank` into its output file (appending); returns the file.

    `ask` / `show` are the terminal for a human scorer (input / print; tests pass their own)."""
    from ..infer.engine import load_engine

    cfg = recipe.rank
    if cfg is None:
        raise RecipeError("the recipe has no rank: section (see recipes/align/)")
    records = load_prompts(recipe)
    keys = [prompt_key(recipe, r) for r in records]
    output = Path(cfg.output)
    done = {r.get("key") for r in read_rankings(output)}
    todo = {i for i, key in enumerate(keys) if key not in done}
    show(
        f"rank: {len(records)} prompts of data.{cfg.split}; {len(records) - len(todo)} ranked already in {output}"
    )
    if not todo:
        return output
    if recipe.train.num_threads:
        import torch

        torch.set_num_threads(recipe.train.num_threads)
    scorer = None if cfg.scorer == "human" else _scorer(cfg.scorer, recipe)
    engine = load_engine(cfg.policy or recipe.model.name, trust_remote_code=recipe.model.trust_remote_code)
    records = fit_prompts(records, recipe, engine)
    output.parent.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, len(records), cfg.batch_size)):
        batch = list(range(start, min(start + cfg.batch_size, len(records))))
        if not todo.intersection(batch):
            continue
        samples = sample_answers(engine, recipe, [records[i] for i in batch], cfg.seed + number)
        for i, answers in zip(batch, samples, strict=True):
            if i not in todo:
                continue
            row = rank_answers(recipe, records[i], answers, scorer, ask, show)
            if row is None:  # the person quit: what is ranked so far is kept
                return output
            row = {"key": keys[i], **row}
            row["provenance"] |= {"template": engine.template, "seed": cfg.seed + number}
            append_jsonl(output, row)
        show(f"rank: {min(start + cfg.batch_size, len(records))}/{len(records)} prompts")
    return output


def rank_answers(recipe, record: dict, answers: list[str], scorer, ask, show) -> dict | None:
    """The output row of one prompt: its answers ordered by the scorer (or the person; None if they quit)."""
    prompt = _prompt_messages(recipe.task, record)
    if scorer is None:
        order, scores = ask_order(prompt, answers, ask, show), None
        if order is None:
            return None
    else:
        values = scorer([prompt] * len(answers), answers, [record] * len(answers))
        order = sorted(range(len(answers)), key=lambda j: -values[j])  # stable: ties keep the sample order
        scores = [round(values[j], 6) for j in order]
    row = ranking_row(recipe, record, prompt, answers, order, scores)
    row["provenance"]["scorer"] = scorer.name if scorer else "human"
    return row


def fit_prompts(records: list[dict], recipe, engine) -> list[dict]:
    """Generate-task records with their last input field cut as stage sft cuts them (prompt + gold answer
    within train.max_length), so the policy is asked what it was trained and evaluated on."""
    if recipe.task.type != "generate":
        return records
    from ..stages.sft import fit_record

    length = recipe.train.max_length
    return [fit_record(r, recipe.task, engine.tokenizer, engine.template, length)[0] for r in records]


def load_prompts(recipe) -> list[dict]:
    """The records of `rank.split` (a seeded subset of `rank.max_prompts`), checked for the task's fields."""
    from ..data import load_split, subset

    task, cfg = recipe.task, recipe.rank
    if task.type == "generate":
        from ..generative import record_fields

        fields = record_fields(task)
    elif task.type == "sft":
        fields = {}
    else:
        raise RecipeError(f"rank: task type {task.type!r} has no prompts to sample for; use generate or sft")
    split = getattr(recipe.data, cfg.split)
    if split is None:
        raise RecipeError(f"rank.split is {cfg.split}, but data.{cfg.split} is null")
    records = subset(load_split(recipe.data.source, split, fields), cfg.max_prompts, cfg.seed)
    if not records:
        raise DataError(f"data.{cfg.split}: no prompts to rank")
    return records


def sample_answers(engine, recipe, records: list[dict], seed: int) -> list[list[str]]:
    """K sampled answers per record (each prompt repeated K times in one generation batch)."""
    cfg, task = recipe.rank, recipe.task
    max_new = cfg.max_new_tokens or getattr(task, "max_new_tokens", None) or 128
    prompts = [_prompt_messages(task, r) for r in records for _ in range(cfg.k)]
    outputs = engine.generate(
        prompts, max_new_tokens=max_new, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
        top_k=cfg.top_k, batch_size=cfg.batch_size * cfg.k, seed=seed,
    )  # fmt: skip
    return [outputs[i : i + cfg.k] for i in range(0, len(outputs), cfg.k)]


def ranking_row(recipe, record, prompt, answers, order, scores) -> dict:
    """One output line: the prompt, the answers best first, their scores, the gold answer, provenance."""
    from .. import __version__

    cfg, task = recipe.rank, recipe.task
    id_field = getattr(task, "id", None)
    return {
        "id": record.get(id_field) if id_field else None,
        "prompt": prompt,
        "responses": [answers[j] for j in order],
        "scores": scores,
        "sample_order": order,  # which sample (0..K-1) each ranked answer was
        "gold": record.get(task.target) if task.type == "generate" else None,
        "provenance": {
            "policy": cfg.policy or recipe.model.name, "k": cfg.k,
            "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k,
            "max_new_tokens": cfg.max_new_tokens or getattr(task, "max_new_tokens", None) or 128,
            "lmadapt": __version__, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }  # fmt: skip


def prompt_key(recipe, record: dict) -> str:
    """What identifies a prompt across reruns: its id field, else a hash of the prompt's messages."""
    id_field = getattr(recipe.task, "id", None)
    if id_field and record.get(id_field) not in (None, ""):
        return f"id:{record[id_field]}"
    text = json.dumps(_prompt_messages(recipe.task, record), ensure_ascii=False, sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _prompt_messages(task, record: dict) -> list[dict]:
    if task.type == "generate":
        from ..generative import prompt_messages

        return prompt_messages(task, record)
    from ..templates import to_messages

    messages = to_messages(record, task.system)
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def _scorer(reward_cfg, recipe):
    from .rewards import build_reward

    return build_reward(reward_cfg, task=recipe.task, trust_remote_code=recipe.model.trust_remote_code)


# --- a person ranks ---------------------------------------------------------------------------------------
def ask_order(prompt: list[dict], answers: list[str], ask=input, show=print) -> list[int] | None:
    """Show the prompt and the K answers; read an order such as `2 1 4 3` (best first). None: quit."""
    show("\n" + "=" * 78)
    for message in prompt:
        show(f"[{message['role']}] {_clip(message['content'], 1500)}")
    for j, answer in enumerate(answers, start=1):
        show(f"--- answer {j} ---\n{_clip(answer, 1500)}")
    while True:
        reply = ask(
            f"order best first (e.g. {' '.join(str(j) for j in range(1, len(answers) + 1))}), q quits: "
        )
        if reply.strip().lower() in ("q", "quit", "exit"):
            return None
        try:
            return parse_order(reply, len(answers))
        except ValueError as exc:
            show(f"  {exc}")


def parse_order(reply: str, k: int) -> list[int]:
    """'2 1 4 3' (or '2,1,4,3', or '2143' for K < 10) -> 0-based sample indices, best first."""
    text = reply.replace(",", " ").strip()
    parts = text.split() if " " in text or k >= 10 else list(text)
    try:
        order = [int(p) - 1 for p in parts]
    except ValueError:
        raise ValueError(f"{reply!r}: give the answer numbers 1..{k}, best first") from None
    if sorted(order) != list(range(k)):
        raise ValueError(f"{reply!r}: name each of the answers 1..{k} exactly once, best first")
    return order


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" ... [{len(text) - limit} more characters]"


# --- the output file ----------------------------------------------------------------------------------------
def read_rankings(path: Path) -> list[dict]:
    """The rankings written so far. A torn last line (killed mid-write) is cut off; a bad line before the end
    is a DataError naming it."""
    records = read_appendable_jsonl(path)
    if records and not all(isinstance(r, dict) and "key" in r for r in records):
        raise LmadaptError(f"{path}: not a rankings file of `lmadapt rank` (lines without a key)")
    return records
