"""A very short real LoRA SFT of SmolLM2-135M-Instruct, then greedy generation and an exact export check."""

from __future__ import annotations

import json

from lmadapt.config import parse_recipe

RECORDS = [
    ("Name a primary color.", "Red is a primary color."),
    ("What is 2 + 3?", "2 + 3 = 5."),
    ("Give a synonym of happy.", "A synonym of happy is joyful."),
    ("Translate 'bonjour' to English.", "'Bonjour' means 'hello' in English."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("Name a mammal that can fly.", "The bat is a mammal that can fly."),
    ("What is the opposite of cold?", "The opposite of cold is hot."),
    ("How many days are in a week?", "A week has seven days."),
]


def test_short_lora_sft_generates_and_exports_exactly(tmp_path, smollm_dir):
    from lmadapt.export import export_run
    from lmadapt.infer.batch import generate_file
    from lmadapt.infer.engine import load_engine
    from lmadapt.stages.sft import run

    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(json.dumps({"instruction": i, "input": "", "output": o}) + "\n" for i, o in RECORDS)
    )
    recipe = parse_recipe(
        {
            "model": str(smollm_dir),
            "task": {"type": "sft"},
            "data": {"train": str(data), "eval": str(data), "test": None},
            "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target": "all-linear"},
            "stage": "sft",
            "train": {"max_steps": 2, "lr": 2e-3, "batch_size": 4, "max_length": 128, "packing": True},
            "eval": {"every": "no"},
            "output": str(tmp_path / "run"),
        }
    )
    run_dir = run(recipe)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final"]["eval"]["loss"] < metrics["final"]["eval"]["loss_before"]

    prompts = [[{"role": "user", "content": i}] for i, _ in RECORDS[:3]]
    tuned = load_engine(str(run_dir), dtype="float32").generate(prompts, max_new_tokens=16)
    assert all(t.strip() for t in tuned)
    merged_dir = export_run(run_dir, tmp_path / "merged")
    assert load_engine(str(merged_dir), dtype="float32").generate(prompts, max_new_tokens=16) == tuned

    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"instruction": i}) + "\n" for i, _ in RECORDS[:3]))
    out = tmp_path / "out.jsonl"
    assert generate_file(str(merged_dir), prompts_file, out, max_new_tokens=16, dtype="float32") == 3
    outputs = [json.loads(line)["output"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert outputs == tuned
