"""A real local .gguf as `model:`: the SmolLM2 GGUF inside the catalog's wheel, copied to a folder, converts
into the cache and trains (finetune and sft) exactly as the catalog name does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmadapt.config import parse_recipe
from lmadapt.sources import MODELS, read_manifest, resolve_model
from lmadapt.sources.fetch import extract, fetch_archive
from lmadapt.utils.io import sha256_file

pytestmark = pytest.mark.integration

CATALOG = "smollm2-135m-instruct"
PAIRS = [
    ("Name a primary color.", "Red is a primary color."),
    ("What is 2 + 3?", "2 + 3 = 5."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("How many days are in a week?", "A week has seven days."),
]
REVIEWS = [
    ("a wonderful, moving film with great acting", "pos"),
    ("dull, far too long and badly written", "neg"),
    ("I loved every minute of it", "pos"),
    ("a waste of two hours", "neg"),
    ("brilliant direction and a clever story", "pos"),
    ("boring characters and a silly plot", "neg"),
    ("the best film I have seen this year", "pos"),
    ("I walked out half way through", "neg"),
]


@pytest.fixture(scope="module")
def smollm_gguf(smollm_dir, tmp_path_factory) -> Path:
    """The catalog's GGUF file, read out of the (already fetched) wheel into a plain folder."""
    entry = MODELS[CATALOG]
    archive = fetch_archive(entry.artifact)  # the pull kept it: no second download
    extracted = extract(archive, entry.path, tmp_path_factory.mktemp("extract"))
    mine = tmp_path_factory.mktemp("my-models") / extracted.name
    shutil.copyfile(extracted, mine)
    return mine


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_gguf_file_converts_to_the_catalogs_weights(smollm_gguf, smollm_dir, lmadapt_home):
    folder = Path(resolve_model(str(smollm_gguf)))
    assert folder == lmadapt_home / "models" / f"gguf-{sha256_file(smollm_gguf)}"
    manifest = read_manifest(folder)
    assert manifest["source"]["sha256"] == read_manifest(smollm_dir)["source"]["sha256"]
    assert manifest["gguf_architecture"] == "llama" and manifest["architecture"] == "LlamaForCausalLM"
    assert manifest["greedy_check"]["same_tokens"] is True
    mine, catalog = load_file(folder / "model.safetensors"), load_file(smollm_dir / "model.safetensors")
    assert mine.keys() == catalog.keys()
    assert all((mine[k] == catalog[k]).all() for k in catalog)
    assert resolve_model(str(smollm_gguf)) == str(folder)  # converted once


def _final(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["final"]


@pytest.mark.parametrize("stage", ["finetune", "sft"])
def test_finetune_and_sft_give_the_catalog_names_results(stage, smollm_gguf, tmp_path):
    from lmadapt.stages import run_stage

    if stage == "sft":
        train = _jsonl(
            tmp_path / "train.jsonl", [{"instruction": i, "input": "", "output": o} for i, o in PAIRS]
        )
        task = {"type": "sft"}
        data = {"train": str(train), "eval": str(train), "test": None}
        method = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target": "all-linear"}
        train_cfg = {"max_steps": 2, "lr": 2e-3, "batch_size": 4, "max_length": 96, "packing": True}
    else:
        records = [{"id": str(i), "text": t, "label": y} for i, (t, y) in enumerate(REVIEWS)]
        train = _jsonl(tmp_path / "train.jsonl", records)
        task = {"type": "classify", "text": ["text"], "label": "label"}
        data = {"train": str(train), "eval": str(train), "test": str(train)}
        method = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target": ["q_proj", "v_proj"]}
        train_cfg = {"max_steps": 2, "lr": 1e-3, "batch_size": 4, "max_length": 32}
    finals = {}
    for name, model in (("gguf", str(smollm_gguf)), ("catalog", CATALOG)):
        recipe = parse_recipe(
            {
                "model": model,
                "task": task,
                "data": data,
                "method": method,
                "stage": stage,
                "train": {**train_cfg, "num_threads": 1, "seed": 0},
                "eval": {"every": "no"},
                "output": str(tmp_path / f"run-{name}"),
            }
        )
        finals[name] = _final(run_stage(recipe))
    # the same trained weights: the adapters agree tensor for tensor
    mine = load_file(tmp_path / "run-gguf" / "adapter" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "run-catalog" / "adapter" / "adapter_model.safetensors")
    assert mine.keys() == theirs.keys() and mine
    assert all(torch.allclose(mine[k], theirs[k], atol=1e-6) for k in theirs)
    gguf, catalog = finals["gguf"], finals["catalog"]
    assert gguf["eval"].keys() == catalog["eval"].keys()
    for key, value in catalog["eval"].items():
        if isinstance(value, float):
            assert gguf["eval"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    if stage == "sft":
        assert gguf["eval"]["loss"] < gguf["eval"]["loss_before"]
    else:
        assert gguf["test"] == pytest.approx(catalog["test"], rel=1e-5, abs=1e-6)
        predictions = [(tmp_path / f"run-{n}" / "predictions.jsonl").read_text() for n in ("gguf", "catalog")]
        assert predictions[0] == predictions[1]
