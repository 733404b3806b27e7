"""stage ppo: the PPO arithmetic against hand computations, and the stage on a tiny random Llama.

The stage tests check behaviour: the KL penalty is zero while policy == reference, an update moves only
the policy's trainable tensors and the value head (base weights and the reference stay put), a reward that
prefers one token rises over a few steps, and a run stopped after a checkpoint resumes to the same result.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from lmadapt.alignment import ppo_math
from lmadapt.config import parse_recipe
from lmadapt.errors import RecipeError
from tiny_lm import save_tiny

# --- ppo_math ---------------------------------------------------------------------------------------------


def test_kl_estimators_are_zero_when_policy_equals_reference_and_k3_is_never_negative():
    logp = torch.log(torch.tensor([[0.2, 0.5, 0.9]]))
    assert torch.equal(ppo_math.kl_per_token(logp, logp, "k1"), torch.zeros(1, 3))
    assert torch.equal(ppo_math.kl_per_token(logp, logp, "k3"), torch.zeros(1, 3))
    ref = torch.log(torch.tensor([[0.4, 0.1, 0.9]]))
    k1 = ppo_math.kl_per_token(logp, ref, "k1")
    k3 = ppo_math.kl_per_token(logp, ref, "k3")
    assert k1[0, 0] < 0  # log 0.2 - log 0.4: a single-sample k1 can be negative
    assert (k3 >= 0).all()
    r = 0.4 / 0.2  # k3 = (r - 1) - log r with r = q / p
    assert k3[0, 0].item() == pytest.approx(r - 1 - math.log(r), rel=1e-6)


def test_token_rewards_put_the_score_on_the_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    rewards = ppo_math.token_rewards(torch.tensor([1.0, -2.0]), kl, 0.5, mask)
    expected = torch.tensor([[-0.05, -0.1, -0.15 + 1.0], [-0.25 - 2.0, 0.0, 0.0]])
    assert torch.allclose(rewards, expected)


def test_gae_matches_a_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.4]])
    mask = torch.ones(1, 3)
    gamma, lam = 0.9, 0.8
    d2 = 1.0 - 0.4
    d1 = 0.0 + gamma * 0.4 - 0.2
    d0 = 0.0 + gamma * 0.2 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    adv, ret = ppo_math.gae(rewards, values, mask, gamma, lam)
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2]]))
    assert torch.allclose(ret, adv + values)


def test_gae_ignores_padding_after_the_last_token():
    rewards = torch.tensor([[0.0, 2.0, 7.0, 7.0]])
    values = torch.tensor([[0.1, 0.3, 5.0, 5.0]])
    padded = ppo_math.gae(rewards, values, torch.tensor([[1, 1, 0, 0]]), 1.0, 0.95)
    short = ppo_math.gae(rewards[:, :2], values[:, :2], torch.ones(1, 2), 1.0, 0.95)
    assert torch.allclose(padded[0][:, :2], short[0]) and torch.all(padded[0][:, 2:] == 0)
    assert torch.allclose(padded[1][:, :2], short[1])


def test_whiten_gives_zero_mean_unit_variance_over_real_tokens():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    out = ppo_math.whiten(x, mask)
    real = out[mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.var().item() == pytest.approx(1.0, rel=1e-4)
    assert torch.all(out[~mask.bool()] == 0)


def test_policy_loss_clips_large_ratios_and_reports_the_clip_fraction():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 1.0]]))  # ratio 1.5 on token 0, 1.0 on token 1
    adv = torch.tensor([[1.0, 1.0]])
    loss, clip_frac = ppo_math.policy_loss(new, old, adv, torch.ones(1, 2), clip=0.2)
    assert loss.item() == pytest.approx(-(1.2 + 1.0) / 2)  # positive advantage: the ratio counts up to 1.2
    assert clip_frac.item() == pytest.approx(0.5)
    loss_neg, _ = ppo_math.policy_loss(new, old, -adv, torch.ones(1, 2), clip=0.2)
    assert loss_neg.item() == pytest.approx((1.5 + 1.0) / 2)  # negative advantage: the unclipped is worse


def test_value_loss_is_clipped_around_the_old_values():
    old = torch.tensor([[0.0]])
    returns = torch.tensor([[1.0]])
    loss, frac = ppo_math.value_loss(torch.tensor([[1.0]]), old, returns, torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.8**2)  # the clipped value 0.2 counts (max of the two)
    assert frac.item() == 1.0
    loss, frac = ppo_math.value_loss(torch.tensor([[0.1]]), old, returns, torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.9**2) and frac.item() == 0.0


def test_answers_without_eos_are_penalised():
    scores = ppo_math.penalize_no_eos(torch.tensor([1.0, 1.0]), torch.tensor([True, False]), 0.75)
    assert scores.tolist() == [1.0, 0.25]


def test_entropy_and_logprobs_of_a_uniform_distribution():
    logits = torch.zeros(1, 2, 4)
    assert torch.allclose(ppo_math.entropy_from_logits(logits), torch.full((1, 2), math.log(4)))
    assert torch.allclose(
        ppo_math.logprobs_of(logits, torch.tensor([[0, 3]])), torch.full((1, 2), -math.log(4))
    )


def test_adaptive_kl_controller_moves_towards_the_target_and_fixed_stays():
    ctl = ppo_math.KLController(0.1, target=1.0, horizon=100)
    assert ctl.update(3.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))  # error clipped at +20%
    value = ctl.value
    assert ctl.update(0.5, 10) == pytest.approx(value * (1 - 0.2 * 10 / 100))
    restored = ppo_math.KLController(0.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored == ctl
    fixed = ppo_math.KLController(0.1)
    assert fixed.update(50.0, 1000) == 0.1


# --- the stage on a tiny model ---------------------------------------------------------------------------

WORDS = ["the cat sat", "hello how are you", "one two three", "the dog sat on the log", "what is the capital"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llama-ppo"))


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    """A Python reward: the share of answer characters that are 'e' (a fixed-token preference, dense)."""
    (tmp_path / "ppo_test_reward.py").write_text(
        "def share_of_e(prompts, completions, records):\n"
        "    return [c.count('e') / max(len(c), 1) for c in completions]\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "ppo_test_reward:share_of_e"
    sys.modules.pop("ppo_test_reward", None)


def ppo_recipe(tmp: Path, model: Path, reward: dict, **over):
    rows = [
        {"id": i, "text": WORDS[i % len(WORDS)] + f" {i}", "label": "yes" if i % 2 else "no"}
        for i in range(16)
    ]
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    raw = {
        "model": str(model),
        "task": {"type": "generate", "instruction": "answer yes or no", "text": ["text"], "target": "label",
                 "metric": "label_f1", "labels": ["yes", "no"], "id": "id", "max_new_tokens": 6},
        "data": {"train": str(data), "eval": None, "test": str(data), "max_test": 4},
        "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target": "all-linear"},
        "stage": "ppo",
        "reward": reward,
        "ppo": {"steps": 2, "prompts_per_step": 8, "minibatch_size": 4, "ppo_epochs": 2, "kl_coef": 0.01},
        "train": {"lr": 5e-3, "max_length": 64, "seed": 0, "num_threads": 1, "batch_size": 4},
        "output": str(tmp / "run"),
    }  # fmt: skip
    for key, value in over.items():
        raw[key] = raw[key] | value if key in ("ppo", "train", "data") else value
    return parse_recipe(raw)


def tiny_setup(recipe, tmp: Path):
    from lmadapt.alignment.policy import load_policy
    from lmadapt.runs import RunDir
    from lmadapt.stages import ppo
    from lmadapt.stages.sft import load_records

    model, tok, template = load_policy(recipe)
    records = load_records(recipe)["train"]
    prompts = ppo.build_prompts(recipe, records, tok, template)
    run_dir = RunDir(tmp / "scratch")
    return ppo.setup_models(model, tok, template, recipe, run_dir), records, prompts


@pytest.mark.parametrize("method", ["lora", "full"])
def test_kl_penalty_is_zero_while_policy_equals_reference(tiny_dir, tmp_path, method):
    from lmadapt.stages import ppo

    over = {} if method == "lora" else {"method": {"type": "full"}}
    recipe = ppo_recipe(tmp_path, tiny_dir, {"type": "metric"}, **over)
    setup, _, prompts = tiny_setup(recipe, tmp_path)
    torch.manual_seed(0)
    batch = ppo.rollout(setup, prompts[:6], recipe.ppo, recipe.task)
    with torch.no_grad():
        policy, ref = ppo.forward(setup, batch), ppo.forward(setup, batch, reference=True)
    assert batch["mask"].sum() > 0
    for kind in ("k1", "k3"):
        kl = ppo_math.kl_per_token(policy["logprobs"], ref["logprobs"], kind) * batch["mask"]
        assert kl.abs().max().item() < 1e-5


def test_a_ppo_update_changes_only_the_policy_adapter_and_the_value_head(tiny_dir, tmp_path, reward_module):
    from lmadapt.alignment.rewards import build_reward
    from lmadapt.stages import ppo

    recipe = ppo_recipe(tmp_path, tiny_dir, {"type": "python", "function": reward_module})
    setup, records, prompts = tiny_setup(recipe, tmp_path)
    before = {n: p.detach().clone() for n, p in setup.policy.named_parameters()}
    head_before = setup.value_head.weight.detach().clone()
    torch.manual_seed(0)
    probe = ppo.rollout(setup, prompts[:4], recipe.ppo, recipe.task)
    with torch.no_grad():
        ref_before = ppo.forward(setup, probe, reference=True)["logprobs"]
    ppo.train_step(setup, recipe, records, prompts, build_reward(recipe.reward), None, step=1)
    changed = {n for n, p in setup.policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)  # only the adapter moved; base weights are frozen
    assert {n for n, p in setup.policy.named_parameters() if p.requires_grad} >= changed
    assert not torch.equal(setup.value_head.weight, head_before)
    with torch.no_grad():
        ref_after = ppo.forward(setup, probe, reference=True)["logprobs"]
        policy_after = ppo.forward(setup, probe)["logprobs"]
    assert torch.equal(ref_before, ref_after)  # the reference (adapter switched off) is untouched
    assert not torch.allclose(policy_after, ref_after)  # ... while the policy has moved away from it


def test_full_finetuning_keeps_a_frozen_reference_copy(tiny_dir, tmp_path, reward_module):
    from lmadapt.alignment.rewards import build_reward
    from lmadapt.stages import ppo

    recipe = ppo_recipe(
        tmp_path, tiny_dir, {"type": "python", "function": reward_module}, method={"type": "full"}
    )
    setup, records, prompts = tiny_setup(recipe, tmp_path)
    ref_state = {n: p.detach().clone() for n, p in setup.reference.named_parameters()}
    ppo.train_step(setup, recipe, records, prompts, build_reward(recipe.reward), None, step=1)
    assert all(torch.equal(p, ref_state[n]) for n, p in setup.reference.named_parameters())
    assert any(not torch.equal(p, ref_state[n]) for n, p in setup.policy.named_parameters())


def sampled_reward(setup, recipe, prompts, reward, reference: bool) -> float:
    """Mean reward of 4 sampled answers per prompt (fixed seed), from the policy or the reference."""
    from lmadapt.stages import ppo

    torch.manual_seed(123)
    scores = []
    for _ in range(4):
        if reference:
            with setup.policy.disable_adapter():
                batch = ppo.rollout(setup, prompts, recipe.ppo, recipe.task)
        else:
            batch = ppo.rollout(setup, prompts, recipe.ppo, recipe.task)
        scores += reward(batch["messages"], batch["texts"], [{}] * len(batch["texts"]))
    return sum(scores) / len(scores)


def test_ppo_raises_a_reward_that_prefers_one_token(tiny_dir, tmp_path, reward_module):
    from lmadapt.alignment.rewards import build_reward
    from lmadapt.stages import ppo

    recipe = ppo_recipe(
        tmp_path, tiny_dir, {"type": "python", "function": reward_module},
        ppo={"steps": 10, "kl_coef": 0.0, "no_eos_penalty": 0.0, "ppo_epochs": 4, "prompts_per_step": 16},
        train={"lr": 5e-2},
    )  # fmt: skip
    torch.manual_seed(0)  # the value head's init and the rollouts' draws: the same whatever ran before
    setup, records, prompts = tiny_setup(recipe, tmp_path)
    reward = build_reward(recipe.reward)
    for step in range(1, recipe.ppo.steps + 1):
        stats = ppo.train_step(setup, recipe, records, prompts, reward, None, step)
    for key in ("reward", "kl", "entropy", "answer_tokens", "clip_frac", "value_loss", "kl_coef", "no_eos"):
        assert math.isfinite(stats[key])
    start = sampled_reward(setup, recipe, prompts, reward, reference=True)
    end = sampled_reward(setup, recipe, prompts, reward, reference=False)
    assert end > start + 0.02, (start, end)


def test_a_metric_reward_logs_and_the_reloaded_policy_matches(tiny_dir, tmp_path):
    from lmadapt.alignment.policy import load_aligned
    from lmadapt.infer.engine import Engine
    from lmadapt.stages import run_stage

    recipe = ppo_recipe(tmp_path, tiny_dir, {"type": "metric"}, ppo={"steps": 2})
    run = run_stage(recipe)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"reward", "kl_to_reference", "accuracy"} <= set(metrics["final"]["test"])
    assert metrics["final"]["test_before"]["kl_to_reference"] == pytest.approx(0.0, abs=1e-5)
    assert len(metrics["history"]) == 2 and "true_metric" not in metrics["history"][0]  # reward is the metric
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "status.json").is_file()
    assert (run / "value_head.safetensors").is_file() and (run / "plots" / "ppo.png").is_file()
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"output", "output_before", "gold"} <= set(rows[0])
    model, tok, template = load_aligned(run)
    from lmadapt.generative import prompt_messages
    from lmadapt.stages.sft import load_records

    records = load_records(recipe)["test"]
    outputs = Engine(model, tok, template).generate([prompt_messages(recipe.task, r) for r in records],
                                                    max_new_tokens=6, batch_size=4)  # fmt: skip
    assert outputs == [r["output"] for r in rows]
    # generate, chat and serve load a ppo run folder as they load an sft one: the same policy
    from lmadapt.infer.engine import load_engine

    served = load_engine(str(run), dtype="float32").generate([prompt_messages(recipe.task, r) for r in records],
                                            max_new_tokens=6, batch_size=4)  # fmt: skip
    assert served == outputs


def test_resume_after_a_stop_gives_the_same_run(tiny_dir, tmp_path, reward_module):
    from lmadapt.stages import run_stage

    def recipe(out):
        return ppo_recipe(tmp_path, tiny_dir, {"type": "python", "function": reward_module},
                          ppo={"steps": 4}, train={"save_every": 2}, output=str(tmp_path / out))  # fmt: skip

    whole = run_stage(recipe("whole"))

    class Stop(Exception):
        pass

    def stop_at_2(step, stats):
        if step == 2:
            raise Stop

    from lmadapt.stages import ppo

    with pytest.raises(Stop):
        ppo.run(recipe("killed"), callbacks=[stop_at_2])
    resumed = run_stage(recipe("killed"), resume=True)
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    assert a["history"] == b["history"] and a["final"] == b["final"]
    assert b["cost"]["resumed_from_step"] == 2


def test_ppo_needs_a_reward_section(tiny_dir, tmp_path):
    from lmadapt.stages import run_stage

    recipe = ppo_recipe(tmp_path, tiny_dir, {"type": "metric"})
    recipe.reward = None
    with pytest.raises(RecipeError, match="reward"):
        run_stage(recipe)


def test_a_ppo_section_in_an_sft_recipe_is_an_error(tmp_path):
    with pytest.raises(RecipeError, match="ppo"):
        parse_recipe({"model": "x", "task": {"type": "sft"}, "stage": "sft", "ppo": {"steps": 3}})
