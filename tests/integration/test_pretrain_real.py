"""Stage pretrain on the real minilm-l6 and pubmed-mesh: a few MLM steps on train abstracts, the held-out
metrics before and after, and the adapted encoder as the `model:` of a finetune recipe."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from lmadapt.config import load_recipe, parse_recipe
from lmadapt.stages import run_stage
from lmadapt.tasks import build_model, get_task

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SMALL = [
    "data.max_train=40", "data.max_eval=8", "train.max_steps=4", "train.batch_size=8",
    "task.pseudo_perplexity_examples=1", "train.bf16=false",
]  # fmt: skip


def test_dapt_mlm_on_pubmed_train_abstracts_feeds_finetune(tmp_path, minilm_dir):
    """The shipped two steps: the fresh MLM head warmed up alone (encoder untouched), then full MLM from it."""
    head = load_recipe(RECIPES / "pubmed-mesh-dapt-mlm-head.yaml", [*SMALL, f"output={tmp_path / 'head'}"])
    warmed = run_stage(head)
    final = json.loads((warmed / "metrics.json").read_text())["final"]["eval"]
    assert final["mlm_loss"] < final["mlm_loss_before"]  # the fresh head alone learns a lot in 4 steps
    log = (warmed / "log.txt").read_text()
    assert "cls.predictions.transform.dense.weight" in log and "bert.pooler.dense.weight" in log
    saved = load_file(str(warmed / "model" / "model.safetensors"))
    original = load_file(str(minilm_dir / "model.safetensors"))
    assert torch.equal(
        saved["bert.encoder.layer.5.output.dense.weight"], original["encoder.layer.5.output.dense.weight"]
    )

    recipe = load_recipe(
        RECIPES / "pubmed-mesh-dapt-mlm.yaml",
        [*SMALL, f"model={warmed / 'model'}", f"output={tmp_path / 'dapt'}"],
    )
    run = run_stage(recipe)  # 4 steps at 3e-5 barely move the loss; that the encoder moved is checked below
    assert "bert.pooler.dense.weight" in (run / "log.txt").read_text()

    classify = parse_recipe(
        {
            "model": str(run / "model"),
            "task": {"type": "classify", "text": ["title", "abstract"], "labels": ["Animals", "Humans"]},
            "data": {"source": "pubmed-mesh"},
            "output": str(tmp_path / "ft"),
        }
    )
    task = get_task(classify.task)
    adapted, tokenizer = build_model(classify.model, task)
    original, _ = build_model(parse_recipe(classify.model_dump() | {"model": str(minilm_dir)}).model, task)
    a, b = adapted.state_dict(), original.state_dict()
    assert not torch.equal(
        a["bert.encoder.layer.5.output.dense.weight"], b["bert.encoder.layer.5.output.dense.weight"]
    )
    assert torch.equal(a["bert.pooler.dense.weight"], b["bert.pooler.dense.weight"])  # carried, not fresh
    assert tokenizer("Rats were given insulin.")["input_ids"][0] == tokenizer.cls_token_id
