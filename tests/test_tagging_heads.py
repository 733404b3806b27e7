"""Task heads on decoders, and tag sets of any scheme, through the real finetune stage and predict path.

Tiny random decoders built from configs (nothing downloaded), with tests/tiny_lm.py's byte-level BPE
tokenizer: Llama, for which transformers has token-classification and QA heads, and Gemma 3 (text), for which
it has none, so lmadapt's own heads (lmadapt.tasks.heads) are used.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForTokenClassification,
    Gemma3TextConfig,
)

from lmadapt.config import parse_recipe
from lmadapt.metrics import token_metrics
from lmadapt.predict import predict_file
from lmadapt.runs import RunDir
from lmadapt.stages import run_stage as run
from lmadapt.tasks import get_task
from lmadapt.tasks.base import head_class
from lmadapt.tasks.heads import BackboneForQuestionAnswering, BackboneForTokenClassification
from lmadapt.tasks.tag import tag_scheme
from lmadapt.utils.io import write_jsonl
from tiny_lm import save_tiny, save_tiny_gemma3, tiny_tokenizer

CITIES = ["paris", "london", "berlin"]
PEOPLE = ["john", "mary"]
FILLER = ["the", "cat", "sat", "on", "mat", "and", "dog", "log", "how", "are", "you", "today"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    """A tiny random Gemma 3 text model: transformers has no token-classification or QA class for it."""
    return str(save_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3")))


@pytest.fixture(scope="module")
def models(llama, gemma3):
    return {"llama": llama, "gemma3": gemma3}


# --- data ------------------------------------------------------------------------------------------------
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
                tokens.append(rng.choice(FILLER)), tags.append("O")
        records.append({"id": f"t{i}", "tokens": tokens, "tags": tags})
    return records


POS = {"the": "DT", "a": "DT", "cat": "NN", "dog": "NN", "mat": "NN", "log": "NN", "sat": "VB", "ran": "VB"}
POS |= {"on": "IN", "in": "IN", "and": "CC", "big": "JJ", "red": "JJ"}


def pos(n: int, seed: int) -> list[dict]:
    """Part-of-speech tags: a tag set that marks no entities."""
    rng = random.Random(seed)
    words = sorted(POS)
    records = []
    for i in range(n):
        tokens = rng.choices(words, k=rng.randint(3, 8))
        records.append({"id": f"p{i}", "tokens": tokens, "tags": [POS[w] for w in tokens]})
    return records


def squad(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(4, 9))
        city = rng.choice(CITIES)
        at = rng.randrange(len(words) + 1)
        context = " ".join(words[:at] + [city] + words[at:])
        start = len(" ".join(words[:at])) + (1 if at else 0)
        assert context[start : start + len(city)] == city
        answer = {"text": city, "start": start}
        records.append({"id": i, "question": "what city", "context": context, "answer": answer})
    return records


def write_splits(tmp_path, make, sizes) -> dict:
    data = {}
    for (name, n), seed in zip(zip(("train", "eval", "test"), sizes, strict=True), (0, 1, 2), strict=True):
        path = tmp_path / f"{name}.jsonl"
        write_jsonl(path, make(n, seed))
        data[name] = str(path)
    return data


def recipe_for(tmp_path, model: str, task: dict, method: dict, data: dict, **train):
    settings = {"epochs": 3, "lr": 1e-2, "batch_size": 8, "max_length": 48, "logging_steps": 4}
    return parse_recipe(
        {
            "model": model,
            "task": task,
            "method": method,
            "data": data,
            "train": settings | {"num_threads": 1, "warmup_ratio": 0.1} | train,
            "eval": {"every": "epoch"},
            "output": str(tmp_path / "run"),
        }
    )


def saved_predictions(run_dir: RunDir) -> list:
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line)["prediction"] for line in lines]


def train_losses(run_dir: RunDir) -> list[float]:
    return [h["loss"] for h in run_dir.read_metrics()["history"] if h["split"] == "train" and "loss" in h]


# --- which head -----------------------------------------------------------------------------------------
def test_own_heads_only_where_transformers_has_none(models, tmp_path):
    tag = get_task(parse_recipe({"model": "x", "task": {"type": "tag"}}).task)
    span = get_task(parse_recipe({"model": "x", "task": {"type": "span"}}).task)
    common = {"trust_remote_code": False}
    assert head_class(tag, models["llama"], common) is AutoModelForTokenClassification
    assert head_class(span, models["llama"], common) is AutoModelForQuestionAnswering
    assert head_class(tag, models["gemma3"], common) is BackboneForTokenClassification
    assert head_class(span, models["gemma3"], common) is BackboneForQuestionAnswering


def test_own_head_keeps_the_pretrained_backbone_and_reloads_bit_identically(gemma3, tmp_path):
    from transformers import AutoModel

    torch.manual_seed(0)
    model = BackboneForTokenClassification.from_pretrained(gemma3, num_labels=3).eval()
    base = AutoModel.from_pretrained(gemma3)
    for name, tensor in base.state_dict().items():  # the checkpoint's weights, not re-initialised
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    ids = tiny_tokenizer()(["the cat sat on the mat", "hello"], return_tensors="pt", padding=True)
    labels = torch.full(ids["input_ids"].shape, -100)
    labels[0, :3], labels[1, 0] = torch.tensor([0, 1, 2]), 2
    out = model(**ids, labels=labels)
    assert out.logits.shape == (*ids["input_ids"].shape, 3) and torch.isfinite(out.loss)
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    again = BackboneForTokenClassification.from_pretrained(tmp_path / "saved").eval()
    assert torch.equal(again(**ids).logits, out.logits)


def test_own_head_reloads_a_backbone_without_sdpa_with_eager_attention(gemma3, tmp_path, monkeypatch):
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextModel

    monkeypatch.setattr(Gemma3TextModel, "_supports_sdpa", False)  # as some architectures are
    model = BackboneForQuestionAnswering.from_pretrained(gemma3)
    assert model.backbone.config._attn_implementation == "eager"
    model.save_pretrained(tmp_path / "saved")
    again = BackboneForQuestionAnswering.from_pretrained(tmp_path / "saved")
    assert again.backbone.config._attn_implementation == "eager"


# --- end to end: decoders x tasks x methods -------------------------------------------------------------
TASKS = {
    "tag": ({"type": "tag"}, ner, "score"),
    "span": ({"type": "span"}, squad, "qa_outputs"),
}


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("task_name", ["tag", "span"])
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_decoder_trains_saves_and_reloads_identically(tmp_path, models, arch, task_name, method):
    task, make, head = TASKS[task_name]
    data = write_splits(tmp_path, make, sizes=(96, 24, 24))
    method_cfg = (
        {"type": "full"} if method == "full" else {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0}
    )
    run_dir = RunDir(run(recipe_for(tmp_path, models[arch], task, method_cfg, data)))

    losses = train_losses(run_dir)
    assert len(losses) >= 3 and min(losses[-2:]) < losses[0] * 0.8, losses
    final = run_dir.read_metrics()["final"]["test"]
    if task_name == "tag":  # an untrained head finds (next to) no entity and no answer
        assert run_dir.read_metrics()["task"]["tag_scheme"] == "IOB2"
        assert final["entity_f1"] > 0.2, final
    else:
        assert final["exact_match"] > 0.5, final
    # the run folder holds the trained head (PEFT: through modules_to_save), as safetensors
    from safetensors import safe_open

    weights = run_dir / (
        "model/model.safetensors" if method == "full" else "adapter/adapter_model.safetensors"
    )
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
    assert any(f"{head}." in key for key in keys), keys[:5]
    if method == "full":
        saved_as = json.loads((run_dir / "model" / "config.json").read_text())["architectures"]
        expected = {"llama": {"tag": "LlamaForTokenClassification", "span": "LlamaForQuestionAnswering"}}
        own = {"tag": "BackboneForTokenClassification", "span": "BackboneForQuestionAnswering"}
        assert saved_as == [expected.get(arch, own)[task_name]]
    # rebuilt from the run folder by `lmadapt predict`, it predicts exactly what the run predicted
    out = tmp_path / "pred.jsonl"
    assert predict_file(run_dir.path, data["test"], out) == 24
    again = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
    assert again == saved_predictions(run_dir)
    assert not list(run_dir.path.rglob("*.bin")) and not list(run_dir.path.rglob("*.pt"))


def test_freeze_on_own_head_trains_the_head_and_reloads(tmp_path, gemma3):
    data = write_splits(tmp_path, ner, sizes=(64, 16, 16))
    method = {"type": "freeze", "head_hidden": 16, "unfreeze_top": 1}
    run_dir = RunDir(run(recipe_for(tmp_path, gemma3, {"type": "tag"}, method, data, epochs=2)))
    cost = run_dir.read_metrics()["cost"]
    assert 0 < cost["trainable_params"] < cost["total_params"]
    out = tmp_path / "pred.jsonl"
    predict_file(run_dir.path, data["test"], out)
    assert [json.loads(line)["prediction"] for line in out.read_text().splitlines()] == saved_predictions(
        run_dir
    )


# --- tag sets ---------------------------------------------------------------------------------------------
def test_tag_scheme_detection():
    assert tag_scheme([["B-PER", "I-PER", "O", "B-LOC"], ["O", "O"]]) == "IOB2"
    assert tag_scheme([["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]]) == "IOB1"  # entities start with I-
    assert tag_scheme([["O", "I-PER", "O"]]) == "IOB1"
    assert tag_scheme([["B-PER", "I-PER", "E-PER", "O", "S-LOC"]]) == "BIOES"
    assert tag_scheme([["B", "I", "O", "B"]]) == "IOB2"  # untyped chunks
    assert tag_scheme([["DT", "NN", "VB"]]) == "plain"
    assert tag_scheme([["O", "B-PER", "NNP"]]) == "plain"  # one tag outside the scheme is enough
    assert tag_scheme([["O", "B-"]]) == "plain"


def test_token_metrics_score_unseen_tags_as_wrong():
    gold = [["DT", "NN", "XX"], ["VB", "XX"]]
    pred = [["DT", "NN", "NN"], ["VB", "DT"]]
    m = token_metrics(gold, pred)
    assert m["token_accuracy"] == pytest.approx(3 / 5)
    # macro over DT, NN, VB, XX: F1 2/3, 2/3, 1, 0
    assert m["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 1 + 0) / 4)


def test_pos_tags_report_token_accuracy_and_macro_f1_and_warn_on_an_unseen_tag(tmp_path, llama):
    data = write_splits(tmp_path, pos, sizes=(96, 24, 24))
    test = pos(24, 2)
    test[0]["tags"][0] = test[3]["tags"][1] = test[5]["tags"][2] = "FW"  # a tag train never shows, 3 times
    write_jsonl(tmp_path / "test.jsonl", test)
    run_dir = RunDir(run(recipe_for(tmp_path, llama, {"type": "tag"}, {"type": "full"}, data)))

    metrics = run_dir.read_metrics()
    assert metrics["task"] == {"tag_scheme": "plain", "unseen_tags": {"test": {"FW": 3}}}
    final = metrics["final"]["test"]
    assert {"token_accuracy", "f1_macro"} <= set(final) and "entity_f1" not in final
    assert final["token_accuracy"] > 0.6, final
    log = (run_dir / "log.txt").read_text()
    assert "tag scheme: plain" in log
    assert "warning: data.test: 3 tokens have tags that train never shows ('FW' x3)" in log
    # the FW tokens are scored as wrong: the model cannot predict a tag it was not built with
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert not any("FW" in row["prediction"] for row in rows)
    pairs = [(g, p) for row in rows for g, p in zip(row["gold"], row["prediction"], strict=True)]
    assert final["token_accuracy"] == pytest.approx(sum(g == p for g, p in pairs) / len(pairs))
    report = json.loads((run_dir / "report.json").read_text())["test"]
    assert report["tag_scheme"] == "plain"
    assert report["per_class"]["FW"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    labels = run_dir.read_config().task.labels
    assert "O" not in labels and set(labels) == set(POS.values())  # train's tags; no "O" added


def test_explicit_labels_still_fix_the_tag_set_and_entity_metrics_on_pos_tags_are_a_recipe_error(tmp_path):
    from lmadapt.errors import DataError, RecipeError
    from lmadapt.stages.finetune import load_task_data

    data = write_splits(tmp_path, pos, sizes=(16, 4, 4))
    labels = ["VB", "NN", "DT", "IN", "CC", "JJ", "UH"]  # UH: listed, though train never shows it
    recipe = recipe_for(tmp_path, "unused", {"type": "tag", "labels": labels}, {"type": "full"}, data)
    task = get_task(recipe.task)
    load_task_data(recipe, task)
    assert task.labels == labels and task.scheme == "plain" and task.best_metric == "token_accuracy"

    write_jsonl(tmp_path / "test.jsonl", [{"tokens": ["the", "cat"], "tags": ["DT", "FW"]}])
    with pytest.raises(DataError, match="FW"):  # outside the listed set: the recipe said these are all
        load_task_data(recipe, get_task(recipe.task))

    data = write_splits(tmp_path, pos, sizes=(16, 4, 4))
    recipe = recipe_for(tmp_path, "unused", {"type": "tag"}, {"type": "full"}, data)
    recipe.eval.metrics = ["entity_f1"]
    with pytest.raises(RecipeError, match=r"entity_f1.*available: .*token_accuracy"):
        load_task_data(recipe, get_task(recipe.task))


# --- every method on lmadapt's own heads -----------------------------------------------------------------
def tiny_gemma3_config(num_labels: int) -> Gemma3TextConfig:
    return Gemma3TextConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, pad_token_id=0, num_labels=num_labels,
    )  # fmt: skip


def own_head(task_type: str, seed: int = 0):
    torch.manual_seed(seed)
    if task_type == "span":
        return BackboneForQuestionAnswering(tiny_gemma3_config(2))
    return BackboneForTokenClassification(tiny_gemma3_config(3))


def method_batch(task_type: str, with_gold: bool = True) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 100, (2, 8), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if with_gold and task_type == "token_cls":
        out["labels"] = torch.randint(0, 3, (2, 8), generator=g)
    elif with_gold:
        out["start_positions"], out["end_positions"] = torch.tensor([1, 2]), torch.tensor([3, 5])
    return out


def head_outputs(model, task_type: str) -> torch.Tensor:
    with torch.no_grad():
        out = model(**method_batch(task_type, with_gold=False))
    return torch.cat([out.start_logits, out.end_logits]) if task_type == "span" else out.logits


METHOD_RECIPES = {
    "full": {"type": "full"},
    "freeze": {"type": "freeze", "head_hidden": 16},
    "lora": {"type": "lora", "r": 2},
    "adapter": {"type": "adapter", "bottleneck": 4},
    "prefix": {"type": "prefix", "num_virtual_tokens": 3},
    "ia3": {"type": "ia3"},
}


@pytest.mark.parametrize("method", sorted(METHOD_RECIPES))
@pytest.mark.parametrize("task_type", ["token_cls", "span"])
def test_every_method_trains_the_own_head_and_reloads_it(tmp_path, task_type, method):
    from lmadapt.methods import apply_method, load_trained, save_trained

    cfg = parse_recipe({"model": "x", "task": {"type": "tag"}, "method": METHOD_RECIPES[method]}).method
    head = "score" if task_type == "token_cls" else "qa_outputs"
    model = apply_method(own_head(task_type), cfg, task_type)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(head in n for n in trainable), trainable  # the new head always trains
    if method == "freeze":
        assert all(n.startswith(f"{head}.") for n in trainable), trainable

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):  # >1 step: zero-initialised LoRA B / adapter up-projections block gradients at first
        optimizer.zero_grad()
        model(**method_batch(task_type)).loss.backward()
        optimizer.step()
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]) != (name in trainable), name

    model.eval()
    expected = head_outputs(model, task_type)
    save_trained(model, cfg, tmp_path)
    assert not list(tmp_path.rglob("*.bin"))
    reloaded = load_trained(own_head(task_type), cfg, tmp_path, task_type)
    torch.testing.assert_close(head_outputs(reloaded, task_type), expected)
