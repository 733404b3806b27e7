"""`lmadapt generate`: one generation per record of a file, written as JSONL (the record plus `output`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..templates import to_messages

__all__ = ["record_prompt", "generate_file"]


def record_prompt(record) -> str | list[dict]:
    """A record's prompt: `prompt` (text, verbatim), `messages` (chat; a final assistant turn is left out),
    or an Alpaca `instruction` (+ `input`, `system`, `history`) rendered as chat."""
    if isinstance(record.get("prompt"), str) and record["prompt"]:
        return record["prompt"]
    if isinstance(record.get("messages"), list) and record["messages"]:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        return messages[:-1] if messages[-1]["role"] == "assistant" and len(messages) > 1 else messages
    if isinstance(record.get("instruction"), str) and record["instruction"]:
        return to_messages({k: v for k, v in record.items() if k != "output"})
    where = getattr(record, "where", "") or "input"
    raise DataError(f"{where}: expected a non-empty 'prompt', 'messages' or 'instruction' field")


def generate_file(
    model_or_run: str,
    input: str | Path,
    output: str | Path,
    batch_size: int = 8,
    trust_remote_code: bool = False,
    dtype: str = "auto",
    **decoding,
) -> int:
    """Generate for every record of `input` (.jsonl .json .csv .tsv .parquet); write `output` JSONL; return count."""
    from tqdm.auto import tqdm

    from ..data import read_records
    from ..utils.io import write_jsonl
    from .engine import load_engine

    records = read_records(input)
    prompts = [record_prompt(r) for r in records]
    engine = load_engine(model_or_run, trust_remote_code=trust_remote_code, dtype=dtype)
    outputs: list[str] = []
    chunk = batch_size * 4
    for start in tqdm(range(0, len(prompts), chunk), desc="generating", unit="chunk"):
        outputs += engine.generate(prompts[start : start + chunk], batch_size=batch_size, **decoding)
    write_jsonl(output, [dict(r) | {"output": o} for r, o in zip(records, outputs, strict=True)])
    return len(outputs)
