"""`lmadapt rank`: K sampled answers per prompt, ordered by a metric or a person, written for stage rm;
resumable (a rerun skips ranked prompts and samples what an uninterrupted run would)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmadapt.alignment.rank import parse_order, rank
from lmadapt.cli import app
from lmadapt.config import parse_recipe
from lmadapt.errors import RecipeError
from lmadapt.tasks.preference import load_preferences, pairs_of
from tiny_lm import save_tiny

QUESTIONS = [
    ("count to three", "one two three"),
    ("greet me", "hello how are you today?"),
    ("capital of france?", "the capital of france is paris"),
    ("where did the cat sit?", "the cat sat on the mat"),
    ("say thanks", "thank you very much"),
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


def rank_recipe(tmp: Path, policy: Path, **rank_over):
    rows = [{"id": f"q{i}", "question": q, "answer": a} for i, (q, a) in enumerate(QUESTIONS)]
    tmp.mkdir(parents=True, exist_ok=True)
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {
        "model": str(policy),
        "task": {"type": "generate", "instruction": "Answer:", "text": ["question"], "target": "answer",
                 "metric": "rouge_l", "id": "id", "max_new_tokens": 6},
        "data": {"train": str(prompts), "eval": None, "test": None},
        "stage": "sft",
        "rank": {"k": 4, "temperature": 1.5, "batch_size": 2, "scorer": {"type": "metric"},
                 "output": str(tmp / "rankings.jsonl")} | rank_over,
    }  # fmt: skip
    return parse_recipe(raw)


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metric_ranking_orders_k_samples_best_first_with_provenance(tmp_path, tiny_dir):
    out = rank(rank_recipe(tmp_path, tiny_dir), show=lambda _: None)
    rows = rows_of(out)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3", "q4"]
    for row, (_, gold) in zip(rows, QUESTIONS, strict=True):
        assert len(row["responses"]) == 4 and sorted(row["sample_order"]) == [0, 1, 2, 3]
        assert row["scores"] == sorted(row["scores"], reverse=True) and row["gold"] == gold
        from lmadapt.metrics import rouge_l

        assert row["scores"] == pytest.approx([rouge_l(gold, a) for a in row["responses"]], abs=1e-6)
        prov = row["provenance"]
        assert prov["scorer"] == "metric:rouge_l:answer" and prov["k"] == 4 and prov["temperature"] == 1.5
        assert prov["policy"] == str(tiny_dir) and prov["seed"] in (0, 1, 2)
    assert len({a for r in rows for a in r["responses"]}) > 5  # sampled, not K copies of one greedy answer
    # stage rm reads the file as it is
    rm = parse_recipe({"model": "m", "stage": "rm", "data": {"train": str(out), "eval": None, "test": None},
                       "task": {"type": "preference", "responses": "responses", "scores": "scores"}})  # fmt: skip
    records = load_preferences(rm)["train"]
    assert records[0]["responses"] == rows[0]["responses"] and records[0]["scores"] == rows[0]["scores"]
    assert all(
        pairs_of(r) == [(i, j) for i in range(4) for j in range(i + 1, 4) if r["scores"][i] > r["scores"][j]]
        for r in records
    )


def test_rerun_skips_ranked_prompts_and_resumes_to_the_uninterrupted_file(tmp_path, tiny_dir):
    whole = rows_of(rank(rank_recipe(tmp_path / "a", tiny_dir), show=lambda _: None))
    recipe = rank_recipe(tmp_path / "b", tiny_dir)
    out = Path(recipe.rank.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    # killed after three prompts, in the middle of writing the fourth
    out.write_text("".join(json.dumps(r) + "\n" for r in whole[:3]) + json.dumps(whole[3])[:40])
    said = []
    rank(recipe, show=said.append)
    assert "3 ranked already" in said[0]
    again = rows_of(out)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "provenance"} for r in rows]  # noqa: E731
    assert strip(again) == strip(whole)  # same samples, same order, nothing twice
    said.clear()
    rank(recipe, show=said.append)
    assert "5 ranked already" in said[0] and rows_of(out) == again


def test_a_person_ranks_at_the_terminal_and_can_stop_and_continue(tmp_path, tiny_dir):
    recipe = rank_recipe(tmp_path, tiny_dir, scorer="human", k=3)
    replies = iter(["1 1 2", "two", "3 1 2", "q"])  # two bad replies, then an order, then quit
    shown = []
    out = rank(recipe, ask=lambda _: next(replies), show=shown.append)
    (row,) = rows_of(out)
    assert row["sample_order"] == [2, 0, 1] and row["scores"] is None
    assert row["provenance"]["scorer"] == "human"
    assert any("--- answer 3 ---" in s for s in shown) and any("exactly once" in s for s in shown)
    assert any("[user] Answer:\ncount to three" in s for s in shown)
    # continuing asks only about the prompts not ranked yet
    replies = iter(["1 2 3"] * 4)
    rank(recipe, ask=lambda _: next(replies), show=lambda _: None)
    rows = rows_of(out)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3", "q4"] and rows[0] == row


def test_parse_order():
    assert parse_order("2 1 4 3", 4) == [1, 0, 3, 2]
    assert parse_order("2,1,4,3", 4) == parse_order("2143", 4) == [1, 0, 3, 2]
    for bad in ("1 2 3", "1 2 3 5", "a b c d", "1 1 2 3"):
        with pytest.raises(ValueError):
            parse_order(bad, 4)


def test_rank_problems_are_clear(tmp_path, tiny_dir):
    recipe = rank_recipe(tmp_path, tiny_dir)
    with pytest.raises(RecipeError, match="rank.split is eval, but data.eval is null"):
        rank(recipe.model_copy(update={"rank": recipe.rank.model_copy(update={"split": "eval"})}))
    with pytest.raises(RecipeError, match="output: expected a .jsonl file"):
        rank_recipe(tmp_path, tiny_dir, output="x.csv")
    path = tmp_path / "no-rank.yaml"
    path.write_text(f"model: {tiny_dir}\ntask: {{type: sft}}\nstage: sft\n")
    result = CliRunner().invoke(app, ["rank", str(path)])
    assert result.exit_code == 2 and "no rank: section" in result.output
