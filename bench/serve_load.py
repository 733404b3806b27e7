"""Load test for any OpenAI-compatible server: N concurrent clients for T seconds on loopback.

    python bench/serve_load.py --url http://127.0.0.1:8000/v1 --model smollm2-135m-instruct --clients 8 --seconds 60

Each client sends streaming /chat/completions (greedy, `--max-tokens` new tokens, one fixed chat prompt) back
to back until the time is up; a request still streaming then is finished and counted. Reports p50/p99 time to
first token, tokens/s per stream (a request's tokens over its own wall time, median) and in total (all tokens
over the run's wall time), and errors (HTTP >= 400, broken streams). A stream that ends without a
finish_reason (llama-cpp-python's server ends a running stream that way when another request arrives, unless
started with `--interrupt_requests False`) is an error. Tokens are the content chunks of the stream (one token each, on lmadapt and llama.cpp's server alike). `--json` appends the row as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import requests

PROMPT = "Tell me a short story about a cat who learns to sail."


def one_request(url: str, model: str, max_tokens: int, key: str | None) -> dict:
    body = {
        "model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
        "temperature": 0, "stream": True,
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    start = time.perf_counter()
    first, tokens, finish = None, 0, None
    try:
        with requests.post(
            f"{url}/chat/completions", json=body, headers=headers, stream=True, timeout=600
        ) as r:
            if r.status_code != 200:
                return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
            done = False
            for line in r.iter_lines():
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    return {"error": str(chunk["error"])[:200]}
                for choice in chunk.get("choices", []):
                    finish = choice.get("finish_reason") or finish
                    if (choice.get("delta") or {}).get("content"):
                        tokens += 1
                        first = first or time.perf_counter()
            if (
                not done or finish is None
            ):  # llama-cpp-python aborts a stream this way when another request comes
                return {"error": "stream ended without " + ("[DONE]" if not done else "a finish_reason")}
    except requests.RequestException as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    end = time.perf_counter()
    return {"ttft": (first or end) - start, "tokens": tokens, "seconds": end - start}


def run_load(url: str, model: str, clients: int, seconds: float, max_tokens: int, key: str | None) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        while time.perf_counter() < deadline:
            r = one_request(url, model, max_tokens, key)
            with lock:
                results.append(r)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    ttft = sorted(r["ttft"] for r in ok)

    def pct(xs, q):
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    per_stream = [r["tokens"] / r["seconds"] for r in ok if r["seconds"] > 0]
    return {
        "clients": clients, "seconds": round(wall, 1), "requests": len(results), "errors": len(errors),
        "error_examples": errors[:3], "ttft_p50_s": round(pct(ttft, 0.5), 3), "ttft_p99_s": round(pct(ttft, 0.99), 3),
        "tok_s_per_stream": round(statistics.median(per_stream), 1) if per_stream else 0.0,
        "tok_s_total": round(sum(r["tokens"] for r in ok) / wall, 1),
        "tokens": sum(r["tokens"] for r in ok),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Base URL ending in /v1.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--label", default="server")
    parser.add_argument("--json", default=None, help="Append each result row (JSON lines) to this file.")
    args = parser.parse_args()
    print(
        "| server | clients | requests | errors | TTFT p50 s | TTFT p99 s | tok/s per stream | tok/s total |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.clients:
        row = {
            "label": args.label,
            **run_load(args.url, args.model, n, args.seconds, args.max_tokens, args.api_key),
        }
        print(
            f"| {args.label} | {n} | {row['requests']} | {row['errors']} | {row['ttft_p50_s']} | "
            f"{row['ttft_p99_s']} | {row['tok_s_per_stream']} | {row['tok_s_total']} |",
            flush=True,
        )
        if row["errors"]:
            print(f"  errors, e.g.: {row['error_examples']}", flush=True)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
