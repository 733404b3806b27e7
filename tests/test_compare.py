"""`stage: prompt` end to end and `lmadapt compare` on a tiny random masked LM saved to disk (no downloads)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoModelForMaskedLM, BertConfig, BertTokenizerFast

from lmadapt import compare as compare_mod
from lmadapt.compare import expand_grid, finished_run, run_compare
from lmadapt.config import load_recipe
from lmadapt.errors import RecipeError
from lmadapt.stages import run_stage

TEXT = "the movie was great good fine terrible bad awful plot actors very not it is review answer"
WORDS = TEXT.split()


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A tiny BERT masked LM folder, a small labelled dataset folder and a verbalizer recipe."""
    root = tmp_path_factory.mktemp("compare")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ":"]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.5,
    )
    AutoModelForMaskedLM.from_config(cfg).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    data = root / "data"
    data.mkdir()
    texts = {
        "pos": ["the movie was great", "good plot", "actors very good"],
        "neg": ["bad movie", "awful plot"],
    }
    records = [
        {"id": f"{lab}{i}", "text": t, "label": lab} for lab, ts in texts.items() for i, t in enumerate(ts)
    ]
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = {
        "model": str(root / "model"),
        "task": {"type": "classify", "text": ["text"], "label": "label"},
        "data": {"source": str(data), "eval": None},
        "stage": "prompt",
        "prompt": {
            "mode": "verbalizer",
            "template": "review : {text} . it was {mask} .",
            "verbalizer": {"pos": ["great", "good"], "neg": ["bad", "awful", "terrible"]},
        },
        "train": {"max_length": 32},
        "output": str(root / "runs" / "single"),
    }
    path = root / "tiny-verbalizer.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return root, path


def test_prompt_stage_writes_a_run_folder_with_metrics_and_cost(tiny_setup):
    root, path = tiny_setup
    recipe = load_recipe(path)
    run = run_stage(recipe)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["final"]["test"]["accuracy"] <= 1.0
    # The verbalizer, by hand: P(label) = softmax over labels of logsumexp of its words' log-probs at [MASK].
    tok = BertTokenizerFast.from_pretrained(root / "model")
    model = AutoModelForMaskedLM.from_pretrained(root / "model").eval()
    records = [json.loads(line) for line in (root / "data" / "test.jsonl").read_text().splitlines()]
    words = {"neg": ["bad", "awful", "terrible"], "pos": ["great", "good"]}  # labels in sorted order
    expected = {}
    for r in records:
        enc = tok(f"review : {r['text']} . it was {tok.mask_token} .", return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0, enc["input_ids"][0].tolist().index(tok.mask_token_id)]
        log_probs = logits.log_softmax(-1)
        scores = torch.stack(
            [log_probs[tok.convert_tokens_to_ids(ws)].logsumexp(-1) for ws in words.values()]
        )
        expected[r["id"]] = (r["label"], scores.softmax(-1).tolist(), list(words)[int(scores.argmax())])
    assert metrics["cost"]["trainable_params"] == 0 and metrics["cost"]["train_seconds"] == 0.0
    assert metrics["cost"]["total_params"] > 0 and metrics["cost"]["infer_examples_per_s"] > 0
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 5 and {p["prediction"] for p in preds} <= {"pos", "neg"}
    assert all(abs(sum(p["probs"]) - 1) < 1e-3 for p in preds)
    for p in preds:
        gold, probs, predicted = expected[p["id"]]
        assert (p["gold"], p["prediction"]) == (gold, predicted)
        assert p["probs"] == pytest.approx(probs, abs=1e-3)
    hits = sum(gold == predicted for gold, _, predicted in expected.values())
    assert metrics["final"]["test"]["accuracy"] == pytest.approx(hits / len(records))
    assert finished_run(load_recipe(path))  # config.yaml (labels filled in) matches the recipe


def test_expand_grid_and_bad_grid():
    assert expand_grid(["method.type=freeze,lora", "train.lr=1e-4,1e-3"]) == [
        ["method.type=freeze", "train.lr=1e-4"],
        ["method.type=freeze", "train.lr=1e-3"],
        ["method.type=lora", "train.lr=1e-4"],
        ["method.type=lora", "train.lr=1e-3"],
    ]
    with pytest.raises(RecipeError, match="--grid"):
        expand_grid(["method.type"])


def test_compare_runs_once_then_reuses_finished_runs(tiny_setup, monkeypatch):
    root, path = tiny_setup
    out = root / "cmp"
    grid = ["prompt.aggregate=logsumexp,mean"]
    board = run_compare([path], grid, out)  # real subprocesses: `python -m lmadapt train ...`
    names = ["tiny-verbalizer-logsumexp", "tiny-verbalizer-mean"]
    metrics_files = [out / "runs" / n / "metrics.json" for n in names]
    assert all(f.is_file() for f in metrics_files)
    mtimes = [f.stat().st_mtime_ns for f in metrics_files]
    for suffix in ("md", "csv", "json", "png"):
        assert (out / f"leaderboard.{suffix}").stat().st_size > 0
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert {r["name"] for r in rows} == set(names)
    assert all(r["status"] == "trained" and r["peak_rss_mb"] > 0 and r["trainable_params"] == 0 for r in rows)
    assert "tiny-verbalizer-mean" in board.read_text()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(compare_mod, "run_in_subprocess", must_not_run)
    run_compare([path], grid, out)
    assert [f.stat().st_mtime_ns for f in metrics_files] == mtimes
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert {r["status"] for r in rows} == {"reused"}

    # A changed recipe is a different run: it must run again (and here, fail loudly through the runner).
    with pytest.raises(AssertionError, match="run again"):
        run_compare([path], ["prompt.aggregate=mean", "prompt.calibrate=true"], out)


def test_leaderboard_names_no_model_for_tfidf(tiny_setup):
    """tfidf loads no pretrained model, so its row says '-' even when the shared recipe names one."""
    from pathlib import Path

    from lmadapt.compare import Planned, leaderboard_rows
    from lmadapt.config import parse_recipe

    _, path = tiny_setup
    base = yaml.safe_load(path.read_text()) | {"stage": "finetune", "prompt": None}
    tfidf = parse_recipe(base | {"method": {"type": "tfidf"}})
    full = parse_recipe(base | {"method": {"type": "full"}})
    metrics = {"final": {"test": {"accuracy": 0.5}}, "cost": {}}
    rows, _ = leaderboard_rows(
        [Planned(n, Path(n), [], r, metrics=metrics) for n, r in (("tfidf", tfidf), ("full", full))]
    )
    assert [r["model"] for r in rows] == ["-", base["model"]]


def test_compare_shows_finished_run_folders_as_they_are(tiny_setup, monkeypatch):
    """`compare RUN RUN` and `compare FOLDER_OF_RUNS`: rows from the folders' own metrics, nothing run;
    an unfinished folder or --grid with a run folder is a clear error."""
    import shutil

    root, path = tiny_setup
    made = root / "made"
    run_compare([path], ["prompt.aggregate=logsumexp,mean"], made)  # two finished runs to point at
    runs = made / "runs"

    def must_not_run(*args, **kwargs):
        raise AssertionError("a run folder was run again")

    monkeypatch.setattr(compare_mod, "run_in_subprocess", must_not_run)
    staging = runs / ".killed.incomplete"  # a run being written (or killed): not a run, left out
    shutil.copytree(runs / "tiny-verbalizer-mean", staging)
    (staging / "status.json").write_text(json.dumps({"status": "running"}))
    for args in ([runs / "tiny-verbalizer-logsumexp", runs / "tiny-verbalizer-mean"], [runs]):
        out = root / f"shown-{len(args)}"
        run_compare(args, [], out)
        rows = json.loads((out / "leaderboard.json").read_text())["rows"]
        assert {r["name"]: r["status"] for r in rows} == {
            "tiny-verbalizer-logsumexp": "reused", "tiny-verbalizer-mean": "reused"}  # fmt: skip
        for r in rows:
            saved = json.loads((runs / r["name"] / "metrics.json").read_text())["final"]["test"]
            assert r["accuracy"] == saved["accuracy"] and r["run"] == str(runs / r["name"])
    status = runs / "tiny-verbalizer-mean" / "status.json"
    status.write_text(json.dumps(json.loads(status.read_text()) | {"status": "running"}))
    with pytest.raises(RecipeError, match="tiny-verbalizer-mean: not a finished run"):
        run_compare([runs / "tiny-verbalizer-mean"], [], root / "x")
    with pytest.raises(RecipeError, match="--grid varies recipes"):
        run_compare([runs / "tiny-verbalizer-logsumexp"], ["prompt.aggregate=mean"], root / "x")
