"""Greedy agreement between precisions: lmadapt bf16 vs fp32, and llama.cpp's own bf16 vs f32 as the yardstick.

    python bench/agreement.py --prompts 50 --max-tokens 64 [--llama-server PATH/llama-server]

The first `--prompts` AlpacaEval instructions (`lmadapt data pull alpacaeval`), each rendered with the model's
chat template into token ids once; every engine continues the same ids greedily. For each pair of engines:
the share of prompts whose continuations are identical token for token, and the mean number of leading tokens
they share (a divergence late in a reply matters less than one at its start). With `--llama-server`, the
model is converted to f32 and bf16 GGUFs by llama.cpp's converter (lmadapt.export) and llama-server answers
`/completion` with the same token ids (temperature 0: greedy), so both engines' precision effects are
measured on the same prompts and weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parent))
from side_by_side import free_port, wait_ready  # noqa: E402


def prompts_ids(engine, n: int) -> list[list[int]]:
    from lmadapt.sources import resolve_dataset

    rows = [json.loads(line) for line in (Path(resolve_dataset("alpacaeval")) / "test.jsonl").open()]
    return [engine.encode([{"role": "user", "content": r["instruction"]}]) for r in rows[:n]]


def lmadapt_tokens(model: str, dtype: str, ids: list[list[int]], max_tokens: int) -> list[list[int]]:
    from lmadapt.infer.decode import run_sequences
    from lmadapt.infer.engine import load_engine

    engine = load_engine(model, dtype=dtype)
    seqs = [engine.sequence(x, engine.decoding(max_new_tokens=max_tokens)) for x in ids]
    run_sequences(engine.model, engine.tokenizer.pad_token_id, seqs, batch_size=8)
    return [s.new_ids for s in seqs]


def llama_tokens(
    binary: str, gguf: Path, ids: list[list[int]], max_tokens: int, eos: list[int]
) -> list[list[int]]:
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-m", str(gguf), "--port", str(port), "-t", "2", "-np", "1", "-c", "2048", "--no-webui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out = []
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        for x in ids:
            body = {
                "prompt": x, "n_predict": max_tokens, "temperature": 0, "top_k": 1, "return_tokens": True,
                "cache_prompt": False, "samplers": ["top_k"],
            }  # fmt: skip
            r = requests.post(f"http://127.0.0.1:{port}/completion", json=body, timeout=600).json()
            out.append([t for t in r["tokens"] if t not in eos])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out


def compare(a: list[list[int]], b: list[list[int]]) -> dict:
    same = sum(x == y for x, y in zip(a, b, strict=True))
    prefix = []
    for x, y in zip(a, b, strict=True):
        k = 0
        while k < min(len(x), len(y)) and x[k] == y[k]:
            k += 1
        prefix.append(k)
    return {"identical": f"{same}/{len(a)}", "identical_rate": round(same / len(a), 3),
            "mean_shared_prefix_tokens": round(sum(prefix) / len(prefix), 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompts", type=int, default=50)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--llama-server", default=None)
    p.add_argument("--work", default="/tmp/side_by_side")
    args = p.parse_args()
    from lmadapt.infer.engine import load_engine

    engine = load_engine(args.model, dtype="float32")
    ids = prompts_ids(engine, args.prompts)
    got = {d: lmadapt_tokens(args.model, d, ids, args.max_tokens) for d in ("float32", "bfloat16", "int8")}
    rows = [
        ("lmadapt bf16 vs lmadapt fp32", compare(got["bfloat16"], got["float32"])),
        ("lmadapt int8 vs lmadapt fp32", compare(got["int8"], got["float32"])),
    ]
    if args.llama_server:
        from lmadapt.export.converter import convert_hf_to_gguf, llama_converter
        from lmadapt.sources import resolve_model

        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        converter = None
        for kind in ("f32", "bf16"):
            gguf = work / f"model-{kind}.gguf"
            if not gguf.exists():
                converter = converter or llama_converter()
                convert_hf_to_gguf(converter, Path(resolve_model(args.model)), gguf, kind)
            got[kind] = llama_tokens(args.llama_server, gguf, ids, args.max_tokens, engine.eos_ids)
        rows += [
            ("llama.cpp bf16 vs llama.cpp f32", compare(got["bf16"], got["f32"])),
            ("lmadapt fp32 vs llama.cpp f32", compare(got["float32"], got["f32"])),
            ("lmadapt bf16 vs llama.cpp bf16", compare(got["bfloat16"], got["bf16"])),
        ]
    print(f"{args.model}: {args.prompts} AlpacaEval prompts, greedy, {args.max_tokens} new tokens at most")
    print("| pair | identical continuations | mean shared leading tokens |")
    print("|---|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['identical']} ({r['identical_rate']:.0%}) | {r['mean_shared_prefix_tokens']} |")


if __name__ == "__main__":
    main()
