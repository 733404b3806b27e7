"""stage sft: packing keeps per-example losses, loss goes down, generate tasks are scored, export is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmadapt.config import parse_recipe
from lmadapt.stages.sft import SftCollator, build_examples, pack_examples
from lmadapt.templates import IGNORE
from tiny_lm import save_tiny, tiny_llama, tiny_tokenizer

PAIRS = [
    ("count to three", "one two three"),
    ("count to five", "one two three four five"),
    ("capital of france?", "paris"),
    ("greet me", "hello how are you today?"),
    ("where did the cat sit?", "the cat sat on the mat"),
    ("where did the dog sit?", "the dog sat on the log"),
    ("say thanks", "thank you very much"),
    ("last number", "ten"),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


def sft_recipe(tmp: Path, model: Path, **over):
    train = write_jsonl(tmp / "train.jsonl", [{"instruction": i, "input": "", "output": o} for i, o in PAIRS])
    raw = {
        "model": str(model),
        "task": {"type": "sft"},
        "data": {"train": str(train), "eval": str(train), "test": None},
        "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target": "all-linear"},
        "stage": "sft",
        "train": {
            "epochs": 10,
            "lr": 2e-2,
            "batch_size": 4,
            "max_length": 64,
            "packing": True,
            "num_threads": 1,
        },
        "eval": {"every": "no"},
        "output": str(tmp / "run"),
    }
    for key, value in over.items():
        raw[key] = raw[key] | value if key in ("data", "train", "eval") else value
    return parse_recipe(raw)


def token_losses(logits, labels):
    """Sum of next-token cross-entropies and their count for one sequence."""
    target = torch.as_tensor(labels[1:])
    keep = target != IGNORE
    ce = torch.nn.functional.cross_entropy(logits[:-1][keep], target[keep], reduction="sum")
    return ce, int(keep.sum())


def test_packed_batch_gives_the_same_per_example_losses():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    records = [{"instruction": i, "input": "", "output": o} for i, o in PAIRS]
    task = parse_recipe({"model": "x", "task": {"type": "sft"}}).task
    feats, dropped = build_examples(records, tok, "model", 64, task)
    assert dropped == 0 and len(feats) == len(PAIRS)
    with torch.no_grad():
        unpacked = {}
        for f in feats:
            logits = model(input_ids=torch.tensor([f["input_ids"]])).logits[0]
            ce, n = token_losses(logits, f["labels"])
            unpacked[tuple(f["input_ids"])] = (ce / n).item()
        rows = pack_examples(feats, max_length=96)
        assert len(rows) < len(feats)  # several examples share a row
        batch = SftCollator(tok.pad_token_id)(rows)
        assert "attention_mask" not in batch  # masking comes from the restarting position ids
        logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        packed = {}
        for r, row in enumerate(rows):
            starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
            for a, b in zip(starts, starts[1:], strict=False):
                ids = row["input_ids"][a:b]
                ce, n = token_losses(logits[r, a:b], [IGNORE] + row["labels"][a + 1 : b])
                packed[tuple(ids)] = (ce / n).item()
        assert packed.keys() == unpacked.keys()
        for key, loss in unpacked.items():
            assert packed[key] == pytest.approx(loss, abs=1e-5)
        # the batch loss the trainer optimises is the same token mean as with plain padding
        padded = SftCollator(tok.pad_token_id)(feats)
        assert model(**padded).loss.item() == pytest.approx(
            model(**batch, use_cache=False).loss.item(), abs=1e-5
        )


def test_lora_sft_with_packing_lowers_loss_and_exports_exactly(tmp_path, tiny_dir):
    from lmadapt.export import export_run
    from lmadapt.infer.engine import load_engine
    from lmadapt.stages.sft import run

    run_dir = run(sft_recipe(tmp_path, tiny_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final"]["eval"]["loss"] < 0.7 * metrics["final"]["eval"]["loss_before"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert metrics["cost"]["trainable_params"] < metrics["cost"]["total_params"] / 5

    out = export_run(run_dir, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists()
    prompts = [[{"role": "user", "content": i}] for i, _ in PAIRS]
    adapter = load_engine(str(run_dir), dtype="float32").generate(prompts, max_new_tokens=12)
    merged = load_engine(str(out), dtype="float32").generate(prompts, max_new_tokens=12)
    base = load_engine(str(tiny_dir), dtype="float32").generate(prompts, max_new_tokens=12)
    assert merged == adapter
    assert merged != base  # the adapter changed what the model says


def test_full_sft_on_messages_without_packing_lowers_loss(tmp_path, tiny_dir):
    from lmadapt.stages.sft import run

    convs = [
        {"messages": [{"role": "user", "content": a}, {"role": "assistant", "content": b}] * 2}
        for a, b in zip(
            ["hello", "greet me", "count"], ["hello how are you today?", "hi", "one two"], strict=True
        )
    ]
    data = write_jsonl(tmp_path / "chat.jsonl", convs)
    recipe = sft_recipe(
        tmp_path,
        tiny_dir,
        data={"train": str(data), "eval": str(data)},
        method={"type": "full"},
        train={"epochs": 10, "lr": 3e-3, "batch_size": 2, "packing": False},
    )
    metrics = json.loads((run(recipe) / "metrics.json").read_text())
    assert metrics["final"]["eval"]["loss"] < 0.7 * metrics["final"]["eval"]["loss_before"]


def test_generate_task_counts_unparseable_and_runs_zero_shot(tmp_path, tiny_dir):
    from lmadapt.stages.sft import run

    rows = [{"id": str(k), "title": t, "abstract": "the cat sat", "label": lab}
            for k, (t, lab) in enumerate([("human cell", "Humans"), ("mouse protein", "Animals")] * 4)]  # fmt: skip
    data = write_jsonl(tmp_path / "mesh.jsonl", rows)
    task = {
        "type": "generate",
        "instruction": "Is it a medical field paper? output 1 or 0 -->",
        "text": ["title", "abstract"],
        "metric": "label_f1",
        "labels": ["1", "0"],
        "label_map": {"Humans": "1", "Animals": "0"},
        "id": "id",
        "max_new_tokens": 4,
    }
    zero = sft_recipe(tmp_path, tiny_dir, task=task, data={"train": None, "eval": None, "test": str(data)})
    zero.output = str(tmp_path / "zero")
    metrics = json.loads((run(zero) / "metrics.json").read_text())["final"]["test"]
    assert {"f1", "accuracy", "unparseable", "unparseable_rate"} <= metrics.keys()
    assert metrics["unparseable"] == round(metrics["unparseable_rate"] * len(rows))
    tuned = sft_recipe(
        tmp_path,
        tiny_dir,
        task=task,
        data={"train": str(data), "eval": str(data), "test": str(data)},
        eval={"every": 10},
    )
    tuned.train.epochs, tuned.train.lr = 15, 2e-2
    run_dir = run(tuned)
    saved = json.loads((run_dir / "metrics.json").read_text())
    during = [h for h in saved["history"] if h["split"] == "eval" and "unparseable_rate" in h]
    assert len(during) >= 2  # the task metric is measured during training, not only at the end
    metrics = saved["final"]["test"]
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == len(rows) and preds[0]["gold"] in ("1", "0")
    assert metrics["accuracy"] >= 0.75 and metrics["unparseable_rate"] <= 0.25
