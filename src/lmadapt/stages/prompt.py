"""`stage: prompt`: classify with a pretrained model as it is, by prompting (no weight changes).

Reads top to bottom: data, labels, model, prompts (demonstrations chosen from train), answers, metrics, save.
Modes (`prompt.mode`): zero_shot / few_shot / cot generate with the inference engine and map the answer to a
label; verbalizer scores label words at the [MASK] or as the next tokens. The run folder has the same
files as a training run (config.yaml, metrics.json with cost, predictions.jsonl, report.json, log.txt).
"""

from __future__ import annotations

from pathlib import Path

from ..config.prompt import PromptConfig
from ..errors import RecipeError
from ..runs import RunDir
from ..utils.io import write_text
from ..utils.seed import seed_everything


def run(recipe, resume: bool = False) -> Path:
    from ..evaluation import cost_record, evaluate_splits, write_results
    from ..sources import resolve_model
    from ..tasks import get_task

    cfg = recipe.prompt or PromptConfig()
    if recipe.task.type not in ("classify", "pair") or getattr(recipe.task, "multi_label", False):
        raise RecipeError(
            f"task.type: stage prompt handles single-label classify and pair, not {recipe.task.type!r}"
        )
    task = get_task(recipe.task)
    seed_everything(recipe.train.seed)

    # --- data, labels, prompt settings (all checked before anything is loaded or written) -------------
    splits, labels = load_prompt_data(recipe, cfg, task)
    mapping = cfg.verbalizer or {label: [label] for label in labels}
    if cfg.mode == "verbalizer" and set(mapping) != set(labels):
        raise RecipeError(
            f"prompt.verbalizer: labels {sorted(mapping)} differ from the task's labels {labels}"
        )
    resolve_model(recipe.model.name)  # a model that exists nowhere is an error before any folder is made

    # --- run folder ------------------------------------------------------------------------------------
    run_dir = RunDir.start(recipe, resume)
    recipe.task.labels = labels
    run_dir.write_config(recipe)
    run_dir.log(
        f"prompt {cfg.mode}: labels {labels}; " + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    )

    # --- model, prompts, answers, metrics ---------------------------------------------------------------
    template = cfg.template or _default_template(_text_fields(recipe.task), cfg.mode)
    instruction = cfg.instruction or _default_instruction(labels)
    predictor = _verbalizer_predictor if cfg.mode == "verbalizer" else _generation_predictor
    model_info, predict = predictor(
        recipe, cfg, task, labels, mapping, template, instruction, splits["train"], run_dir
    )
    evaluation = evaluate_splits(task, splits, predict, recipe.eval.metrics, run_dir.log)

    # --- save -------------------------------------------------------------------------------------------
    pool = len(splits["train"]) if cfg.n_demos > 0 else 0
    cost = cost_record(0.0, 0, 0, model_info["total_params"], evaluation.examples_per_s, demo_pool=pool)
    write_results(run_dir, evaluation, [], cost)
    return run_dir.commit()


def load_prompt_data(recipe, cfg, task) -> tuple[dict[str, list[dict]], list[str]]:
    """The splits to answer (and the demonstration pool when prompting few-shot) and the label set."""
    from ..data.splits import load_splits

    needs_pool = cfg.n_demos > 0
    skip = () if needs_pool or not task.labels else ("train",)  # train only for demos or to read labels
    splits = load_splits(recipe, task.fields(), skip)
    labels = task.fit_labels(splits["train"])
    if not labels:
        raise RecipeError("task.labels: list the labels (or give data.train to read them from)")
    if needs_pool and not splits["train"]:
        raise RecipeError(f"data.train: prompt.k={cfg.n_demos} demonstrations need training examples")
    if cfg.mode == "cot" and cfg.n_demos and not cfg.rationale:
        raise RecipeError(
            "prompt.rationale: few-shot chain-of-thought needs the field holding each demo's reasoning"
        )
    if not splits["eval"] and not splits["test"]:
        raise RecipeError("data.eval / data.test: stage prompt needs examples to answer")
    return splits, labels


# ---------------------------------------------------------------------------------------------- helpers
def _text_fields(task_cfg) -> list[str]:
    return [task_cfg.text_a, task_cfg.text_b] if task_cfg.type == "pair" else list(task_cfg.text)


def _default_template(fields: list[str], mode: str) -> str:
    from ..prompting.text import default_template

    return default_template(fields, with_mask=mode == "verbalizer")


def _default_instruction(labels: list[str]) -> str:
    from ..prompting.zeroshot import default_instruction

    return default_instruction(labels)


def _demos_for(cfg, pool: list[dict], queries: list[dict], fields: list[str], seed: int) -> list[list[int]]:
    from ..prompting.fewshot import choose_demos

    def as_text(r):
        return "\n".join(str(r.get(f, "")) for f in fields)

    k = cfg.n_demos
    return choose_demos(
        [as_text(r) for r in pool],
        [as_text(r) for r in queries],
        k,
        cfg.selection,
        seed=seed,
        encoder=cfg.encoder,
    )


def _verbalizer_predictor(recipe, cfg, task, labels, mapping, template, instruction, pool, run_dir):
    """Cloze scoring: build one {mask} prompt per record (after optional primed demonstrations)."""
    from ..prompting.text import fill, fit_record
    from ..prompting.verbalizer import Verbalizer, load_lm

    model, tokenizer, kind = load_lm(recipe.model.name, recipe.model.dtype, recipe.model.trust_remote_code)
    run_dir.log(f"verbalizer on a {kind} LM: {mapping}; aggregate {cfg.aggregate}; calibrate {cfg.calibrate}")
    verb = Verbalizer(
        model,
        tokenizer,
        {label: mapping[label] for label in labels},
        kind=kind,
        aggregate=cfg.aggregate,
        chat=cfg.chat,
        max_length=recipe.train.max_length,
        batch_size=cfg.batch_size,
    )
    fields = _text_fields(recipe.task)
    budget = recipe.train.max_length - 8
    share = budget // (cfg.n_demos + 1)

    def prompt_for(record, demos):
        # Primed demonstrations (LM-BFF style): the template with the label's first word in the slot.
        parts = [
            fill(
                template,
                fit_record(tokenizer, template, d, share) | {"mask": mapping[task.gold(d)][0]},
                False,
            )
            for d in demos
        ]
        parts.append(fill(template, fit_record(tokenizer, template, record, budget - share * len(demos))))
        return "\n\n".join(parts)

    content_free = (
        [fill(template, dict.fromkeys(fields, cf)) for cf in cfg.content_free] if cfg.calibrate else []
    )

    def predict(split, records):
        demo_idx = _demos_for(cfg, pool, records, fields, recipe.train.seed)
        prompts = [prompt_for(r, [pool[j] for j in idx]) for r, idx in zip(records, demo_idx, strict=True)]
        if split == "test" or not (run_dir / "prompt_example.txt").exists():
            write_text(run_dir / "prompt_example.txt", prompts[0] + "\n")
        with _ProgressBar(len(prompts), f"{split}: scoring") as bar:
            raw = probs = verb.label_probs(prompts, bar.advance)
        if content_free:
            cf_prompts = [_with_demos(p, prompts[0]) for p in content_free] if cfg.n_demos else content_free
            probs = _calibrated(
                verb, raw, cf_prompts, labels, [task.gold(r) for r in records], split, run_dir
            )
        preds = [labels[i] for i in probs.argmax(-1).tolist()]
        extra = [
            {"probs": [round(x, 4) for x in row]}
            | ({"probs_uncalibrated": [round(x, 4) for x in r]} if content_free else {})
            for row, r in zip(probs.tolist(), raw.tolist(), strict=True)
        ]
        return preds, extra

    return {"total_params": sum(p.numel() for p in model.parameters())}, predict


def _calibrated(verb, raw, cf_prompts: list[str], labels: list[str], golds: list, split: str, run_dir):
    """Label probabilities divided by those of content-free prompts (Zhao et al. 2021), renormalised."""
    from ..prompting.verbalizer import calibrate

    p_cf = verb.content_free_probs(cf_prompts)
    run_dir.log(f"content-free label probabilities: {dict(zip(labels, p_cf.tolist(), strict=True))}")
    uncalibrated = [labels[i] for i in raw.argmax(-1).tolist()]
    acc = sum(g == p for g, p in zip(golds, uncalibrated, strict=True)) / len(golds)
    run_dir.log(f"{split}: accuracy without calibration {acc:.4f}")  # to judge what calibration did
    return calibrate(raw, p_cf)


def _with_demos(content_free_prompt: str, first_prompt: str) -> str:
    """The first prompt's demonstrations, then a content-free query (to calibrate few-shot prompts)."""
    demos = first_prompt.rsplit("\n\n", 1)[0]
    return f"{demos}\n\n{content_free_prompt}"


def _engine(recipe, run_dir):
    """The engine in `prompt.dtype` (auto: bf16 matmuls where the CPU has native bf16; the greedy agreement
    with float32 is in docs/performance.md)."""
    from ..infer.engine import load_engine
    from ..infer.precision import generation_precision

    engine = load_engine(
        recipe.model.name, trust_remote_code=recipe.model.trust_remote_code, dtype=recipe.prompt.dtype
    )
    run_dir.log(f"generating in {generation_precision(engine.model)}")
    return engine


def _generation_predictor(recipe, cfg, task, labels, mapping, template, instruction, pool, run_dir):
    """zero_shot / few_shot / cot: generate, then map the answer text to a label."""
    from ..prompting.cot import chain_of_thought, reasoning_prompt
    from ..prompting.text import fit_record, match_label
    from ..prompting.zeroshot import as_inputs, build_prompt, generate_all

    engine = _engine(recipe, run_dir)
    tokenizer = engine.tokenizer
    fields = _text_fields(recipe.task)
    budget = recipe.train.max_length - 32
    share = budget // (cfg.n_demos + 1)

    def predict(split, records):
        demo_idx = _demos_for(cfg, pool, records, fields, recipe.train.seed)
        prompts = []
        for record, idx in zip(records, demo_idx, strict=True):
            query = fit_record(tokenizer, template, record, budget - share * len(idx))
            demos = [(fit_record(tokenizer, template, pool[j], share), task.gold(pool[j])) for j in idx]
            if cfg.mode == "cot":
                demos3 = [
                    (v, str(pool[j].get(cfg.rationale, "")), a) for (v, a), j in zip(demos, idx, strict=True)
                ]
                prompts.append(reasoning_prompt(instruction, template, query, cfg.cot_trigger, demos3))
            else:
                prompts.append(build_prompt(instruction, template, query, demos))
        write_text(run_dir / "prompt_example.txt", prompts[0] + "\n")
        bar = _ProgressBar(len(prompts), f"{split}: generating")
        with bar:
            if cfg.mode == "cot":
                extraction = cfg.answer_prompt.replace("{labels}", ", ".join(labels))
                reasonings, answers = chain_of_thought(
                    engine,
                    prompts,
                    extraction=extraction,
                    chat=cfg.chat,
                    max_new_tokens=cfg.max_new_tokens,
                    batch_size=cfg.batch_size,
                    progress=bar.advance,
                )
            else:
                answers = generate_all(
                    engine,
                    as_inputs(prompts, cfg.chat),
                    max_new_tokens=cfg.max_new_tokens,
                    batch_size=cfg.batch_size,
                    stop=["\n"] if not cfg.chat else None,
                    progress=bar.advance,
                )
                reasonings = [None] * len(answers)
        preds = [match_label(a, labels) or "" for a in answers]
        extra = [
            {"answer": a} | ({"reasoning": r} if r is not None else {})
            for a, r in zip(answers, reasonings, strict=True)
        ]
        return preds, extra

    return {"total_params": sum(p.numel() for p in engine.model.parameters())}, predict


class _ProgressBar:
    """A tqdm progress bar for the examples of one split, shown while the `with` block runs."""

    def __init__(self, total: int, description: str):
        self.total, self.description = total, description

    def __enter__(self):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc=self.description, unit="example")
        return self

    def __exit__(self, *exc):
        self.bar.close()

    def advance(self, n: int) -> None:
        self.bar.update(n)
