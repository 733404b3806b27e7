"""Finetune stage, tasks, tfidf baseline and predict on tiny random BERTs (no downloads)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from lmadapt.config import parse_recipe
from lmadapt.predict import load_predictor, predict_file
from lmadapt.runs import RunDir
from lmadapt.stages import run_stage as run
from lmadapt.tasks import get_task, run_inference
from lmadapt.tasks.keywords import keyword_tags, split_words
from lmadapt.tasks.span import SpanTask
from lmadapt.tasks.tag import align_labels, words_from_subwords
from lmadapt.utils.io import write_jsonl

POS = ["good", "great", "superb", "lovely"]
NEG = ["bad", "awful", "poor", "boring"]
FILLER = ["the", "movie", "was", "and", "plot", "actor", "film", "story", "very", "quite", "a", "it"]
CITIES = ["paris", "london", "berlin"]
PEOPLE = ["john", "mary"]
PIECES = ["play", "##ing", "##ed", "un", "##believ", "##able"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-", "?"] + sorted(
    set(POS + NEG + FILLER + CITIES + PEOPLE + PIECES + ["smith", "visited", "in", "what", "is", "city"])
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random BERT + WordPiece tokenizer saved as a local model folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)})
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)  # the same random weights whatever ran before in this process
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def sentiment(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label == "pos" else NEG))
        records.append({"id": f"r{i}", "text": " ".join(words), "label": label})
    return records


def ner(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(3, 7)):
            kind = rng.random()
            if kind < 0.2:
                tokens.append(rng.choice(CITIES)), tags.append("B-LOC")
            elif kind < 0.35:
                tokens += [rng.choice(PEOPLE), "smith"]
                tags += ["B-PER", "I-PER"]
            else:
                tokens.append(rng.choice(FILLER + ["playing", "unbelievable"])), tags.append("O")
        records.append({"id": f"t{i}", "tokens": tokens, "tags": tags})
    return records


def recipe_for(tmp_path, model, task: dict, method: dict, data: dict, **train):
    raw = {
        "model": model,
        "task": task,
        "method": method,
        "data": data,
        "train": {
            "epochs": 3,
            "lr": 5e-3,
            "batch_size": 16,
            "max_length": 32,
            "logging_steps": 5,
            "num_threads": 1,
        }
        | train,
        "eval": {"every": "epoch"},
        "output": str(tmp_path / "run"),
    }
    return parse_recipe(raw)


def write_splits(tmp_path, make, sizes=(240, 60, 60)) -> dict:
    data = {}
    for (name, n), seed in zip(zip(("train", "eval", "test"), sizes, strict=True), (0, 1, 2), strict=True):
        path = tmp_path / f"{name}.jsonl"
        write_jsonl(path, make(n, seed))
        data[name] = str(path)
    return data


# --- alignment ---------------------------------------------------------------------------------------
def test_tag_alignment_round_trips(tiny_model):
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    words = ["john", "playing", "unbelievable", "in", "paris", "."]
    tags = [1, 0, 3, 0, 2, 0]
    enc = tokenizer(words, is_split_into_words=True)
    word_ids = enc.word_ids()
    assert len(enc["input_ids"]) > len(words) + 2  # some words really are split into several subwords
    aligned = align_labels(word_ids, tags)
    assert [x for x in aligned if x != -100] == tags  # one label per word, on its first subword
    assert words_from_subwords(word_ids, np.array(aligned), len(words), default=None) == tags
    # the same round trip through the task's encode/decode with one-hot "logits"
    task = get_task(parse_recipe({"model": "x", "task": {"type": "tag"}}).task)
    task.labels = ["O", "B-PER", "B-LOC", "I-PER"]
    record = {"tokens": words, "tags": [task.labels[t] for t in tags]}
    encoded = task.encode([record], tokenizer, max_length=64)
    logits = np.eye(4)[
        np.where(np.array(encoded.features[0]["labels"]) < 0, 0, encoded.features[0]["labels"])
    ]
    assert task.decode([logits], encoded, 1) == [record["tags"]]


def test_keyword_tags_and_decoding(tiny_model):
    words = [w for w, _, _ in split_words("Deep learning for COVID-19: deep Learning, again.")]
    tags = keyword_tags(words, ["deep learning", "COVID-19", "absent keyword"])
    assert tags[:2] == ["B-KW", "I-KW"] and tags[3:6] == ["B-KW", "I-KW", "I-KW"]
    assert tags[7:9] == ["B-KW", "I-KW"] and tags.count("B-KW") == 3
    task = get_task(parse_recipe({"model": "x", "task": {"type": "keywords", "text": ["title"]}}).task)
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    record = {"title": "john visited paris, and london - paris", "keywords": ["Paris", "London", "Rome"]}
    encoded = task.encode([record], tokenizer, max_length=64)
    labels = np.array(encoded.features[0]["labels"])
    logits = np.eye(3)[np.where(labels < 0, 0, labels)]
    preds = task.decode([logits], encoded, 1)
    assert preds == [["paris", "london"]]  # deduplicated, surface form from the text
    m = task.score([record["keywords"]], preds)
    assert m["keyword_recall"] == pytest.approx(2 / 3)  # Rome is gold but not in the text: still counted


def test_span_windows_point_at_the_answer(tiny_model):
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    task = SpanTask(parse_recipe({"model": "x", "task": {"type": "span"}}).task)
    context = " ".join(["the film was quite"] * 6) + " john smith visited berlin and it was lovely"
    record = {
        "question": "what city",
        "context": context,
        "answer": {"text": "berlin", "start": context.index("berlin")},
    }
    encoded = task.encode([record], tokenizer, max_length=24)
    assert len(encoded.features) > 1  # the context is cut into several windows
    hits = [f for f in encoded.features if f["start_positions"] > 0]
    assert hits, "some window holds the answer"
    # logits peaking at the labelled positions decode back to the answer text
    outputs = []
    for f in encoded.features:
        logits = np.zeros((len(f["input_ids"]), 2))
        logits[f["start_positions"], 0] = logits[f["end_positions"], 1] = 5.0 if f["start_positions"] else 0
        outputs.append(logits)
    assert task.decode(outputs, encoded, 1) == ["berlin"]


# --- end to end ----------------------------------------------------------------------------------------
def test_classify_full_learns_and_reloads_identically(tmp_path, tiny_model):
    data = write_splits(tmp_path, sentiment, sizes=(160, 40, 40))
    recipe = recipe_for(
        tmp_path,
        tiny_model,
        {"type": "classify", "id": "id"},
        {"type": "full"},
        data,
        warmup_ratio=0.1,
        epochs=6,
    )
    run_dir = RunDir(run(recipe))
    metrics = run_dir.read_metrics()
    assert metrics["final"]["test"]["accuracy"] > 0.85, metrics["final"]
    losses = [h["loss"] for h in metrics["history"] if h["split"] == "train"]
    assert min(losses[-3:]) < losses[0] * 0.8, losses
    assert metrics["cost"]["trainable_params"] == metrics["cost"]["total_params"] > 0
    assert (run_dir / "plots" / "loss.png").is_file() and (run_dir / "plots" / "confusion.png").is_file()
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert run_dir.read_config().task.labels == ["neg", "pos"]
    saved = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert saved[0]["id"] == "r0" and {s["prediction"] for s in saved} <= {"neg", "pos"}

    # rebuilt from the run folder alone, it predicts exactly what the run predicted
    out = tmp_path / "pred.csv"
    sub = tmp_path / "submission.csv"
    assert predict_file(run_dir.path, data["test"], out, submission=sub) == 40
    lines = sub.read_text().splitlines()
    assert lines[0] == "id,label"
    assert [line.split(",")[1] for line in lines[1:]] == [s["prediction"] for s in saved]
    task, predict = load_predictor(run_dir.path)
    assert predict([{"id": "x", "text": "it was superb"}]) == ["pos"]


def test_freeze_trains_only_the_head_and_reloads_logits(tmp_path, tiny_model):
    data = write_splits(tmp_path, sentiment, sizes=(64, 16, 16))
    recipe = recipe_for(
        tmp_path, tiny_model, {"type": "classify"}, {"type": "freeze", "head_hidden": 16}, data, epochs=1
    )
    run_dir = RunDir(run(recipe))
    cost = run_dir.read_metrics()["cost"]
    assert 0 < cost["trainable_params"] < cost["total_params"] / 5
    # reload twice through the methods' load_trained: logits identical to the saved model's predictions
    from lmadapt.data import load_split
    from lmadapt.methods import load_trained
    from lmadapt.tasks import build_model

    recipe = run_dir.read_config()
    task = get_task(recipe.task)
    records = load_split(None, data["test"], task.fields())
    logits = []
    for _ in range(2):
        base, tokenizer = build_model(recipe.model, task, recipe.train.seed)
        model = load_trained(base, recipe.method, run_dir.path, task.task_type)
        enc = task.encode(records, tokenizer, 32)
        logits.append(np.stack(run_inference(model, enc.features, task.collator(tokenizer))))
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-6)
    saved = [
        json.loads(line)["prediction"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()
    ]
    assert task.decode(list(logits[0]), enc, len(records)) == saved


def test_tag_learns_entities_and_reloads(tmp_path, tiny_model):
    data = write_splits(tmp_path, ner, sizes=(160, 40, 40))
    recipe = recipe_for(tmp_path, tiny_model, {"type": "tag"}, {"type": "full"}, data, epochs=3, lr=1e-2)
    run_dir = RunDir(run(recipe))
    final = run_dir.read_metrics()["final"]["test"]
    assert final["entity_f1"] > 0.6, final
    saved = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    out = tmp_path / "pred.jsonl"
    predict_file(run_dir.path, data["test"], out)
    again = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
    assert again == [s["prediction"] for s in saved]
    assert all(len(s["prediction"]) == len(s["gold"]) for s in saved)  # one tag per word


def test_multilabel_uses_bce(tmp_path, tiny_model):
    def make(n, seed):
        rng = random.Random(seed)
        out = []
        for i in range(n):
            words = rng.choices(FILLER, k=4)
            labels = []
            if rng.random() < 0.5:
                words.append(rng.choice(POS)), labels.append("positive")
            if rng.random() < 0.5:
                words.append(rng.choice(CITIES)), labels.append("place")
            rng.shuffle(words)
            out.append({"id": i, "text": " ".join(words), "label": labels})
        return out

    data = write_splits(tmp_path, make, sizes=(160, 40, 40))
    recipe = recipe_for(
        tmp_path,
        tiny_model,
        {"type": "classify", "multi_label": True},
        {"type": "full"},
        data,
        epochs=8,
        lr=3e-3,
        warmup_ratio=0.1,
    )
    run_dir = RunDir(run(recipe))
    final = run_dir.read_metrics()["final"]["test"]
    assert final["f1_micro"] > 0.8, final
    assert (
        json.loads((run_dir / "model" / "config.json").read_text())["problem_type"]
        == "multi_label_classification"
    )


def test_tfidf_baseline_and_reload(tmp_path):
    data = write_splits(tmp_path, sentiment, sizes=(200, 50, 50))
    recipe = recipe_for(tmp_path, "unused", {"type": "classify", "id": "id"}, {"type": "tfidf"}, data)
    run_dir = RunDir(run(recipe))
    metrics = run_dir.read_metrics()
    assert metrics["final"]["test"]["f1_macro"] > 0.9
    saved = [
        json.loads(line)["prediction"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()
    ]
    out = tmp_path / "pred.jsonl"
    predict_file(run_dir.path, data["test"], out)
    assert [json.loads(line)["prediction"] for line in out.read_text().splitlines()] == saved
    assert not list(run_dir.path.rglob("*.pkl")) and not list(run_dir.path.rglob("*.joblib"))


def test_tfidf_pair(tmp_path):
    def make(n, seed):
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            a = rng.choice(CITIES + PEOPLE + POS)
            same = rng.random() < 0.5
            b = a if same else rng.choice([w for w in CITIES + PEOPLE + POS if w != a])
            out.append(
                {"text_a": f"the {a} film", "text_b": f"a story {b}", "label": "same" if same else "diff"}
            )
        return out

    data = write_splits(tmp_path, make, sizes=(300, 50, 50))
    recipe = recipe_for(tmp_path, "unused", {"type": "pair"}, {"type": "tfidf", "ngram_max": 1}, data)
    final = RunDir(run(recipe)).read_metrics()["final"]["test"]
    assert final["accuracy"] > 0.8, final


def test_bad_label_in_test_names_it(tmp_path, tiny_model):
    data = write_splits(tmp_path, sentiment, sizes=(40, 10, 10))
    write_jsonl(tmp_path / "test.jsonl", [{"text": "good film", "label": "meh"}])
    recipe = recipe_for(tmp_path, tiny_model, {"type": "classify"}, {"type": "full"}, data, epochs=1)
    from lmadapt.errors import RecipeError

    with pytest.raises(RecipeError, match="meh"):
        run(recipe)


def test_span_end_to_end(tmp_path, tiny_model):
    def make(n, seed):
        rng = random.Random(seed)
        out = []
        for i in range(n):
            words = rng.choices(FILLER, k=rng.randint(4, 9))
            city = rng.choice(CITIES)
            words.insert(rng.randrange(len(words) + 1), city)
            context = " ".join(words)
            start = context.index(city) if context.startswith(city) else context.index(" " + city) + 1
            out.append(
                {
                    "id": i,
                    "question": "what city",
                    "context": context,
                    "answer": {"text": city, "start": start},
                }
            )
        return out

    data = write_splits(tmp_path, make, sizes=(160, 30, 30))
    recipe = recipe_for(tmp_path, tiny_model, {"type": "span"}, {"type": "full"}, data, epochs=4, lr=5e-3)
    run_dir = RunDir(run(recipe))
    final = run_dir.read_metrics()["final"]["test"]
    assert final["exact_match"] > 0.7, final
    saved = [
        json.loads(line)["prediction"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()
    ]
    out = tmp_path / "pred.jsonl"
    predict_file(run_dir.path, data["test"], out)
    assert [json.loads(line)["prediction"] for line in out.read_text().splitlines()] == saved


def test_broken_jsonl_line_7_names_file_and_line_and_writes_nothing(tmp_path, tiny_model):
    from lmadapt.errors import DataError

    data = write_splits(tmp_path, sentiment, sizes=(40, 10, 10))
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    lines[6] = '{"text": "broken", "label": "pos"'  # line 7 lost its closing brace
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    recipe = recipe_for(tmp_path, tiny_model, {"type": "classify"}, {"type": "full"}, data, epochs=1)
    with pytest.raises(DataError, match=r"train\.jsonl:7"):
        run(recipe)
    assert not (tmp_path / "run").exists()
