"""`task.attention: bidirectional`: decoders that attend both ways for tagging and spans (lmadapt.tasks.heads).

Tiny random Gemma 3 text models (tests/tiny_lm.py; nothing downloaded): the only model type whose
transformers code has a flag that drops the causal mask everywhere. Behaviour, not flags: a later token must
reach an earlier position's logits with it on and must not with it off, in every attention implementation and
on both kinds of Gemma 3 layer; the flag must survive a run's save and reload; any other model type is a
recipe error naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import BertConfig, BertModel, Gemma3TextConfig
from typer.testing import CliRunner

from lmadapt.cli import app
from lmadapt.config import parse_recipe
from lmadapt.errors import RecipeError
from lmadapt.predict import predict_file
from lmadapt.runs import RunDir
from lmadapt.stages import run_stage as run
from lmadapt.tasks import build_model, get_task
from lmadapt.tasks.heads import BackboneForTokenClassification
from test_tagging_heads import ner, recipe_for, saved_predictions, write_splits
from tiny_lm import save_tiny, save_tiny_gemma3, tiny_tokenizer

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    return str(save_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3")))


def tag_task(attention: str, **extra):
    recipe = parse_recipe({"model": "x", "task": {"type": "tag", "attention": attention, **extra}})
    return get_task(recipe.task)


def tagger(attention: str, layer: str, implementation: str) -> BackboneForTokenClassification:
    """A tiny Gemma 3 tagger whose two layers are both `layer` ("full_attention" / "sliding_attention")."""
    config = Gemma3TextConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, sliding_window=16, pad_token_id=0,
        layer_types=[layer, layer], num_labels=3, attn_implementation=implementation,
        use_bidirectional_attention=attention == "bidirectional",
    )  # fmt: skip
    torch.manual_seed(0)
    return BackboneForTokenClassification(config).eval()


def logits(model, ids: list[int], mask: list[int] | None = None) -> torch.Tensor:
    mask = mask or [1] * len(ids)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([mask])).logits[0]


# --- (1) behaviour: what each position sees ---------------------------------------------------------------
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("layer", ["full_attention", "sliding_attention"])
def test_a_later_token_changes_earlier_logits_only_when_bidirectional(implementation, layer):
    sentence, changed = [5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 42]  # only the last token differs
    causal = tagger("causal", layer, implementation)
    bidirectional = tagger("bidirectional", layer, implementation)
    assert causal.backbone.config._attn_implementation == implementation

    before, after = logits(causal, sentence), logits(causal, changed)
    torch.testing.assert_close(before[:-1], after[:-1])  # causal: the positions before it cannot see it
    before, after = logits(bidirectional, sentence), logits(bidirectional, changed)
    for position in range(len(sentence) - 1):  # bidirectional: every earlier position does
        assert not torch.allclose(before[position], after[position], atol=1e-4), position
    # the same weights (the seed): the mask is the only difference
    assert all(
        torch.equal(a, b) for a, b in zip(causal.parameters(), bidirectional.parameters(), strict=True)
    )


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_bidirectional_still_ignores_padding(implementation):
    """Right padding (as build_model sets for token tasks) sits after the words: a bidirectional row must not
    read it, so what the pad tokens are, and how many, does not change the words' logits."""
    model = tagger("bidirectional", "full_attention", implementation)
    words = [5, 6, 7, 8]
    alone = logits(model, words)
    for pads in ([0, 0], [17, 99, 3]):
        padded = logits(model, words + pads, [1] * len(words) + [0] * len(pads))
        torch.testing.assert_close(padded[: len(words)], alone, rtol=1e-4, atol=1e-5)


def test_build_model_turns_it_on_for_the_backbone_and_off_by_default(gemma3):
    model_cfg = parse_recipe({"model": gemma3, "task": {"type": "tag"}}).model
    on, _ = build_model(model_cfg, tag_task("bidirectional", labels=LABELS))
    off, _ = build_model(model_cfg, tag_task("causal", labels=LABELS))
    assert on.config.use_bidirectional_attention and not off.config.use_bidirectional_attention
    # the window as transformers' own bidirectional Gemma 3 configs have it (halved: it reaches both ways)
    built = Gemma3TextConfig.from_dict(off.config.to_dict() | {"use_bidirectional_attention": True})
    assert on.config.sliding_window == built.sliding_window < off.config.sliding_window
    # the same pretrained weights and head (the seed): the mask is all that differs
    assert all(
        torch.equal(a, b) for a, b in zip(on.state_dict().values(), off.state_dict().values(), strict=True)
    )
    ids = tiny_tokenizer()("the cat sat on the mat", return_tensors="pt")["input_ids"][0].tolist()
    changed = ids[:-1] + [ids[0] if ids[-1] != ids[0] else ids[1]]
    on.eval(), off.eval()
    assert not torch.allclose(logits(on, ids)[0], logits(on, changed)[0], atol=1e-4)
    torch.testing.assert_close(logits(off, ids)[0], logits(off, changed)[0])


def test_recipe_default_and_strict_values():
    assert tag_task("causal").cfg.attention == "causal"
    assert parse_recipe({"model": "x", "task": {"type": "tag"}}).task.attention == "causal"
    assert parse_recipe({"model": "x", "task": {"type": "span", "attention": "bidirectional"}}).task.attention
    with pytest.raises(RecipeError, match="attention"):
        parse_recipe({"model": "x", "task": {"type": "tag", "attention": "both"}})


# --- (2) a run saves it, a reload gets it back ------------------------------------------------------------
@pytest.mark.parametrize("method", ["lora", "full"])
def test_bidirectional_run_reloads_with_identical_predictions(tmp_path, gemma3, method):
    data = write_splits(tmp_path, ner, sizes=(48, 16, 16))
    method_cfg = (
        {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0} if method == "lora" else {"type": method}
    )
    recipe = recipe_for(
        tmp_path, gemma3, {"type": "tag", "attention": "bidirectional"}, method_cfg, data, epochs=1
    )
    run_dir = RunDir(run(recipe))

    assert run_dir.read_config().task.attention == "bidirectional"
    if method == "full":  # the saved model's own config has the flag, and the window Gemma 3 was built with
        saved = json.loads((run_dir / "model" / "config.json").read_text())
        assert saved["use_bidirectional_attention"] is True
        original = json.loads((Path(gemma3) / "config.json").read_text())
        assert saved["sliding_window"] == original["sliding_window"]
    out = tmp_path / "pred.jsonl"
    assert predict_file(run_dir.path, data["test"], out) == 16
    again = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
    assert again == saved_predictions(run_dir)

    # the reload attends both ways. LoRA: the base is rebuilt from the recipe, so the same adapter on a causal
    # base gives other logits. Full: the saved model's own config keeps the flag, whatever the recipe says.
    from lmadapt.methods import load_trained

    config = run_dir.read_config()
    ids = tiny_tokenizer()("paris and john smith sat", return_tensors="pt")["input_ids"][0].tolist()
    reloaded = {}
    for attention in ("bidirectional", "causal"):
        task = get_task(config.task.model_copy(update={"attention": attention}))
        base, _ = build_model(config.model, task, config.train.seed)
        reloaded[attention] = logits(load_trained(base, config.method, run_dir.path, task.task_type), ids)
    same = torch.allclose(reloaded["bidirectional"][0], reloaded["causal"][0], atol=1e-4)
    assert same == (method == "full")


# --- (3) where it cannot be had: a recipe error naming the model type, exit 2 ----------------------------
@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = tiny_tokenizer()
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    BertModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_other_model_types_are_a_recipe_error_naming_the_type(request, arch):
    folder = request.getfixturevalue(arch)
    with pytest.raises(RecipeError, match=rf"model type '{arch}'.*task.attention: causal"):
        build_model(
            parse_recipe({"model": folder, "task": {"type": "tag"}}).model,
            tag_task("bidirectional", labels=LABELS),
        )
    build_model(
        parse_recipe({"model": folder, "task": {"type": "tag"}}).model, tag_task("causal", labels=LABELS)
    )  # the default works


def test_cli_exits_2_with_the_model_type(tmp_path, llama):
    data = write_splits(tmp_path, ner, sizes=(8, 4, 4))
    recipe = {
        "model": llama,
        "task": {"type": "tag"},
        "data": data,
        "method": {"type": "full"},
        "train": {"epochs": 1, "num_threads": 1},
        "output": str(tmp_path / "run"),
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "r.yaml"), "task.attention=bidirectional"])
    assert result.exit_code == 2, result.output
    assert "model type 'llama'" in result.output and "task.attention" in result.output
    assert not (tmp_path / "run" / "model").exists()
