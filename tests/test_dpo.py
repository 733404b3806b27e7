"""stage dpo (TRL's DPOTrainer): the implicit reward margin rises on the training pairs, rankings become
best-vs-rest pairs, the run folder is complete, and the LoRA reference is the adapter switched off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.alignment.trl_bridge import best_vs_rest
from lmadapt.config import parse_recipe
from lmadapt.errors import RecipeError
from tiny_lm import save_tiny

PAIRS = [
    ("count to three", "one two three", "the dog sat on the log"),
    ("capital of france?", "paris", "hello how are you today?"),
    ("greet me", "hello how are you today?", "one two three four five"),
    ("where did the cat sit?", "the cat sat on the mat", "ten"),
    ("say thanks", "thank you very much", "the capital of france is paris"),
    ("last number", "ten", "cancer, protein, cell"),
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llama-dpo"))


def dpo_recipe(tmp: Path, model: Path, **over):
    data = tmp / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in PAIRS)
    )
    raw = {
        "model": str(model),
        "task": {"type": "preference"},
        "data": {"train": str(data), "eval": str(data), "test": None},
        "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target": "all-linear"},
        "stage": "dpo",
        "dpo": {"beta": 0.1},
        "train": {"epochs": 8, "lr": 2e-2, "batch_size": 3, "max_length": 64, "seed": 0, "num_threads": 1,
                  "logging_steps": 1},
        "output": str(tmp / "run"),
    }  # fmt: skip
    for key, value in over.items():
        raw[key] = raw[key] | value if key in ("train", "dpo", "data") else value
    return parse_recipe(raw)


def test_rankings_train_their_best_answer_against_each_other_one():
    assert best_vs_rest({"responses": ["a", "b", "c", "d"], "scores": None}) == [(0, 1), (0, 2), (0, 3)]
    tied = {"responses": ["a", "b", "c"], "scores": [1.0, 1.0, 0.0]}
    assert best_vs_rest(tied) == [(0, 2)]  # a tie with the best forms no pair


@pytest.mark.parametrize("method", ["lora", "full"])
def test_dpo_raises_the_implicit_reward_margin_on_training_pairs(tiny_dir, tmp_path, method):
    from lmadapt.stages import run_stage

    over = {} if method == "lora" else {"method": {"type": "full"}, "train": {"lr": 1e-3}}
    run = run_stage(dpo_recipe(tmp_path, tiny_dir, **over))
    final = json.loads((run / "metrics.json").read_text())["final"]
    before, after = final["eval_before"], final["eval"]
    assert before["reward_margin"] == pytest.approx(0.0, abs=1e-5)  # policy == reference before training
    assert after["reward_margin"] > 0.1 and after["reward_accuracy"] > 0.5, after
    saved = "adapter/adapter_model.safetensors" if method == "lora" else "model/config.json"
    assert (run / saved).is_file() and json.loads((run / "status.json").read_text())["status"] == "complete"
    assert (run / "plots" / "loss.png").is_file()


def test_lora_reference_is_the_adapter_switched_off(tiny_dir, tmp_path):
    from lmadapt.alignment.policy import load_policy
    from lmadapt.runs import RunDir
    from lmadapt.stages.dpo import build_pairs, build_trainer

    recipe = dpo_recipe(tmp_path, tiny_dir)
    model, tok, template = load_policy(recipe)
    trainer = build_trainer(recipe, model, tok, build_pairs(recipe, tok, template), RunDir(tmp_path / "x"))
    assert trainer.ref_model is None and "ref" not in trainer.model.peft_config  # no copy, no ref adapter


def test_dpo_needs_a_preference_task(tiny_dir, tmp_path):
    from lmadapt.stages import run_stage

    recipe = dpo_recipe(tmp_path, tiny_dir, task={"type": "sft"})
    with pytest.raises(RecipeError, match="preference"):
        run_stage(recipe)
