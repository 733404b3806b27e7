"""Reward sources (lmadapt.alignment.rewards) and the preference task's records (lmadapt.tasks.preference)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from lmadapt.alignment.rewards import build_reward, metric_scores
from lmadapt.config import parse_recipe
from lmadapt.data import Record
from lmadapt.errors import DataError, LmadaptError, RecipeError
from lmadapt.tasks.preference import PreferenceConfig, load_preferences, pairs_of, preference_records

MESH_TASK = {
    "type": "generate",
    "instruction": "output 1 or 0",
    "text": ["title"],
    "target": "label",
    "metric": "label_f1",
    "labels": ["1", "0"],
    "label_map": {"Humans": "1", "Animals": "0"},
}


def recipe_with(reward: dict, task: dict | None = None, stage: str = "rm"):
    """A recipe's `reward:` section, validated (stage rm does not read it, so take the section's model)."""
    from pydantic import TypeAdapter

    from lmadapt.config.reward import RewardConfig

    return TypeAdapter(RewardConfig).validate_python(reward), task


# --- metric rewards --------------------------------------------------------------------------------------
def test_label_correct_reward_defaults_from_the_generate_task():
    recipe = parse_recipe({"model": "m", "task": MESH_TASK, "stage": "sft"})
    reward = build_reward(recipe_with({"type": "metric"})[0], task=recipe.task)
    records = [{"label": "Humans"}, {"label": "Humans"}, {"label": "Animals"}, {"label": "Animals"}]
    answers = ["1", "0 - it is about rats", "0", "I cannot tell"]
    assert reward(["p"] * 4, answers, records) == [1.0, 0.0, 1.0, 0.0]
    assert reward.name == "metric:label_correct:label"


def test_keyword_f1_and_rouge_l_rewards_against_a_gold_field():
    kw = build_reward(recipe_with({"type": "metric", "name": "keyword_f1", "gold": "keywords"})[0])
    records = [{"keywords": ["Cancer", "cell biology"]}, {"keywords": ["mouse"]}]
    # first: 1 of 2 predicted is right (P=.5), 1 of 2 gold found (R=.5) -> F1 .5; second: nothing right
    assert kw(["p", "p"], ["cancer, protein", "rat"], records) == pytest.approx([0.5, 0.0])
    rouge = build_reward(recipe_with({"type": "metric", "name": "rouge_l", "gold": "answer"})[0])
    # LCS "the cat sat" = 3 of 4 candidate and 3 of 3 reference tokens -> F1 = 2*.75*1/1.75
    assert rouge(["p"], ["the cat sat down"], [{"answer": "the cat sat"}]) == pytest.approx([6 / 7])


def test_metric_reward_needs_metric_and_gold_without_a_generate_task():
    with pytest.raises(RecipeError, match="set name and gold"):
        build_reward(recipe_with({"type": "metric"})[0], task=None)
    with pytest.raises(RecipeError, match="needs labels"):
        build_reward(recipe_with({"type": "metric", "name": "label_correct", "gold": "label"})[0])


def test_a_record_without_the_gold_field_is_named():
    reward = build_reward(recipe_with({"type": "metric", "name": "rouge_l", "gold": "answer"})[0])
    record = Record({"question": "q"}, where="data/train.jsonl:7")
    with pytest.raises(LmadaptError, match=r"data/train.jsonl:7: field 'answer' \(reward.gold\): missing"):
        reward(["p"], ["a"], [record])


def test_metric_scores_keep_the_order_and_length():
    scores = metric_scores(
        "label_correct", ["yes", "no", "yes"], ["y", "n", "n"], ["yes", "no"], {"y": "yes", "n": "no"}
    )
    assert scores == [1.0, 1.0, 0.0]


# --- python rewards --------------------------------------------------------------------------------------
@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent(
            """
            def brevity(prompts, completions, records):
                return [1.0 / (1 + len(c.split())) for c in completions]

            def wrong_length(prompts, completions, records):
                return [0.0]

            def not_finite(prompts, completions, records):
                return [float("nan")] * len(completions)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def test_python_reward_calls_the_named_function(user_module):
    reward = build_reward(recipe_with({"type": "python", "function": f"{user_module}:brevity"})[0])
    assert reward(["p", "p"], ["one", "one two three"], [{}, {}]) == [0.5, 0.25]


def test_python_reward_problems_are_clear(user_module):
    with pytest.raises(LmadaptError, match="returned 1 scores for 2 completions"):
        build_reward(recipe_with({"type": "python", "function": f"{user_module}:wrong_length"})[0])(
            ["p", "p"], ["a", "b"], [{}, {}]
        )
    with pytest.raises(LmadaptError, match="non-finite"):
        build_reward(recipe_with({"type": "python", "function": f"{user_module}:not_finite"})[0])(
            ["p"], ["a"], [{}]
        )
    with pytest.raises(RecipeError, match="has no function 'missing'"):
        build_reward(recipe_with({"type": "python", "function": f"{user_module}:missing"})[0])
    with pytest.raises(RecipeError, match="cannot import no_such_module_xyz"):
        build_reward(recipe_with({"type": "python", "function": "no_such_module_xyz:f"})[0])


def test_reward_sections_are_strict():
    bad = {"model": "m", "task": MESH_TASK, "stage": "sft", "reward": {"type": "python", "function": "a.b"}}
    with pytest.raises(RecipeError, match="package.module:function"):
        parse_recipe(bad)
    with pytest.raises(RecipeError, match="stage sft has no reward to maximise"):
        parse_recipe(bad | {"reward": {"type": "metric", "name": "rouge_l", "gold": "x"}})
    with pytest.raises(RecipeError, match="unknown key 'reward.gld'"):
        parse_recipe(bad | {"stage": "rm", "reward": {"type": "metric", "gld": "x"}})


# --- preference records -----------------------------------------------------------------------------------
def test_pairs_become_two_answer_rankings():
    cfg = PreferenceConfig(chosen="good", rejected="bad", system="Be kind.")
    out = preference_records([{"prompt": "Hi?", "good": "Hello!", "bad": "Go away."}], cfg)
    assert out == [
        {
            "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
            "responses": ["Hello!", "Go away."],
            "scores": None,
        }
    ]
    assert pairs_of(out[0]) == [(0, 1)]


def test_llamafactory_dpo_files_are_read_as_they_are(tmp_path):
    raw = [
        {
            "conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q?"}],
            "chosen": {"from": "gpt", "value": "good"},
            "rejected": {"from": "gpt", "value": "bad"},
        }
    ]
    path = tmp_path / "dpo_en_demo.json"
    path.write_text(json.dumps(raw))
    recipe = parse_recipe(
        {
            "model": "m",
            "task": {"type": "preference", "prompt": "conversations"},
            "stage": "rm",
            "data": {"train": str(path), "eval": None, "test": None},
        }
    )
    (record,) = load_preferences(recipe)["train"]
    assert record["prompt"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    assert record["responses"] == ["good", "bad"]


def test_rankings_vary_in_k_sort_by_score_and_skip_ties():
    cfg = PreferenceConfig(responses="answers", scores="f1")
    records = [
        {"prompt": "a", "answers": ["x", "y", "z"], "f1": [0.1, 0.9, 0.5]},
        {"prompt": "b", "answers": ["p", "q", "r", "s"], "f1": [1, 0, 1, 0]},
        {"prompt": "c", "answers": ["u", "v"]},  # no scores: the order given is the ranking
    ]
    out = preference_records(records, cfg)
    assert out[0]["responses"] == ["y", "z", "x"] and out[0]["scores"] == [0.9, 0.5, 0.1]
    assert out[1]["responses"] == ["p", "r", "q", "s"]  # stable: ties keep their order
    assert pairs_of(out[1]) == [(0, 2), (0, 3), (1, 2), (1, 3)]  # no pair between equal scores
    assert pairs_of(out[0]) == [(0, 1), (0, 2), (1, 2)] and out[2]["scores"] is None


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "a", "answers": ["only one"]}, "expected a list of at least 2 answers"),
        ({"prompt": "", "answers": ["x", "y"]}, "field 'prompt': expected a non-empty string"),
        ({"prompt": [{"role": "assistant", "content": "hi"}], "answers": ["x", "y"]}, "must end with a user"),
        ({"prompt": "a", "answers": ["x", {"role": "user", "content": "y"}]}, "a user turn, not assistant"),
        ({"prompt": "a", "answers": ["x", "y"], "s": [1.0]}, "1 scores for 2 answers"),
    ],
)
def test_bad_preference_records_name_file_and_line(record, message):
    cfg = PreferenceConfig(responses="answers", scores="s")
    with pytest.raises(DataError, match=message) as info:
        preference_records([Record(record, where="rank.jsonl:3")], cfg)
    assert str(info.value).startswith("rank.jsonl:3: ")
