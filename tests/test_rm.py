"""stage rm: the K-wise loss against a hand computation, the score at the last real token under both paddings,
training that learns a preference, a LoRA head that reloads to identical scores, resume, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lmadapt.config import parse_recipe
from lmadapt.errors import DataError, RecipeError
from lmadapt.training.ranking_loss import kendall_tau, pairwise_loss, ranking_loss, ranking_metrics
from lmadapt.training.reward_model import encode_answer, last_token_index, pad_rows, reward_scores
from tiny_lm import save_tiny, tiny_tokenizer


def nls(x: float) -> float:
    """-log sigmoid(x), by hand."""
    return math.log(1 + math.exp(-x))


# --- the loss -----------------------------------------------------------------------------------------------
def test_kwise_loss_equals_a_hand_computation():
    # prompt A: 3 answers ranked best first with rewards 2, 0, 1; prompt B: 2 answers, rewards 0.5, 1.5
    rewards = torch.tensor([2.0, 0.0, 1.0, 0.5, 1.5])
    a = (nls(2 - 0) + nls(2 - 1) + nls(0 - 1)) / 3  # pairs (0,1) (0,2) (1,2)
    b = nls(0.5 - 1.5)
    loss = ranking_loss(rewards, [3, 2])
    assert loss.item() == pytest.approx((a + b) / 2, rel=1e-6)  # each prompt weighs the same


def test_kwise_loss_at_k2_is_the_pairwise_loss():
    chosen, rejected = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.1, 0.5, 2.5])
    interleaved = torch.stack([chosen, rejected], dim=1).flatten()
    assert ranking_loss(interleaved, [2, 2, 2]).item() == pytest.approx(
        pairwise_loss(chosen, rejected).item()
    )


def test_kwise_loss_skips_ties_and_refuses_a_batch_without_pairs():
    rewards = torch.tensor([1.0, 3.0, 0.0, 2.0])  # K=4, scores tie 0 with 1 and 2 with 3
    loss = ranking_loss(rewards, [4], [[1.0, 1.0, 0.0, 0.0]])
    hand = (nls(1 - 0) + nls(1 - 2) + nls(3 - 0) + nls(3 - 2)) / 4
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    with pytest.raises(ValueError, match="no prompt"):
        ranking_loss(torch.tensor([1.0, 2.0]), [2], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="sizes add up to 3"):
        ranking_loss(torch.tensor([1.0, 2.0]), [3])


def test_kendall_tau_and_ranking_metrics_by_hand():
    scipy_stats = pytest.importorskip("scipy.stats")
    predicted, truth = [0.9, 0.1, 0.5, 0.5], [3.0, 2.0, 2.0, 0.0]
    assert kendall_tau(predicted, truth) == pytest.approx(scipy_stats.kendalltau(predicted, truth).statistic)
    assert kendall_tau([3.0, 2.0, 1.0]) == pytest.approx(1.0)  # rank order best first, predicted in order
    metrics = ranking_metrics([[2.0, 0.0, 1.0], [0.5, 1.5]], [None, None], ranked=True)
    # pairs: A (0,1) right, (0,2) right, (1,2) wrong; B (0,1) wrong -> 2 of 4
    assert metrics["pairwise_accuracy"] == 0.5 and metrics["pairs"] == 4
    assert metrics["mean_margin"] == pytest.approx((2 + 1 - 1 - 1) / 4)
    assert metrics["top1_accuracy"] == 0.5  # A's best answer gets the top reward, B's does not
    assert metrics["kendall_tau"] == pytest.approx((1 / 3 + -1.0) / 2)


# --- the score is read at the last real token ----------------------------------------------------------------
def tiny_reward_model(pad_is_eos: bool):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = tiny_tokenizer()
    if pad_is_eos:  # SmolLM2 / Llama: no pad token of their own, so pad = EOS, which ends every answer
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id, num_labels=1,
        initializer_range=0.2,
    )  # fmt: skip
    return LlamaForSequenceClassification(config).eval(), tok


def test_score_is_read_at_the_last_real_token_under_left_and_right_padding():
    model, tok = tiny_reward_model(pad_is_eos=True)
    rows = [
        tok("the cat sat on the mat</s>")["input_ids"],
        tok("hello</s>")["input_ids"],
        tok("one two three four five six</s>")["input_ids"],
    ]
    with torch.no_grad():
        alone = [
            reward_scores(model, torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)).item()
            for r in rows
        ]
        for side in ("right", "left"):
            batch = pad_rows(rows, tok.pad_token_id, side)
            assert last_token_index(batch["attention_mask"]).tolist() == (
                [len(r) - 1 for r in rows] if side == "right" else [batch["input_ids"].shape[1] - 1] * 3
            )
            scores = reward_scores(model, batch["input_ids"], batch["attention_mask"]).tolist()
            assert scores == pytest.approx(alone, abs=1e-5), side
        # transformers' own pooling looks for the last non-pad id: with pad = EOS it skips the real EOS
        own = model(**pad_rows(rows, tok.pad_token_id, "right")).logits[:, 0].tolist()
        assert all(abs(a - b) > 1e-4 for a, b in zip(own, alone, strict=True))


# --- training end to end (tiny Llama) --------------------------------------------------------------------
PROMPTS = ["count to three", "greet me", "capital of france?", "where did the cat sit?", "say thanks",
           "last number", "what is one", "pick a word", "answer the question", "hello"]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def preference_files(tmp: Path) -> dict:
    """Pairs where the chosen answer says yes and the rejected one says no: learnable from the answer alone."""
    rows = [
        {"prompt": p, "chosen": f"yes {w}", "rejected": f"no {w}"} for p in PROMPTS for w in ("cat", "dog")
    ]
    return {"train": write_jsonl(tmp / "train.jsonl", rows[:16]), "eval": write_jsonl(tmp / "eval.jsonl", rows[16:]),
            "test": write_jsonl(tmp / "test.jsonl", rows[16:])}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


def rm_recipe(tmp: Path, model: Path, data: dict, **over):
    raw = {
        "model": str(model),
        "task": {"type": "preference"},
        "data": data,
        "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target": "all-linear"},
        "stage": "rm",
        "train": {
            "epochs": 6,
            "lr": 2e-2,
            "batch_size": 4,
            "max_length": 64,
            "num_threads": 1,
            "logging_steps": 2,
        },
        "eval": {"every": "no"},
        "output": str(tmp / "rm-run"),
    }
    for key, value in over.items():
        raw[key] = raw[key] | value if key in ("data", "train", "eval") else value
    return parse_recipe(raw)


def test_lora_rm_learns_the_preference_and_reloads_to_identical_scores(tmp_path, tiny_dir):
    from lmadapt.alignment.rewards import build_reward
    from lmadapt.config.reward import RmReward
    from lmadapt.stages import run_stage

    recipe = rm_recipe(tmp_path, tiny_dir, preference_files(tmp_path))
    run = run_stage(recipe)
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert final["eval"]["pairwise_accuracy"] == 1.0 > final["eval"]["pairwise_accuracy_before"]
    assert (
        final["eval"]["mean_margin"] > 0.5 and "kendall_tau" not in final["eval"]
    )  # pairs: no K-wise metrics
    # the head is saved with the adapter (modules_to_save), not left at its random initialisation
    from safetensors import safe_open

    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert any("score" in k for k in f.keys())  # noqa: SIM118 (safe_open is not a dict)
    # a reloaded RM gives the scores the trained one wrote (predictions.jsonl, rounded to 4 places)
    reward = build_reward(RmReward(run=str(run)))
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in Path(recipe.data.test).read_text().splitlines()]
    again = reward(
        [r["prompt"] for r in test] * 2, [r["chosen"] for r in test] + [r["rejected"] for r in test], test * 2
    )
    written = [r["rewards"][0] for r in rows] + [r["rewards"][1] for r in rows]
    assert again == pytest.approx(written, abs=1e-4)
    assert reward([test[0]["prompt"]], [test[0]["chosen"]], [test[0]]) == build_reward(
        RmReward(run=str(run))
    )([test[0]["prompt"]], [test[0]["chosen"]], [test[0]])  # two reloads: bit-identical
    assert (run / "plots" / "loss.png").is_file()


def test_kwise_rankings_with_varying_k_train_and_report_kendall_tau(tmp_path, tiny_dir):
    from lmadapt.stages import run_stage

    words = ["yes yes", "yes", "maybe", "no"]
    rows = [
        {"prompt": p, "answers": words[: 2 + i % 3], "score": [3, 2, 1, 0][: 2 + i % 3]}
        for i, p in enumerate(PROMPTS)
    ]
    rows.append({"prompt": "tie", "answers": ["a", "b"], "score": [1, 1]})  # no pair: left out, and said so
    data = {
        "train": write_jsonl(tmp_path / "r.jsonl", rows),
        "eval": None,
        "test": write_jsonl(tmp_path / "t.jsonl", rows[:6]),
    }
    task = {"type": "preference", "responses": "answers", "scores": "score", "template": "plain"}
    run = run_stage(
        rm_recipe(tmp_path, tiny_dir, data, task=task, method={"type": "full"}, train={"lr": 1e-3})
    )
    test = json.loads((run / "metrics.json").read_text())["final"]["test"]
    assert {"kendall_tau", "top1_accuracy", "pairwise_accuracy", "mean_margin"} <= set(test)
    assert test["pairwise_accuracy"] > test["pairwise_accuracy_before"] and test["kendall_tau"] > 0.5
    assert (
        "warning: train: 1 prompts left out (their answers tie or are the same text"
        in (run / "log.txt").read_text()
    )
    assert (run / "model" / "model.safetensors").is_file()


def test_rm_resumes_from_a_checkpoint_to_the_uninterrupted_result(tmp_path, tiny_dir):
    from transformers import TrainerCallback

    from lmadapt.stages.rm import run

    data = preference_files(tmp_path)
    over = {"train": {"max_steps": 6, "save_every": 2, "epochs": 1, "shuffle": True}}
    whole = run(rm_recipe(tmp_path / "a", tiny_dir, data, **over))

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt  # like a kill after checkpoint-2 was written

    recipe = rm_recipe(tmp_path / "b", tiny_dir, data, **over)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, callbacks=[Crash()])
    resumed = run(recipe, resume=True)
    assert "resuming from checkpoint-2" in (resumed / "log.txt").read_text()
    read = lambda p: json.loads((p / "metrics.json").read_text())["final"]  # noqa: E731
    assert read(resumed) == read(whole)
    assert (resumed / "predictions.jsonl").read_text() == (whole / "predictions.jsonl").read_text()


def test_rm_recipe_problems_are_recipe_errors_before_anything_is_written(tmp_path, tiny_dir):
    from lmadapt.stages import run_stage

    data = preference_files(tmp_path)
    with pytest.raises(RecipeError, match="task type 'sft' is not supported"):
        run_stage(rm_recipe(tmp_path, tiny_dir, data, task={"type": "sft"}))
    with pytest.raises(RecipeError, match="adds virtual tokens"):
        run_stage(rm_recipe(tmp_path, tiny_dir, data, method={"type": "prompt", "num_virtual_tokens": 4}))
    with pytest.raises(RecipeError, match="stage rm does not read it"):
        rm_recipe(tmp_path, tiny_dir, data, train={"packing": "rows"})
    ties = write_jsonl(tmp_path / "ties.jsonl", [{"prompt": "p", "r": ["a", "b"], "s": [0, 0]}])
    task = {"type": "preference", "responses": "r", "scores": "s"}
    with pytest.raises(DataError, match="none has two different answers of different rank"):
        run_stage(rm_recipe(tmp_path, tiny_dir, {"train": ties, "eval": None, "test": None}, task=task))
    same = write_jsonl(tmp_path / "same.jsonl", [{"prompt": f"p{i}", "chosen": "a b", "rejected": "a b "}
                                                 for i in range(3)])  # fmt: skip
    with pytest.raises(DataError, match=r"\(3 have the chosen answer equal to the rejected\)"):
        run_stage(rm_recipe(tmp_path, tiny_dir, {"train": same, "eval": None, "test": None}))
    assert not (tmp_path / "rm-run").exists() and not (tmp_path / ".rm-run.incomplete").exists()


def test_pairs_with_the_same_answer_are_left_out_with_a_warning(tmp_path, tiny_dir):
    from lmadapt.stages import run_stage

    data = preference_files(tmp_path)
    rows = [json.loads(line) for line in Path(data["train"]).read_text().splitlines()]
    rows[:3] = [r | {"rejected": r["chosen"]} for r in rows[:3]]
    data["train"] = write_jsonl(tmp_path / "some-same.jsonl", rows)
    out = Path(run_stage(rm_recipe(tmp_path, tiny_dir, data, train={"epochs": 1})))
    log = (out / "log.txt").read_text()
    assert "warning: train: 3 prompts left out (their answers tie or are the same text" in log


def test_long_prompts_are_cut_at_the_start_so_the_answer_end_stays():
    tok = tiny_tokenizer()
    ids = encode_answer(tok, "the cat sat on the mat " * 20, "yes dog", "model", 16)
    assert len(ids) == 16 and tok.decode(ids).endswith("yes dog<|im_end|>\n")


def test_identical_answers_are_scored_once_and_the_loss_is_unchanged():
    from lmadapt.stages.rm import RankCollator

    model, tok = tiny_reward_model(pad_is_eos=False)
    yes, no = tok("yes</s>")["input_ids"], tok("no no</s>")["input_ids"]
    features = [
        {"input_ids": [yes, no, yes, no], "scores": [1.0, 0.0, 1.0, 0.0]},
        {"input_ids": [no, yes], "scores": [1.0, 0.0]},
    ]
    batch = RankCollator(tok.pad_token_id)(features)
    assert batch["input_ids"].shape[0] == 2 and batch["answer"].tolist() == [0, 1, 0, 1, 1, 0]
    with torch.no_grad():
        rewards = reward_scores(model, batch["input_ids"], batch["attention_mask"])[batch["answer"]]
        every = pad_rows([ids for f in features for ids in f["input_ids"]], tok.pad_token_id)
        direct = reward_scores(model, every["input_ids"], every["attention_mask"])
    assert rewards.tolist() == pytest.approx(direct.tolist(), abs=1e-6)
    scores = [f["scores"] for f in features]
    assert ranking_loss(rewards, [4, 2], scores).item() == pytest.approx(
        ranking_loss(direct, [4, 2], scores).item()
    )


def test_an_encoder_reward_model_trains_with_its_own_pooling(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from lmadapt.stages import run_stage

    tok = tiny_tokenizer(chat_template=None)  # no chat template: the alpaca layout
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=256, pad_token_id=tok.pad_token_id)  # fmt: skip
    folder = tmp_path / "tiny-bert"
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    recipe = rm_recipe(
        tmp_path, folder, preference_files(tmp_path), method={"type": "full"}, train={"lr": 1e-3}
    )
    run = run_stage(recipe)
    final = json.loads((run / "metrics.json").read_text())["final"]["eval"]
    assert final["pairwise_accuracy"] == 1.0 > final["pairwise_accuracy_before"]
    assert "template alpaca" in (run / "log.txt").read_text()
