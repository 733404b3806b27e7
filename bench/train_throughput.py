"""Training throughput and memory: lmadapt against a plain transformers Trainer + PEFT script.

    python bench/train_throughput.py                  # SFT and encoder, both engines, alternating rounds
    python bench/train_throughput.py --part sft --levers   # plus lmadapt with each speed lever alone
    python bench/train_throughput.py --part sft --lever "lmadapt + torch.compile"   # a lever in every round
    python bench/train_throughput.py --part sft --nproc 2  # plus lmadapt data-parallel: 2 processes x batch 2

SFT: LoRA (r=8, all linear projections, dropout 0) on SmolLM2-135M-Instruct, alpaca-en records of 50-400
tokens, max length 512, batch 4, the same records in the same order for both engines (sequential sampling
over one seeded shuffle), lr 5e-4 linear, `--warmup` steps untimed, then `--steps` timed steps.
Encoder: all-MiniLM-L6-v2 classifying pubmed-mesh titles (Humans / Animals), batch 32, max length 128, full
fine-tuning and LoRA; the plain script pads to max_length as the transformers text-classification example
does by default.

Every engine runs in its own process (peak RSS is per process), one after the other, alternating engines
within each round. `--nproc N` adds lmadapt on N torchrun processes (gloo DDP, cores / N threads each, batch
4 / N per process: the same global batch, records and loss curve), with peak RSS per rank and in total. Reported: real (non-pad) tokens/s, padded tokens/s, seconds/step, peak RSS, the loss at
every step, and MFU: model FLOPs per second over the matmul peak measured in this run for the engine's
compute dtype. Results go to runs/bench/throughput-*.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

SFT_BASE = {"lr": 5.0e-4, "batch_size": 4, "max_length": 512}
ENC_BASE = {"lr": 5.0e-5, "batch_size": 32, "max_length": 128}
# lmadapt recipe `train:` settings per configuration; "lmadapt" is the shipped default for this workload
SFT_LEVERS = {
    "no levers": {"packing": "off", "bf16": False, "chunked_loss": False},
    "batch packing": {"packing": "batch", "bf16": False, "chunked_loss": False},
    "chunked loss": {"packing": "off", "bf16": False, "chunked_loss": True},
    "bf16 autocast": {"packing": "off", "bf16": True, "bf16_frozen": False, "chunked_loss": False},
    "bf16 + frozen bf16": {"packing": "off", "bf16": True, "bf16_frozen": True, "chunked_loss": False},
    "lmadapt": {"packing": "batch", "bf16": True, "bf16_frozen": True, "chunked_loss": True},
    "lmadapt + torch.compile": {
        "packing": "batch",
        "bf16": True,
        "bf16_frozen": True,
        "chunked_loss": True,
        "compile": True,
    },  # fmt: skip
    "lmadapt, 1 thread": {
        "packing": "batch",
        "bf16": True,
        "bf16_frozen": True,
        "chunked_loss": True,
        "num_threads": 1,
    },  # fmt: skip
}
ENC_LMADAPT = {"bf16": True, "group_by_length": True}


# --- shared measurement helpers ----------------------------------------------------------------------------
def matmul_peak() -> dict[str, float]:
    """Best GFLOP/s of a [2048,576] x [576,1536] matmul (the model's MLP shape), fp32 and bf16, on the device
    the engines train on (the GPU when there is one)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(2048, 576, dtype=dtype, device=device)
        b = torch.randn(576, 1536, dtype=dtype, device=device)
        for _ in range(3):
            a @ b
        best = float("inf")
        for _ in range(5):
            sync()
            t = time.perf_counter()
            for _ in range(10):
                a @ b
            sync()
            best = min(best, (time.perf_counter() - t) / 10)
        out[name] = 2 * 2048 * 576 * 1536 / best / 1e9
    return out


def step_timer(durations: list[float], losses: list[float]):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            durations.append(time.perf_counter() - self.t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    return StepTimer()


def linear_params(model) -> tuple[int, int]:
    """(parameters in matmuls per token, trainable parameters) for model-FLOPs accounting."""
    from torch import nn

    mats = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return mats, sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- data ----------------------------------------------------------------------------------------------------
def sft_records(n: int, seed: int = 0) -> Path:
    """alpaca-en training records whose chat-rendered length is 50-400 tokens, one seeded shuffle, as JSONL."""
    from transformers import AutoTokenizer

    from lmadapt.data import load_split
    from lmadapt.sources import resolve_dataset, resolve_model
    from lmadapt.templates import to_messages

    out = Path("runs/bench/alpaca-en-bench.jsonl")
    if out.is_file() and sum(1 for _ in out.open()) == n:
        return out
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    records = load_split(resolve_dataset("alpaca-en"), "train", {})
    random.Random(seed).shuffle(records)
    keep = []
    for r in records:
        ids = tok.apply_chat_template(to_messages(r), tokenize=True, return_dict=True)["input_ids"]
        if 50 <= len(ids) <= 400:
            keep.append({k: r[k] for k in ("instruction", "input", "output")})
        if len(keep) == n:
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep), encoding="utf-8")
    return out


# --- SFT workers -------------------------------------------------------------------------------------------------
def sft_plain(data: Path, steps: int) -> dict:
    """What a user writes with transformers + PEFT: chat template, prompt masked, pad to the longest."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from lmadapt.sources import resolve_model
    from lmadapt.templates import to_messages

    folder = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    examples = []
    for line in data.open(encoding="utf-8"):
        messages = to_messages(json.loads(line))
        full = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        prompt = tok.apply_chat_template(
            messages[:-1], tokenize=True, add_generation_prompt=True, return_dict=True
        )["input_ids"]
        full = full[: SFT_BASE["max_length"]]
        labels = [-100] * len(prompt) + full[len(prompt) :]
        examples.append({"input_ids": full, "attention_mask": [1] * len(full), "labels": labels[: len(full)]})
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora)
    durations, losses = [], []
    args = TrainingArguments(
        output_dir="runs/bench/plain-sft",
        max_steps=steps,
        per_device_train_batch_size=SFT_BASE["batch_size"],
        learning_rate=SFT_BASE["lr"],
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        train_sampling_strategy="sequential",
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),  # on a GPU the plain script a practitioner writes uses bf16 (and SDPA)
        dataloader_pin_memory=False,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
        callbacks=[step_timer(durations, losses)],
    )
    trainer.train()
    lengths = [len(e["input_ids"]) for e in examples]
    return {"durations": durations, "losses": losses, "lengths": lengths, "params": linear_params(model)}


def sft_lmadapt(data: Path, steps: int, train: dict) -> dict:
    """The same job as an lmadapt recipe through `stage: sft` (its own tokenization, method and trainer)."""
    from transformers import AutoTokenizer

    from lmadapt.config import parse_recipe
    from lmadapt.sources import resolve_model
    from lmadapt.stages.sft import build_examples, load_records, run
    from lmadapt.templates import resolve_template
    from lmadapt.utils import distributed

    recipe = parse_recipe(
        {
            "model": "smollm2-135m-instruct",
            "task": {"type": "sft"},
            "data": {"train": str(data), "eval": None, "test": None},
            "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target": "all-linear"},
            "stage": "sft",
            "train": SFT_BASE
            | {"max_steps": steps, "scheduler": "linear", "logging_steps": 1, "shuffle": False}
            | train,
            "eval": {"every": "no"},
            "output": "runs/bench/lmadapt-sft",
        }
    )
    durations, losses = [], []
    try:
        run(recipe, callbacks=[step_timer(durations, losses)])
    except distributed.WorkerDone:  # a data-parallel rank other than 0: its timings and memory only
        return {"durations": durations, "losses": losses, "lengths": None, "rows": None, "params": None}
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    feats, _ = build_examples(
        load_records(recipe)["train"], tok, resolve_template(tok, "auto"), 512, recipe.task
    )
    rows = _lmadapt_rows(feats, train)
    return {"durations": durations, "losses": losses, "lengths": [len(f["input_ids"]) for f in feats],
            "rows": rows, "params": None}  # fmt: skip


def _lmadapt_rows(feats: list[dict], train: dict) -> list[int] | None:
    """Padded slots per (global) step when lmadapt packs each batch (None: padded to the longest, as plain);
    with several processes each packs its own share of the step's records."""
    if train.get("packing") != "batch":
        return None
    from lmadapt.stages.sft import pack_batch

    b, share = SFT_BASE["batch_size"], train.get("batch_size", SFT_BASE["batch_size"])
    slots = []
    for i in range(0, len(feats) - b + 1, b):
        slots.append(0)
        for j in range(i, i + b, share):
            rows = pack_batch(feats[j : j + share], SFT_BASE["max_length"])
            slots[-1] += len(rows) * max(len(r["input_ids"]) for r in rows)
    return slots


# --- encoder workers -----------------------------------------------------------------------------------------
def enc_records(n: int) -> Path:
    from lmadapt.data import load_split
    from lmadapt.sources import resolve_dataset

    out = Path("runs/bench/pubmed-mesh-titles.jsonl")
    records = load_split(resolve_dataset("pubmed-mesh"), "train", {}, limit=n, seed=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"title": r["title"], "label": r["label"]} for r in records]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def enc_plain(data: Path, steps: int, method: str) -> dict:
    """The transformers text-classification example's way: pad to max_length, fp32 Trainer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    from lmadapt.sources import resolve_model

    folder = resolve_model("minilm-l6")
    tok = AutoTokenizer.from_pretrained(folder)
    rows = [json.loads(line) for line in data.open(encoding="utf-8")]
    labels = sorted({r["label"] for r in rows})
    enc = tok([r["title"] for r in rows], padding="max_length", truncation=True,
              max_length=ENC_BASE["max_length"])  # fmt: skip
    examples = [
        {"input_ids": i, "attention_mask": m, "token_type_ids": t, "labels": labels.index(r["label"])}
        for i, m, t, r in zip(
            enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], rows, strict=True
        )
    ]
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=len(labels), dtype=torch.float32
    )
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="SEQ_CLS"))
    durations, losses = [], []
    args = TrainingArguments(
        output_dir="runs/bench/plain-enc", max_steps=steps, per_device_train_batch_size=ENC_BASE["batch_size"],
        learning_rate=ENC_BASE["lr"] if method == "full" else 1e-3, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, dataloader_pin_memory=False, seed=0,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=examples, data_collator=default_data_collator,
            callbacks=[step_timer(durations, losses)]).train()  # fmt: skip
    return {"durations": durations, "losses": losses, "params": linear_params(model)}


def enc_lmadapt(data: Path, steps: int, method: str) -> dict:
    from lmadapt.config import parse_recipe
    from lmadapt.stages.finetune import run

    method_cfg = (
        {"type": "full"} if method == "full" else {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0}
    )
    recipe = parse_recipe(
        {
            "model": "minilm-l6",
            "task": {"type": "classify", "text": ["title"], "label": "label"},
            "data": {"train": str(data), "eval": None, "test": None},
            "method": method_cfg,
            "stage": "finetune",
            "train": ENC_BASE
            | {"lr": ENC_BASE["lr"] if method == "full" else 1e-3, "max_steps": steps, "logging_steps": 1}
            | ENC_LMADAPT,
            "eval": {"every": "no"},
            "output": f"runs/bench/lmadapt-enc-{method}",
        }
    )
    durations, losses = [], []
    run(recipe, callbacks=[step_timer(durations, losses)])
    return {"durations": durations, "losses": losses, "params": None}


# --- orchestration ---------------------------------------------------------------------------------------------
def worker(args) -> None:
    from lmadapt.runs import peak_rss_mb
    from lmadapt.utils import distributed

    spec = json.loads(args.worker)
    distributed.init()  # under torchrun (--nproc): join the process group; no-op in one process
    if distributed.world_size() > 1:
        spec["result"] = f"{spec['result']}.rank{distributed.rank()}"
    steps = spec["warmup"] + spec["steps"]
    data = Path(spec["data"])
    kind = spec["kind"]
    if kind == "sft-plain":
        out = sft_plain(data, steps)
    elif kind == "sft-lmadapt":
        out = sft_lmadapt(data, steps, spec["train"])
    elif kind == "enc-plain":
        out = enc_plain(data, steps, spec["method"])
    else:
        out = enc_lmadapt(data, steps, spec["method"])
    out["peak_rss_mb"] = peak_rss_mb()
    Path(spec["result"]).write_text(json.dumps(out))


def launch(spec: dict) -> dict:
    """Run one configuration in fresh process(es): torchrun with `nproc` > 1; rank 0's result, with every
    rank's peak RSS."""
    result = Path(f"runs/bench/.result-{os.getpid()}.json")
    spec = spec | {"result": str(result)}
    nproc, env = spec.get("nproc", 1), dict(os.environ)
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    if nproc > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        env["OMP_NUM_THREADS"] = str(spec["train"]["num_threads"])
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode:
        sys.exit(f"worker failed: {spec['kind']} {spec.get('label', '')}\n{proc.stderr[-3000:]}")
    files = [result] if nproc == 1 else [Path(f"{result}.rank{r}") for r in range(nproc)]
    outs = [json.loads(f.read_text()) for f in files]
    for f in files:
        f.unlink()
    return outs[0] | {"peak_rss_ranks_mb": [o["peak_rss_mb"] for o in outs]}


def sft_summary(
    name: str, out: dict, warmup: int, steps: int, peak: dict, flops_per_token: float, dtype: str
):
    b = SFT_BASE["batch_size"]
    lengths = out["lengths"]
    timed = range(warmup, warmup + steps)
    real = sum(sum(lengths[i * b : (i + 1) * b]) for i in timed)
    if out.get("rows"):
        padded = sum(out["rows"][i] for i in timed)
    else:
        padded = sum(b * max(lengths[i * b : (i + 1) * b]) for i in timed)
    secs = sum(out["durations"][warmup : warmup + steps])
    tps = real / secs
    return {
        "engine": name,
        "real_tokens_per_s": round(tps, 1),
        "padded_tokens_per_s": round(padded / secs, 1),
        "padding": round(1 - real / padded, 3),
        "s_per_step": round(secs / steps, 2),
        "peak_rss_mb": round(out["peak_rss_mb"]),
        "peak_rss_total_mb": round(sum(out["peak_rss_ranks_mb"])),
        "mfu": round(tps * flops_per_token / (peak[dtype] * 1e9), 3),
        "final_loss": round(statistics.fmean(out["losses"][-3:]), 4),
        "losses": [round(x, 4) for x in out["losses"]],
    }


def run_sft(args, peak: dict) -> list[dict]:
    data = sft_records(args.records)
    base = {"data": str(data), "warmup": args.warmup, "steps": args.steps}
    # model FLOPs per real token: forward 2·P and backward input-gradients 2·P over every matmul weight
    # (lm_head included), weight gradients 2·P_trainable; attention scores left out (same for both engines)
    results = []
    flops = None
    configs = [
        ("plain", {"kind": "sft-plain"}),
        ("lmadapt", {"kind": "sft-lmadapt", "train": SFT_LEVERS["lmadapt"]}),
    ]
    # --lever NAME joins every round, so it is measured as often and under the same conditions as the two engines
    configs += [(name, {"kind": "sft-lmadapt", "train": SFT_LEVERS[name]}) for name in args.lever or []]
    if args.nproc > 1:  # data-parallel: the same global batch, shared out; the machine's cores shared out too
        share = SFT_BASE["batch_size"] // args.nproc
        train = SFT_LEVERS["lmadapt"] | {
            "batch_size": share,
            "num_threads": max(1, os.cpu_count() // args.nproc),
        }
        configs.append(
            (nproc_label(args.nproc), {"kind": "sft-lmadapt", "train": train, "nproc": args.nproc})
        )
    for r in range(args.rounds):
        for name, spec in configs:
            print(f"round {r + 1}: {name} ...", flush=True)
            out = launch(base | spec)
            if out["params"]:
                mats, trainable = out["params"]
                flops = 4 * mats + 2 * trainable
            results.append((name, out))
    if args.levers:
        for name, train in SFT_LEVERS.items():
            if name == "lmadapt" or name in (args.lever or []):
                continue
            print(f"lever: {name} ...", flush=True)
            results.append((name, launch(base | {"kind": "sft-lmadapt", "train": train})))
    rows = []
    for name, out in results:
        train = SFT_LEVERS["lmadapt"] if name == nproc_label(args.nproc) else SFT_LEVERS.get(name, {})
        dtype = "bfloat16" if train.get("bf16") else "float32"
        rows.append(sft_summary(name, out, args.warmup, args.steps, peak, flops, dtype))
    return rows


def nproc_label(nproc: int) -> str:
    return f"lmadapt, {nproc} processes"


def run_encoder(args, peak: dict) -> list[dict]:
    data = enc_records(args.enc_records)
    rows = []
    for method in ("full", "lora"):
        for r in range(args.rounds):
            for engine in ("plain", "lmadapt"):
                print(f"encoder {method} round {r + 1}: {engine} ...", flush=True)
                spec = {"kind": f"enc-{engine}", "method": method, "data": str(data),
                        "warmup": args.warmup, "steps": args.enc_steps}  # fmt: skip
                out = launch(spec)
                secs = sum(out["durations"][args.warmup : args.warmup + args.enc_steps])
                rows.append({
                    "engine": engine, "method": method,
                    "examples_per_s": round(args.enc_steps * ENC_BASE["batch_size"] / secs, 1),
                    "s_per_step": round(secs / args.enc_steps, 3),
                    "peak_rss_mb": round(out["peak_rss_mb"]),
                    "final_loss": round(statistics.fmean(out["losses"][-5:]), 4),
                })  # fmt: skip
    return rows


def ratio(rows: list[dict], key: str, where=lambda r: True) -> float:
    by = {}
    for r in rows:
        if where(r):
            by.setdefault(r["engine"], []).append(r[key])
    return statistics.fmean(by["lmadapt"]) / statistics.fmean(by["plain"])


def print_table(rows: list[dict], keys: list[str]) -> None:
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["sft", "encoder", "all"], default="all")
    p.add_argument("--steps", type=int, default=10, help="timed SFT steps per run")
    p.add_argument("--enc-steps", type=int, default=20, help="timed encoder steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of both engines")
    p.add_argument("--records", type=int, default=400, help="alpaca-en records in the SFT set")
    p.add_argument("--enc-records", type=int, default=2000)
    p.add_argument("--levers", action="store_true", help="also run lmadapt with each lever alone")
    p.add_argument("--lever", action="append", help="also run this lever configuration in every round")
    p.add_argument("--nproc", type=int, default=1, help="also run lmadapt on N data-parallel processes (SFT)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    peak = matmul_peak()
    print(
        f"matmul peak (GFLOP/s, [2048,576]x[576,1536]): fp32 {peak['float32']:.0f}, bf16 {peak['bfloat16']:.0f}"
    )
    report = {"matmul_peak_gflops": peak, "argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d %H:%M")}
    if args.part in ("sft", "all"):
        rows = run_sft(args, peak)
        keys = ["engine", "real_tokens_per_s", "padded_tokens_per_s", "padding", "s_per_step", "peak_rss_mb",
                "peak_rss_total_mb", "mfu", "final_loss"]  # fmt: skip
        print("\nSFT: LoRA smollm2-135m-instruct, alpaca-en, max length 512, batch 4")
        print_table(rows, keys)
        speed, rss = ratio(rows, "real_tokens_per_s"), ratio(rows, "peak_rss_mb")
        print(f"\nratio lmadapt / plain: real tokens/s {speed:.2f}x, peak RSS {rss:.2f}x")
        pairs = [r for r in rows if r["engine"] in ("plain", "lmadapt")][:2]
        print("loss per step, plain  :", pairs[0]["losses"])
        print("loss per step, lmadapt:", pairs[1]["losses"])
        for name in [*(args.lever or []), *([nproc_label(args.nproc)] if args.nproc > 1 else [])]:
            sel = [r for r in rows if r["engine"] == name]
            plain = [r for r in rows if r["engine"] == "plain"]
            sp = statistics.fmean(r["real_tokens_per_s"] for r in sel) / statistics.fmean(
                r["real_tokens_per_s"] for r in plain
            )
            rs = statistics.fmean(r["peak_rss_mb"] for r in sel) / statistics.fmean(
                r["peak_rss_mb"] for r in plain
            )
            total = statistics.fmean(r["peak_rss_total_mb"] for r in sel) / statistics.fmean(
                r["peak_rss_mb"] for r in plain
            )
            print(f"ratio {name} / plain: real tokens/s {sp:.2f}x, peak RSS {rs:.2f}x per process, "
                  f"{total:.2f}x all processes")  # fmt: skip
            print(f"loss per step, {name}:", sel[0]["losses"])
            report.setdefault("sft_levers", {})[name] = {"speed_ratio": sp, "rss_ratio": rs}
        report["sft"] = {"rows": rows, "speed_ratio": speed, "rss_ratio": rss}
    if args.part in ("encoder", "all"):
        rows = run_encoder(args, peak)
        print("\nEncoder: minilm-l6 classify pubmed-mesh titles, batch 32, max length 128")
        print_table(rows, ["engine", "method", "examples_per_s", "s_per_step", "peak_rss_mb", "final_loss"])
        for method in ("full", "lora"):
            sp = ratio(rows, "examples_per_s", lambda r, m=method: r["method"] == m)
            rs = ratio(rows, "peak_rss_mb", lambda r, m=method: r["method"] == m)
            print(f"ratio lmadapt / plain ({method}): examples/s {sp:.2f}x, peak RSS {rs:.2f}x")
            report[f"encoder_{method}"] = {"speed_ratio": sp, "rss_ratio": rs}
        report["encoder"] = rows
    out = Path(f"runs/bench/throughput-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
