"""lmadapt's server beside llama.cpp's `llama-server` on the same weights, in one command (issue 24's scoreboard).

    python bench/side_by_side.py --llama-server PATH/llama-server --rounds 3 --seconds 20 \
        [--llama-quantize PATH/llama-quantize] [--lmadapt-dtype bfloat16 float32] [--out results.jsonl]

The weights: lmadapt's cached `--model` folder, converted by llama.cpp's own converter (lmadapt.export) to a
bf16 GGUF (and, with `--llama-quantize`, to Q4_1 from an f32 GGUF), so both servers run the same numbers.
Each round starts every server in turn (the order alternates between rounds), waits for it to answer, warms it
with one request, then runs bench/serve_load.py's load for each `--clients` count and stops it; nothing else
may run meanwhile: the run waits for the 1-minute load average to fall below `--cool` before it starts, prints
it with each row, and after the last server stops waits for it to fall below `--cool` again (the bench's own
servers keep it near 2 while they run; falling back shows nothing else was running). The table gives each
(server, clients) median over the rounds. The machine's memory bandwidth (a 1 GiB fp32 read) and matmul peak
(fp32 and bf16 2048^3 GEMMs, torch) are measured at the start and the end of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import run_load  # noqa: E402


def machine(threads: int) -> dict:
    """Memory read bandwidth (GB/s) and GEMM throughput (GFLOP/s), best of 5, on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    a = torch.ones(256 * 1024 * 1024, dtype=torch.float32)  # 1 GiB
    read = []
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        read.append(a.numel() * 4 / (time.perf_counter() - t) / 1e9)
    del a
    out = {"read_gb_s": round(max(read), 1)}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2048, 2048, dtype=dtype)
        flops = []
        for _ in range(5):
            t = time.perf_counter()
            x @ x
            flops.append(2 * 2048**3 / (time.perf_counter() - t) / 1e9)
        out[f"gemm_{str(dtype).split('.')[-1]}_gflop_s"] = round(max(flops), 1)
    return out


def cool(limit: float, most: float = 600) -> float:
    """Wait (at most `most` seconds) for the 1-minute load average to fall below `limit`; return it."""
    start = time.monotonic()
    while os.getloadavg()[0] >= limit and time.monotonic() - start < most:
        time.sleep(5)
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} after {time.monotonic() - start:.0f} s of waiting", flush=True)
    return load


def emit(row: dict, out: str | None) -> dict:
    """Print a result row as JSON and, with `out`, append it to that JSONL file as it comes."""
    print(json.dumps(row), flush=True)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def make_ggufs(model: str, work: Path, quantize: str | None) -> dict[str, Path]:
    """bf16 (and Q4_1) GGUFs of `model`'s cached HF folder, made once into `work`."""
    from lmadapt.export.converter import convert_hf_to_gguf, llama_converter
    from lmadapt.export.converter import quantize as run_quantize
    from lmadapt.sources import resolve_model

    folder, converter = Path(resolve_model(model)), None
    out = {"bf16": work / "model-bf16.gguf"}
    if quantize:
        out["f32"], out["q4_1"] = work / "model-f32.gguf", work / "model-q4_1.gguf"
    for kind in ("bf16", "f32"):
        if kind in out and not out[kind].exists():
            converter = converter or llama_converter()
            convert_hf_to_gguf(converter, folder, out[kind], kind)
    if quantize and not out["q4_1"].exists():
        run_quantize(Path(quantize), out["f32"], out["q4_1"], "Q4_1")
    out.pop("f32", None)
    return out


def server_command(kind: str, args, port: int, ggufs: dict[str, Path]) -> tuple[list[str], str]:
    """(command, model name for requests) of one server under test."""
    if kind.startswith("lmadapt-"):
        dtype = kind.split("-", 1)[1]
        return [
            sys.executable, "-m", "lmadapt", "serve", args.model, "--port", str(port), "--dtype", dtype,
            "--threads", str(args.threads), "--max-batch", str(args.slots),
        ], args.model  # fmt: skip
    quant = kind.split("-", 1)[1]
    return [
        args.llama_server, "-m", str(ggufs[quant]), "--port", str(port), "--host", "127.0.0.1",
        "-t", str(args.threads), "-tb", str(args.threads), "-np", str(args.slots), "-cb",
        "-c", str(args.slots * args.context), "--no-webui", "-a", args.model,
    ], args.model  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llama-server", required=True)
    p.add_argument("--llama-quantize", default=None, help="Also run llama-server on a Q4_1 GGUF.")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--lmadapt-dtype", nargs="+", default=["bfloat16"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--slots", type=int, default=8, help="llama-server -np / lmadapt --max-batch.")
    p.add_argument("--context", type=int, default=512, help="llama-server context per slot.")
    p.add_argument("--work", default="/tmp/side_by_side")
    p.add_argument("--out", default=None, help="Append every row (JSON lines).")
    p.add_argument("--cool", type=float, default=1.0, help="Load average to wait for before and after.")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ggufs = make_ggufs(args.model, work, args.llama_quantize)
    kinds = [f"lmadapt-{d}" for d in args.lmadapt_dtype] + [f"llama-{q}" for q in ggufs]
    cool(args.cool)
    print(f"load average before: {os.getloadavg()}", flush=True)
    before = machine(args.threads)
    print(f"machine before: {before}", flush=True)
    rows: list[dict] = []
    for r in range(args.rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for kind in order:
            port = free_port()
            command, name = server_command(kind, args, port, ggufs)
            log = open(work / f"{kind}-round{r}.log", "w")  # noqa: SIM115 (closed below)
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            try:
                wait_ready(base, proc)
                run_load(f"{base}/v1", name, 1, 0.1, 8, None)  # warm-up: one short request
                for n in args.clients:
                    row = run_load(f"{base}/v1", name, n, args.seconds, args.max_tokens, None)
                    row.update(server=kind, round=r, load=round(os.getloadavg()[0], 2))
                    rows.append(emit(row, args.out))
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.close()
    after = machine(args.threads)
    print(f"machine after: {after}\nload average after the last server: {os.getloadavg()}", flush=True)
    cool(args.cool)
    print(f"load average after: {os.getloadavg()}\n")
    print(
        f"medians of {args.rounds} rounds, {args.seconds:g} s each, {args.max_tokens} new tokens, greedy, "
        f"{args.threads} threads, {args.slots} slots"
    )
    print("| server | clients | tok/s per stream | tok/s total | TTFT p50 s | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in kinds:
        for n in args.clients:
            mine = [x for x in rows if x["server"] == kind and x["clients"] == n]
            med = {
                k: statistics.median(x[k] for x in mine)
                for k in ("tok_s_per_stream", "tok_s_total", "ttft_p50_s")
            }
            errors = sum(x["errors"] for x in mine)
            print(
                f"| {kind} | {n} | {med['tok_s_per_stream']:.1f} | {med['tok_s_total']:.1f} | "
                f"{med['ttft_p50_s']:.3f} | {errors} |"
            )


if __name__ == "__main__":
    main()
