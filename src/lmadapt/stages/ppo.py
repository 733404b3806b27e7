"""`stage: ppo`: InstructGPT's step 3, owned by lmadapt: maximise a reward with a per-token KL penalty to the
frozen starting policy.

Reads top to bottom, one function per phase of a step (the arithmetic lives in alignment/ppo_math.py):

    setup       policy (an sft run or `model:`), the method on top, value head, reference, optimizer
    rollout     sample one answer per training prompt (the policy's own `generate`: the token ids are needed)
    score       reward per answer (`reward:`: an RM run, a task metric, a Python function), EOS penalty,
                and the true task metric when the records hold a gold answer (so reward hacking shows)
    advantages  log-probs of policy and reference, values, per-token KL penalty + score at the last
                token, GAE, whitened advantages
    update      ppo_epochs passes of minibatches: clipped policy loss + vf_coef * clipped value loss
                - entropy_coef * entropy

Models: with LoRA the reference is the same weights with the adapter switched off (one copy in memory);
with full fine-tuning, a frozen copy. The value head is a scalar linear head on the policy's last hidden
states, trained with the policy (TRL's old value-head design): a separate value model would be a fourth
model in memory next to policy, reference and reward model, the users' top complaint about RLHF on small
machines; its cost is that value-loss gradients also reach the policy's adapter (weighted by vf_coef).

Evaluated on held-out prompts (data.test) before and after: the task metric of greedy answers (the SFT
policy against the PPO policy), the reward of those answers, and the KL to the reference (exact per-token KL
summed over sampled answers). Every step logs reward, true metric, KL, KL coefficient, entropy, answer
length, share of answers without EOS, clip fraction, policy and value loss (log.txt, metrics.json, plots).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RecipeError
from ..evaluation import cost_record
from ..runs import RunDir, timer
from ..utils.seed import seed_everything


@dataclass
class Setup:
    """Everything a PPO step touches."""

    policy: object  # the causal LM being trained (a PeftModel under LoRA)
    value_head: object  # torch.nn.Linear(hidden, 1)
    reference: object | None  # a frozen copy (full fine-tuning); None: the policy with its adapter off
    optimizer: object
    tokenizer: object
    template: str
    eos: list[int]
    kl: object  # ppo_math.KLController
    params: dict = field(default_factory=dict)  # name -> every trainable tensor (checkpointed)


def run(recipe, resume: bool = False, callbacks: list | None = None) -> Path:
    """Train with PPO and evaluate on held-out prompts; `callbacks` are called as f(step, stats) after each
    step (a test stops a run there to check resuming); `resume` continues from the last verified checkpoint."""
    from ..alignment.loop_checkpoint import load_loop_checkpoint

    cfg, train = check_recipe(recipe)
    _set_threads(train.num_threads)
    seed_everything(train.seed)
    splits, model, tokenizer, template, prompts = policy_and_prompts(recipe)
    reward, gold = reward_sources(recipe)
    run_dir = RunDir.start(recipe, resume)
    run_dir.write_config(recipe)
    run_dir.log(
        f"task {recipe.task.type}: train prompts {len(splits['train'])}, held-out {len(splits['test'])}"
    )
    setup = setup_models(model, tokenizer, template, recipe, run_dir)
    held_out = prompts["test"][: cfg.eval_prompts] if cfg.eval_prompts else prompts["test"]
    before = evaluate(setup, recipe, held_out, reward)
    run_dir.log("held-out before PPO: " + _fmt(before))
    state = (load_loop_checkpoint(run_dir / "checkpoints", setup.params, setup.optimizer, run_dir.log)
             if run_dir.resumed else None) or {"step": 0, "history": [], "kl": None, "seconds": 0.0}  # fmt: skip
    if state["kl"]:
        setup.kl.load_state_dict(state["kl"])
    history, seconds = state["history"], state["seconds"]
    for step in range(state["step"] + 1, cfg.steps + 1):
        with timer() as took:
            stats = train_step(setup, recipe, splits["train"], prompts["train"], reward, gold, step)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                stats |= {f"heldout_{k}": v for k, v in evaluate(setup, recipe, held_out, reward).items()
                          if k != "_rows"}  # fmt: skip
        seconds += took()
        history.append(stats)
        run_dir.log_json(stats)
        save_checkpoint(setup, recipe, run_dir, step, history, seconds)
        for callback in callbacks or []:
            callback(step, stats)
    return finish(setup, recipe, run_dir, held_out, reward, before, history, seconds, state)


def check_recipe(recipe):
    """(ppo section, train section); a RecipeError for what stage ppo cannot run."""
    from ..config.ppo import PpoConfig
    from ..methods import check_method

    if recipe.task.type != "generate":
        raise RecipeError(f"stage ppo: task type {recipe.task.type!r}: use a generate task (prompts + gold)")
    if getattr(recipe, "reward", None) is None:
        raise RecipeError("stage ppo needs a reward: section ({type: rm | metric | python, ...})")
    method = check_method(recipe.method, "causal_lm")
    if method.injects_inputs:
        raise RecipeError(f"stage ppo: method {recipe.method.type!r} is not supported; use lora or full")
    if recipe.data.train is None or recipe.data.test is None:
        raise RecipeError(
            "stage ppo needs data.train (prompts to optimise on) and data.test (held-out prompts)"
        )
    if recipe.ppo is None:  # every setting at its default; config.yaml then spells them out
        recipe.ppo = PpoConfig()
    return recipe.ppo, recipe.train


def policy_and_prompts(recipe):
    """What ppo and grpo start from: (records per split, the start policy, tokenizer, template, prompts per
    split built from the records)."""
    from ..alignment.policy import load_policy
    from ..stages.sft import load_records

    splits = load_records(recipe)
    model, tokenizer, template = load_policy(recipe)
    prompts = {name: build_prompts(recipe, rs, tokenizer, template) for name, rs in splits.items()}
    return splits, model, tokenizer, template, prompts


def reward_sources(recipe):
    """(the reward optimised, the true task metric or None): with a metric reward they are the same."""
    from ..alignment.rewards import build_reward
    from ..config.reward import MetricReward

    reward = build_reward(recipe.reward, recipe.task, recipe.model.trust_remote_code)
    gold = None if recipe.reward.type == "metric" else build_reward(MetricReward(), recipe.task)
    return reward, gold


def build_prompts(recipe, records: list[dict], tokenizer, template: str) -> list[dict]:
    """Per record: the (fitted) record, its messages and their token ids (long inputs cut to leave room for
    the answer within train.max_length)."""
    from ..generative import prompt_messages
    from ..stages.sft import fit_record
    from ..templates import encode_text, render_prompt

    out = []
    for record in records:
        fitted, _ = fit_record(record, recipe.task, tokenizer, template, recipe.train.max_length)
        messages = prompt_messages(recipe.task, fitted)
        text = render_prompt(tokenizer, messages, template)
        out.append(
            {"record": fitted, "messages": messages, "text": text, "ids": encode_text(tokenizer, text)}
        )
    return out


# --- setup ---------------------------------------------------------------------------------------------------
def setup_models(model, tokenizer, template: str, recipe, run_dir: RunDir) -> Setup:
    """The method on the policy, the value head, the reference and the optimizer."""
    import copy

    import torch

    from ..alignment.policy import eos_ids
    from ..alignment.ppo_math import KLController
    from ..methods import apply_method, count_parameters

    cfg, train = recipe.ppo, recipe.train
    reference = None
    if recipe.method.type != "lora":  # no adapter to switch off: keep a frozen copy
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    policy = apply_method(model, recipe.method, "causal_lm").eval()  # eval: no dropout in rollouts or update
    hidden = policy.config.get_text_config().hidden_size
    torch.manual_seed(train.seed)
    value_head = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    params = {f"policy.{n}": p for n, p in policy.named_parameters() if p.requires_grad}
    params |= {f"value_head.{n}": p for n, p in value_head.named_parameters()}
    optimizer = torch.optim.AdamW(params.values(), lr=train.lr, weight_decay=train.weight_decay)
    kl = KLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    trainable, total = count_parameters(policy)
    run_dir.log(
        f"template {template}; method {recipe.method.type}: {trainable:,} of {total:,} policy parameters train "
        f"+ value head {hidden + 1}; reference: {'adapter off' if reference is None else 'frozen copy'}; "
        f"KL {cfg.kl_estimator}, coef {cfg.kl_coef}"
        + (f" adaptive to {cfg.kl_target}" if cfg.kl_target else "")
    )
    eos = eos_ids(tokenizer, policy, template)
    return Setup(policy, value_head, reference, optimizer, tokenizer, template, eos, kl, params)


# --- one PPO step ----------------------------------------------------------------------------------------------
def train_step(setup: Setup, recipe, records, prompts, reward, gold, step: int) -> dict:
    """Rollout, score, advantages, update on one batch of training prompts; returns the step's stats."""
    import random

    cfg = recipe.ppo
    picked = random.Random(recipe.train.seed * 100003 + step).sample(
        range(len(records)), min(cfg.prompts_per_step, len(records))
    )
    batch = rollout(setup, [prompts[i] for i in picked], cfg, recipe.task)
    batch["records"] = [records[i] for i in picked]
    stats = score(setup, batch, reward, gold, cfg)
    stats |= advantages(setup, batch, cfg)
    stats |= update(setup, batch, cfg, recipe.train.max_grad_norm)
    setup.kl.update(stats["kl"], len(picked))
    return {"step": step, **{k: round(float(v), 6) for k, v in stats.items()}, "kl_coef_next": setup.kl.value}


def rollout(setup: Setup, prompts: list[dict], cfg, task) -> dict:
    """Sample one answer per prompt; the batch as [left-padded prompt | right-padded answer] token ids."""
    import torch
    from transformers import GenerationConfig

    pad = setup.tokenizer.pad_token_id
    width = max(len(p["ids"]) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    prompt_mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p["ids"]) :] = torch.tensor(p["ids"])
        prompt_mask[row, width - len(p["ids"]) :] = 1
    options = GenerationConfig(
        max_new_tokens=cfg.max_new_tokens or task.max_new_tokens, do_sample=True, temperature=cfg.temperature,
        top_k=cfg.top_k, top_p=cfg.top_p, eos_token_id=setup.eos, pad_token_id=pad,
    )  # fmt: skip
    with torch.no_grad():
        out = setup.policy.generate(input_ids=ids, attention_mask=prompt_mask, generation_config=options)
    answer = out[:, width:]
    is_eos = torch.isin(answer, torch.tensor(setup.eos))
    # real answer tokens: up to and including the first EOS (generate pads finished rows after it)
    ended_before = (is_eos.cumsum(1) - is_eos.long()) > 0
    mask = (~ended_before).long()
    if answer.shape[1] == 0:
        raise RecipeError("stage ppo: max_new_tokens gave empty answers")
    texts = [
        setup.tokenizer.decode(a[m.bool()], skip_special_tokens=True)
        for a, m in zip(answer, mask, strict=True)
    ]
    return {
        "prompt_ids": ids, "prompt_mask": prompt_mask, "answer_ids": answer * mask + pad * (1 - mask),
        "mask": mask, "has_eos": is_eos.any(1), "texts": texts, "messages": [p["messages"] for p in prompts],
    }  # fmt: skip


def score(setup: Setup, batch: dict, reward, gold, cfg) -> dict:
    """The reward of each answer (EOS penalty applied) and, when it differs, the true task metric."""
    import torch

    from ..alignment.ppo_math import penalize_no_eos

    raw = torch.tensor(reward(batch["messages"], batch["texts"], batch["records"]), dtype=torch.float32)
    batch["scores"] = penalize_no_eos(raw, batch["has_eos"], cfg.no_eos_penalty)
    stats = {"reward": raw.mean().item(), "no_eos": (~batch["has_eos"]).float().mean().item()}
    if gold is not None:
        stats["true_metric"] = sum(gold(batch["messages"], batch["texts"], batch["records"])) / len(
            batch["texts"]
        )
    stats["answer_tokens"] = batch["mask"].sum(1).float().mean().item()
    return stats


def advantages(setup: Setup, batch: dict, cfg) -> dict:
    """Old log-probs and values, reference log-probs, per-token KL-penalised rewards, GAE, whitening."""
    import torch

    from ..alignment import ppo_math

    with torch.no_grad():
        old = forward(setup, batch)
        ref = forward(setup, batch, reference=True)
    mask = batch["mask"]
    kl = ppo_math.kl_per_token(old["logprobs"], ref["logprobs"], cfg.kl_estimator) * mask
    rewards = ppo_math.token_rewards(batch["scores"], kl, setup.kl.value, mask)
    adv, returns = ppo_math.gae(rewards, old["values"], mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        adv = ppo_math.whiten(adv, mask)
    batch |= {
        "old_logprobs": old["logprobs"],
        "old_values": old["values"],
        "advantages": adv,
        "returns": returns,
    }
    return {
        "kl": kl.sum(1).mean().item(),  # per answer: what the KL controller steers
        "kl_coef": setup.kl.value,
        "entropy": ppo_math.masked_mean(old["entropy"], mask).item(),
        "score": batch["scores"].mean().item(),
        "value_mean": ppo_math.masked_mean(old["values"], mask).item(),
    }


def update(setup: Setup, batch: dict, cfg, max_grad_norm: float) -> dict:
    """ppo_epochs passes over shuffled minibatches; returns the mean losses and clip fractions."""
    import torch

    from ..alignment import ppo_math

    n, totals, count = batch["mask"].shape[0], {}, 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(n)
        for start in range(0, n, cfg.minibatch_size):
            rows = order[start : start + cfg.minibatch_size]
            mini = {k: v[rows] for k, v in batch.items() if isinstance(v, torch.Tensor)}
            out = forward(setup, mini)
            mask = mini["mask"]
            pg, clip_frac = ppo_math.policy_loss(
                out["logprobs"], mini["old_logprobs"], mini["advantages"], mask, cfg.clip
            )
            vf, vf_clip = ppo_math.value_loss(
                out["values"], mini["old_values"], mini["returns"], mask, cfg.value_clip
            )
            entropy = ppo_math.masked_mean(out["entropy"], mask)
            loss = pg + cfg.vf_coef * vf - cfg.entropy_coef * entropy
            setup.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(setup.params.values()), max_grad_norm)
            setup.optimizer.step()
            for key, value in (("policy_loss", pg), ("value_loss", vf), ("clip_frac", clip_frac),
                               ("value_clip_frac", vf_clip)):  # fmt: skip
                totals[key] = totals.get(key, 0.0) + value.item()
            count += 1
    return {k: v / count for k, v in totals.items()}


def forward(setup: Setup, batch: dict, reference: bool = False) -> dict:
    """Per answer token: log-prob of the sampled token, entropy, and (policy) the value head's estimate."""
    import contextlib

    import torch

    from ..alignment.ppo_math import entropy_from_logits, logprobs_of

    ids = torch.cat([batch["prompt_ids"], batch["answer_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["mask"]], 1)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    n = batch["answer_ids"].shape[1]
    model, context = setup.policy, contextlib.nullcontext()
    if reference and setup.reference is not None:
        model = setup.reference
    elif reference:
        context = setup.policy.disable_adapter()
    with context:
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                    logits_to_keep=n + 1, use_cache=False)  # fmt: skip
    logits = out.logits[:, :-1]  # the logits at position t predict token t + 1
    result = {"logprobs": logprobs_of(logits, batch["answer_ids"]), "entropy": entropy_from_logits(logits)}
    if not reference:
        result["values"] = setup.value_head(out.hidden_states[-1][:, -n - 1 : -1].float()).squeeze(-1)
    return result


# --- held-out evaluation, checkpoints, the end of the run ------------------------------------------------------
def evaluate(setup: Setup, recipe, prompts: list[dict], reward) -> dict:
    """On held-out prompts: the task metric and reward of greedy answers, and the KL to the reference
    (Monte-Carlo: sum over the tokens of one sampled answer per prompt of log p - log q, averaged)."""
    import torch

    from ..infer.engine import Engine
    from ..stages.sft import generate_and_score

    records = [p["record"] for p in prompts]
    engine = Engine(setup.policy, setup.tokenizer, setup.template)
    batch_size = recipe.train.eval_batch_size or recipe.train.batch_size
    metrics, rows = generate_and_score(engine, recipe.task, records, batch_size)
    outputs = [r["output"] for r in rows]
    metrics["reward"] = sum(reward([p["messages"] for p in prompts], outputs, records)) / len(prompts)
    kls = []
    for start in range(0, len(prompts), batch_size):
        batch = rollout(setup, prompts[start : start + batch_size], recipe.ppo, recipe.task)
        with torch.no_grad():
            policy, ref = forward(setup, batch), forward(setup, batch, reference=True)
        kls += ((policy["logprobs"] - ref["logprobs"]) * batch["mask"]).sum(1).tolist()
    metrics["kl_to_reference"] = sum(kls) / len(kls)
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()} | {"_rows": rows}


def save_checkpoint(setup: Setup, recipe, run_dir: RunDir, step: int, history: list, seconds: float) -> None:
    """Every train.save_every steps: trainable tensors, optimizer, KL controller, RNG states, history."""
    from ..alignment.loop_checkpoint import save_loop_checkpoint

    every = recipe.train.save_every
    if every and step % every == 0:
        state = {"history": history, "kl": setup.kl.state_dict(), "seconds": seconds}
        save_loop_checkpoint(run_dir / "checkpoints", step, setup.params, setup.optimizer, state,
                             recipe.train.keep_checkpoints)  # fmt: skip


def finish(setup: Setup, recipe, run_dir: RunDir, prompts, reward, before, history, seconds, state) -> Path:
    """Held-out evaluation after training; save adapter/model + value head, predictions, metrics, plots."""
    from safetensors.torch import save_file

    from ..alignment.curves import save_curves
    from ..methods import count_parameters, save_trained
    from ..utils.io import write_jsonl

    with timer() as infer_time:
        after = evaluate(setup, recipe, prompts, reward)
    run_dir.log("held-out after PPO: " + _fmt(after))
    save_trained(setup.policy, recipe.method, run_dir.path)
    head = {k: v.detach().contiguous() for k, v in setup.value_head.state_dict().items()}
    save_file(head, str(run_dir / "value_head.safetensors"))
    rows_before = {r["id"]: r for r in before.pop("_rows")}
    rows = [r | {"output_before": rows_before[r["id"]]["output"]} for r in after.pop("_rows")]
    write_jsonl(run_dir / "predictions.jsonl", rows)
    save_curves(run_dir / "plots" / "ppo.png", history, PLOTTED)
    trainable, total = count_parameters(setup.policy)
    cost = cost_record(
        seconds, len(history) * recipe.ppo.prompts_per_step, trainable, total,
        round(len(prompts) / infer_time(), 2), resumed_from_step=state["step"] or None,
    )  # fmt: skip
    final = {"test": after, "test_before": before}
    run_dir.write_metrics(final=final, history=[{"split": "train"} | h for h in history], cost=cost)
    return run_dir.commit(keep_checkpoints=recipe.train.save_every is not None)


# per-step curves in plots/ppo.png: (key in the step stats, panel title)
PLOTTED = (
    ("reward", "reward (mean per answer)"), ("true_metric", "true task metric"), ("kl", "KL to reference"),
    ("entropy", "entropy (nats/token)"), ("answer_tokens", "answer length (tokens)"),
    ("clip_frac", "clip fraction"), ("value_loss", "value loss"), ("kl_coef", "KL coefficient"),
)  # fmt: skip


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, int | float))


def _set_threads(num_threads: int | None) -> None:
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
