"""Real models and data: a SmolLM2 reward model (LoRA, head saved with the adapter) on dpo-en pairs, its score
at the last real token whatever the padding, and `lmadapt rank` on pubmed-mesh prompts by the task metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmadapt.config import parse_recipe

ALIGN = Path(__file__).resolve().parents[2] / "src" / "lmadapt" / "recipes" / "align"


@pytest.fixture(scope="module")
def dpo_en(lmadapt_home):
    from lmadapt.sources import resolve_dataset

    return resolve_dataset("dpo-en")


def test_smollm2_reward_model_on_dpo_en_reloads_to_the_scores_it_wrote(tmp_path, smollm_dir, dpo_en):
    from lmadapt.alignment.rewards import build_reward
    from lmadapt.config.reward import RmReward
    from lmadapt.stages import run_stage
    from lmadapt.tasks.preference import load_preferences

    raw = {
        "model": str(smollm_dir),
        "task": {"type": "preference"},
        "data": {"source": str(dpo_en), "max_train": 4, "eval": None, "max_test": 2},
        "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "stage": "rm",
        "train": {"max_steps": 2, "batch_size": 2, "max_length": 96, "lr": 1e-4},
        "eval": {"every": "no"},
        "output": str(tmp_path / "rm"),
    }
    recipe = parse_recipe(raw)
    run = run_stage(recipe)
    final = json.loads((run / "metrics.json").read_text())["final"]["test"]
    assert {"pairwise_accuracy", "mean_margin", "pairwise_accuracy_before"} <= set(final)
    reward = build_reward(RmReward(run=str(run)))
    test = load_preferences(recipe)["test"]
    prompts = [r["prompt"] for r in test for _ in r["responses"]]
    answers = [a for r in test for a in r["responses"]]
    written = [
        x
        for line in (run / "predictions.jsonl").read_text().splitlines()
        for x in json.loads(line)["rewards"]
    ]
    assert reward(prompts, answers, [{}] * len(answers)) == pytest.approx(written, abs=1e-4)
    # SmolLM2 pads with its EOS: the score must still come from the last real token, under either padding
    from lmadapt.training.reward_model import encode_answer, pad_rows, reward_scores

    tok = _tokenizer(smollm_dir)
    rows = [encode_answer(tok, p, a, "auto", 96) for p, a in zip(prompts, answers, strict=True)]
    pad = tok.pad_token_id
    with torch.inference_mode():
        right, left = (
            reward_scores(reward.model, **pad_rows(rows, pad, side)).tolist() for side in ("right", "left")
        )
    assert right == pytest.approx(left, abs=1e-4) and right == pytest.approx(written, abs=1e-4)


def _tokenizer(folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def test_rank_pubmed_mesh_prompts_by_label_correctness(tmp_path, smollm_dir):
    from lmadapt.alignment.rank import rank
    from lmadapt.config import load_recipe

    recipe = load_recipe(
        ALIGN / "pubmed-mesh-rank.yaml",
        [f"rank.policy={smollm_dir}", "rank.max_prompts=2", "rank.k=2", f"rank.output={tmp_path / 'r.jsonl'}",
         "train.max_length=128"],
    )  # fmt: skip
    rows = [json.loads(x) for x in rank(recipe, show=lambda _: None).read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["responses"]) == 2 for r in rows)
    assert all(set(r["scores"]) <= {0.0, 1.0} and r["gold"] in ("Humans", "Animals") for r in rows)
    assert rows[0]["provenance"]["scorer"] == "metric:label_correct:label"
