"""The decode engine's levers one by one, in process (no HTTP): tokens/s of `DecodeBatch` and matmul times.

    python bench/engine_levers.py [--model smollm2-135m-instruct] [--threads 2]

Rows: float32; the whole model cast to bf16; bf16 matmuls with float32 activations (precision.py); the KV
cache with preallocated room (kv.py) against transformers' DynamicCache; 1 and 8 rows, 64 (and 256) new
tokens, no EOS (fixed length), medians of 3. Then every Linear's matmul alone for one token (M=1) and for 8
rows: float32, bf16 and torch's int8 weight-only kernel. Run it on a quiet machine; it prints the load
average before and after.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
from transformers import DynamicCache

from lmadapt.infer import decode
from lmadapt.infer.engine import load_engine
from lmadapt.infer.precision import for_generation

PROMPT = [{"role": "user", "content": "Tell me a short story about a cat who learns to sail."}]


def tok_s(engine, model, rows: int, new: int = 64, cache_cls=None) -> float:
    saved = decode.RoomyCache
    if cache_cls is not None:
        decode.RoomyCache = cache_cls
    try:
        seqs = [
            engine.sequence(engine.encode(PROMPT), engine.decoding(max_new_tokens=new)) for _ in range(rows)
        ]
        for s in seqs:
            s.eos_ids = frozenset()  # fixed length
        batch = decode.DecodeBatch(model, engine.tokenizer.pad_token_id)
        batch.add(seqs)
        start = time.perf_counter()
        while len(batch):
            batch.step()
        return rows * new / (time.perf_counter() - start)
    finally:
        decode.RoomyCache = saved


def median(f, k: int = 3) -> float:
    return round(statistics.median(f() for _ in range(k)), 1)


def matmuls(model, rows: int) -> dict[str, float]:
    """ms for every Linear's matmul once, for `rows` rows: float32, bf16, int8 weight-only."""
    weights = [m.weight.detach().float() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        ws = [w.to(dtype) for w in weights]
        xs = [torch.randn(rows, w.shape[1], dtype=dtype) for w in ws]

        def run(ws=ws, xs=xs):
            start = time.perf_counter()
            for w, x in zip(ws, xs, strict=True):
                torch.nn.functional.linear(x, w)
            return (time.perf_counter() - start) * 1000

        run()
        out[name] = median(run, 7)
    packed = []
    for w in weights:
        scales = (w.abs().amax(1) / 127).clamp(min=1e-12)
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        packed.append((q, scales.bfloat16(), torch.randn(rows, w.shape[1], dtype=torch.bfloat16)))

    def int8():
        start = time.perf_counter()
        for q, s, x in packed:
            torch.ops.aten._weight_int8pack_mm(x, q, s)
        return (time.perf_counter() - start) * 1000

    int8()
    out["int8"] = median(int8, 7)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}")
    engine = load_engine(args.model, dtype="float32")
    fp32 = engine.model
    rows = {"float32, 1 row": median(lambda: tok_s(engine, fp32, 1))}
    cast = copy.deepcopy(fp32).to(torch.bfloat16)
    rows["whole model cast to bf16, 1 row"] = median(lambda: tok_s(engine, cast, 1))
    rows["whole model cast to bf16, 8 rows"] = median(lambda: tok_s(engine, cast, 8))
    print("| all linears, ms | " + " | ".join(f"M={m}: {matmuls(fp32, m)}" for m in (1, 8)) + " |")
    mixed = for_generation(fp32, "bfloat16")
    for n in (1, 8):
        rows[f"bf16 matmuls, {n} row(s)"] = median(lambda n=n: tok_s(engine, mixed, n))
        rows[f"bf16 matmuls, {n} row(s), DynamicCache"] = median(
            lambda n=n: tok_s(engine, mixed, n, 64, DynamicCache)
        )
    rows["bf16 matmuls, 8 rows, 256 new"] = median(lambda: tok_s(engine, mixed, 8, 256), 2)
    rows["bf16 matmuls, 8 rows, 256 new, DynamicCache"] = median(
        lambda: tok_s(engine, mixed, 8, 256, DynamicCache), 2
    )
    print("| lever | tok/s |\n|---|---:|")
    for name, value in rows.items():
        print(f"| {name} | {value} |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
