"""The policy an alignment stage (ppo, dpo, grpo) starts from, and how a finished alignment run is reloaded.

Start: `model:` as it is, or an sft run folder (`ppo.policy` / `dpo.policy` / `grpo.policy`). A LoRA sft run
is merged into its base weights, so the alignment stage's own method (a fresh LoRA) sits on top of the SFT
policy and "adapter switched off" is exactly the SFT policy: the frozen reference costs no second copy.

Reload: `load_aligned(run_dir)` rebuilds start policy + the run's `adapter/` (or its full `model/`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RecipeError

ALIGN_STAGES = ("ppo", "dpo", "grpo")


def policy_run_of(recipe) -> str | None:
    """The sft run folder the recipe's alignment section starts from, if any."""
    section = getattr(recipe, recipe.stage, None)
    return getattr(section, "policy", None)


def load_policy(recipe):
    """(model, tokenizer, template) of the starting policy, a plain (non-PEFT) causal LM in eval mode."""
    from ..infer.loading import load_causal_lm
    from ..templates import resolve_template

    run = policy_run_of(recipe)
    if run is None:
        model, tokenizer = load_causal_lm(
            recipe.model.name, recipe.model.dtype, recipe.model.trust_remote_code
        )
    else:
        model, tokenizer = _load_sft_merged(recipe, run)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer, resolve_template(tokenizer, getattr(recipe.task, "template", "auto"))


def _load_sft_merged(recipe, run: str):
    from peft import PeftModel

    from ..infer.loading import load_causal_lm
    from ..methods import load_trained
    from ..runs import RunDir

    sft = RunDir.open_complete(run, f"stage {recipe.stage} (policy)").read_config(
        recipe.model.trust_remote_code
    )
    where = f"{recipe.stage}.policy"
    if sft.stage != "sft":
        raise RecipeError(f"{where}: {run} is a {sft.stage} run; the policy must be an sft run")
    if sft.model.name != recipe.model.name:
        raise RecipeError(
            f"{where}: {run} trained {sft.model.name!r} but model: is {recipe.model.name!r}; set model: "
            f"{sft.model.name} (the policy's base model)"
        )
    model, tokenizer = load_causal_lm(sft.model.name, recipe.model.dtype, recipe.model.trust_remote_code)
    if (Path(run) / "model").is_dir() or (Path(run) / "adapter").is_dir():
        model = load_trained(model, sft.method, run, "causal_lm")
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()  # the SFT policy as plain weights: the new adapter goes on top
    return model, tokenizer


def load_aligned(run_dir: str | Path, trust_remote_code: bool = False):
    """(model, tokenizer, template) of a complete ppo / dpo / grpo run: start policy + what the run trained."""
    from ..methods import load_trained
    from ..runs import RunDir

    recipe = RunDir.open_complete(run_dir, "loading an aligned policy").read_config(trust_remote_code)
    if recipe.stage not in ALIGN_STAGES:
        raise RecipeError(f"{run_dir}: a {recipe.stage} run, not one of {', '.join(ALIGN_STAGES)}")
    model, tokenizer, template = load_policy(recipe)
    return load_trained(model, recipe.method, run_dir, "causal_lm"), tokenizer, template


def eos_ids(tokenizer, model, template: str) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS, the model's generation EOS, the template's end of turn."""
    ids = {tokenizer.eos_token_id}
    found = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(found) if isinstance(found, list) else {found}
    if template == "model":
        for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
            tid = tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id:
                ids.add(tid)
    return sorted(i for i in ids if i is not None)
