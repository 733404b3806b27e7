"""stage grpo (TRL's GRPOTrainer) end to end on a tiny model with a task-metric reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.config import parse_recipe
from lmadapt.errors import RecipeError
from tiny_lm import save_tiny


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llama-grpo"))


def grpo_recipe(tmp: Path, model: Path, **over):
    rows = [{"id": i, "text": f"one two three {i}", "label": "yes" if i % 2 else "no"} for i in range(8)]
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    raw = {
        "model": str(model),
        "task": {"type": "generate", "instruction": "answer yes or no", "text": ["text"], "target": "label",
                 "metric": "label_f1", "labels": ["yes", "no"], "id": "id", "max_new_tokens": 4},
        "data": {"train": str(data), "eval": None, "test": str(data), "max_test": 4},
        "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target": "all-linear"},
        "stage": "grpo",
        "reward": {"type": "metric"},
        "grpo": {"num_generations": 4, "beta": 0.04},
        "train": {"max_steps": 3, "lr": 1e-2, "batch_size": 8, "max_length": 64, "seed": 0, "num_threads": 1,
                  "logging_steps": 1},
        "output": str(tmp / "run"),
    }  # fmt: skip
    for key, value in over.items():
        raw[key] = raw[key] | value if key in ("train", "grpo", "data") else value
    return parse_recipe(raw)


def test_grpo_with_a_metric_reward_writes_a_complete_run_folder(tiny_dir, tmp_path):
    from lmadapt.runs import RunDir
    from lmadapt.stages import run_stage

    run = run_stage(grpo_recipe(tmp_path, tiny_dir))
    assert RunDir(run).is_finished()
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("test", "test_before"):
        assert {"accuracy", "reward", "unparseable"} <= set(metrics["final"][split])
    assert len(metrics["history"]) == 3
    assert all({"reward", "kl", "answer_tokens"} <= set(h) for h in metrics["history"])
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (
        run / "plots" / "grpo.png"
    ).is_file()
    assert metrics["cost"]["train_seconds"] > 0


def test_grpo_batch_must_hold_whole_groups(tiny_dir, tmp_path):
    from lmadapt.stages import run_stage

    with pytest.raises(RecipeError, match="multiple of grpo.num_generations"):
        run_stage(grpo_recipe(tmp_path, tiny_dir, train={"batch_size": 6}))
