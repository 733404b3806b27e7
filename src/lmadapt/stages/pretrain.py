"""`stage: pretrain`: self-supervised (continued) pretraining on raw text, `task: {type: lm, objective: ...}`.

Reads top to bottom: read the documents (data.train for training, data.eval held out; data.test is not
read), load the model with the objective's head (a head the checkpoint lacks starts fresh, seeded, and the
log names its parameters; they train whatever the method), build the examples (clm: EOS-joined blocks;
mlm: [CLS] block [SEP]; nsp / mlm+nsp: sentence pairs; span_corruption: blocks of max_length - 1 tokens,
for encoder-decoder models of the T5 family only; blank_infilling: blocks that fit max_length with Part B
added, for decoder-only causal LMs, see lmadapt/training/blank_infilling.py), apply the method, measure the held-out metrics, train
(Hugging Face `Trainer`, resumable; masks and dropped spans drawn per batch), measure again, save.

The run folder's `model/` is always a whole model that plain transformers loads (`AutoModelForMaskedLM`,
`AutoModelForNextSentencePrediction`, `AutoModelForPreTraining`, `AutoModelForCausalLM`,
`AutoModelForSeq2SeqLM`), LoRA merged in,
with its tokenizer (blank_infilling: with [MASK]/[START]/[END], and its block-position embedding beside it); checkpoint tensors the objective's model does not hold (BERT's pooler) are copied in
unchanged, so `model: RUN/model` in a finetune recipe starts from the adapted encoder and the original pooler.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, RecipeError
from ..runs import RunDir
from ..utils import distributed
from ..utils.seed import seed_everything

# objective -> (transformers auto class, lmadapt.methods task type)
HEADS = {
    "clm": ("AutoModelForCausalLM", "causal_lm"),
    "mlm": ("AutoModelForMaskedLM", "masked_lm"),
    "nsp": ("AutoModelForNextSentencePrediction", "masked_lm"),
    "mlm+nsp": ("AutoModelForPreTraining", "masked_lm"),
    "span_corruption": ("AutoModelForSeq2SeqLM", "seq2seq_lm"),
    "blank_infilling": ("AutoModelForCausalLM", "causal_lm"),
}


def run(recipe, callbacks: list | None = None, resume: bool = False) -> Path:
    """Pretrain and measure held-out metrics before and after; `resume` continues an interrupted run."""
    from ..evaluation import cost_record
    from ..methods import check_method, count_parameters
    from ..plots import save_plots
    from ..training.checkpoints import train_from_latest
    from ..training.progress import history_from, run_callbacks

    task, cfg = recipe.task, recipe.train
    if task.type != "lm":
        raise RecipeError(f"stage pretrain: task type {task.type!r} is not supported; use type: lm")
    check_method(recipe.method, HEADS[task.objective][1])  # a bad method fails before any loading
    _set_threads(cfg.num_threads)
    seed_everything(cfg.seed)

    # --- data, model, examples ------------------------------------------------------------------------
    texts = read_texts(recipe)
    model, tokenizer, fresh, origin, notes = load_model(recipe.model, task, cfg.seed, cfg.max_length)
    check_resumable(recipe.method.type, fresh, cfg.save_every)
    examples = build_examples(texts, tokenizer, task, cfg.max_length, recipe.data.seed)
    unknown = unknown_share(examples["train"], tokenizer, task.masked, recipe.model.name)

    # --- run folder (only now: a bad recipe, data or model leaves nothing behind), method -------------
    run_dir = start_run(recipe, resume, texts, examples, fresh)
    for note in notes:  # blank_infilling: tokens added, block-position embedding loaded
        run_dir.log(note)
    if unknown >= UNKNOWN_WARNING:
        run_dir.log(
            f"warning: {unknown:.0%} of the training tokens are unknown to the tokenizer of "
            f"{recipe.model.name!r} ({tokenizer.unk_token}): its vocabulary does not cover this text well "
            "(another language or script?); they are never masked or predicted as themselves"
        )
    model = adapt(model, recipe.method, task.objective, fresh)
    trainable, total = count_parameters(model)
    run_dir.log(f"method {recipe.method.type}: {trainable:,} of {total:,} parameters train")

    # --- held-out metrics, train, held-out metrics ----------------------------------------------------
    held_out = held_out_measure(task, tokenizer, examples["eval"], cfg)
    measured = examples["eval"] and distributed.is_main()  # held-out metrics: once, on rank 0
    final = {"eval": held_out(model, "before", run_dir.log)} if measured else {}
    trainer = build_trainer(recipe, model, tokenizer, examples, run_dir)
    for callback in [*(callbacks or []), *run_callbacks(run_dir, cfg.keep_checkpoints)]:
        trainer.add_callback(callback)
    train_seconds, resumed_from = train_from_latest(trainer, run_dir)
    distributed.leave_unless_main()  # the other ranks are done: evaluation and saving run once, on rank 0
    model = trainer.model
    if examples["eval"]:
        final["eval"] = held_out(model, "after", run_dir.log) | final["eval"]

    # --- save -------------------------------------------------------------------------------------------
    save_model(model, tokenizer, origin, run_dir)
    history = history_from(trainer.state.log_history)
    save_plots(run_dir / "plots", history, {}, "loss")
    cost = cost_record(
        train_seconds, len(examples["train"]), trainable, total, None, resumed_from_step=resumed_from,
        train_tokens=sum(len(f["input_ids"]) for f in examples["train"]),
    )  # fmt: skip
    run_dir.write_metrics(final=final, history=history, cost=cost)
    return run_dir.commit(keep_checkpoints=cfg.save_every is not None)


def read_texts(recipe) -> dict[str, list[str]]:
    """Training and held-out documents (data.train, data.eval; data.max_train/max_eval count documents)."""
    from ..data.corpus import read_documents

    data, task = recipe.data, recipe.task
    texts = {
        name: read_documents(
            data.source, getattr(data, name), task.text, documents=task.documents, limit=limit, seed=data.seed
        )
        for name, limit in (("train", data.max_train), ("eval", data.max_eval))
    }
    if not texts["train"]:
        raise RecipeError("data.train: the pretrain stage needs training text")
    return texts


def load_model(model_cfg, task, seed: int, max_length: int = 512):
    """(model with the objective's head, tokenizer, names of freshly initialised parameters, origin: the
    checkpoint folder and the names of its tensors the model has no place for, log lines).

    `nsp_classes: 3` replaces the 2-way sentence-pair layer by a fresh 3-way one; blank_infilling adds its
    tokens and block-position embedding (lmadapt.training.blank_infilling.prepare_model)."""
    import torch
    import transformers

    from ..sources import model_load_errors, resolve_model

    path = resolve_model(model_cfg.name)
    common = {"trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.revision:
        common["revision"] = model_cfg.revision
    with model_load_errors(model_cfg.name):
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, **common)
        config = transformers.AutoConfig.from_pretrained(path, **common)
    check_model_kind(config, task.objective, model_cfg.name)
    check_tokenizer(tokenizer, task.objective, model_cfg.name)
    torch.manual_seed(seed)  # fresh heads start from the recipe's seed
    head = getattr(transformers, HEADS[task.objective][0])
    with model_load_errors(model_cfg.name):
        try:
            model, info = head.from_pretrained(
                path, dtype=getattr(torch, model_cfg.dtype), output_loading_info=True, **common
            )
        except ValueError as exc:  # an architecture without this head (a decoder asked for mlm)
            raise RecipeError(f"model {model_cfg.name!r}: no {task.objective} head for it: {exc}") from None
    fresh = sorted(n for n, _ in model.named_parameters() if n in set(info["missing_keys"]))
    if task.pairs and task.nsp_classes == 3:
        fresh = sorted({*fresh, *three_way_head(model, model_cfg.name)})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    notes = []
    if task.objective == "blank_infilling":
        from ..training.blank_infilling import prepare_model

        added, notes = prepare_model(model, tokenizer, max_length, Path(path), model_cfg.name)
        fresh = sorted({*fresh, *added})
    return model, tokenizer, fresh, (Path(path), sorted(info["unexpected_keys"])), notes


def check_model_kind(config, objective: str, name: str) -> None:
    """span_corruption is for encoder-decoder models, and encoder-decoder models take only it."""
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    if objective == "span_corruption" and not seq2seq:
        raise RecipeError(
            f"task.objective span_corruption: {name!r} is a {config.model_type} model, not an encoder-decoder "
            "(T5 family); span corruption trains an encoder-decoder. Use objective clm for a decoder-only "
            "model, mlm for an encoder"
        )
    if objective != "span_corruption" and seq2seq:
        raise RecipeError(
            f"task.objective {objective}: {name!r} is an encoder-decoder ({config.model_type}) model; "
            "pretrain it with objective span_corruption"
        )


def check_tokenizer(tokenizer, objective: str, name: str) -> None:
    """The special tokens the objective's examples are built with must exist."""
    needs = {"clm": ["eos_token"], "mlm": ["cls_token", "sep_token", "mask_token"]}
    needs |= {"nsp": ["cls_token", "sep_token"], "mlm+nsp": needs["mlm"]}
    needs["span_corruption"] = ["eos_token", "pad_token"]
    needs["blank_infilling"] = ["eos_token"]
    missing = [t for t in needs[objective] if getattr(tokenizer, t, None) is None]
    if missing:
        raise RecipeError(
            f"task.objective {objective}: the tokenizer of {name!r} has no {', '.join(missing)}; "
            f"{'clm needs a decoder' if objective == 'clm' else 'use a BERT-style encoder or objective clm'}"
        )


def three_way_head(model, name: str) -> list[str]:
    """Swap the sentence-pair layer (`seq_relationship`, 2 outputs) for a fresh 3-output one."""
    from torch import nn

    for module_name, module in model.named_modules():
        for child, layer in module.named_children():
            if child == "seq_relationship" and isinstance(layer, nn.Linear):
                setattr(module, child, nn.Linear(layer.in_features, 3).to(layer.weight.dtype))
                prefix = f"{module_name}.{child}" if module_name else child
                return [f"{prefix}.weight", f"{prefix}.bias"]
    raise RecipeError(f"task.nsp_classes 3: {name!r} has no sentence-pair layer named seq_relationship")


def build_examples(texts, tokenizer, task, max_length: int, seed: int) -> dict[str, list[dict]]:
    """Training and held-out examples for the objective (see lmadapt.data.corpus)."""
    from ..data.corpus import clm_blocks, mlm_blocks, nsp_pairs, split_sentences, tokenize_documents

    out = {}
    for name, docs in texts.items():
        if task.objective == "span_corruption":
            out[name] = span_blocks(tokenize_documents(docs, tokenizer), tokenizer, task, max_length)
        elif task.objective == "blank_infilling":
            out[name] = infill_blocks(tokenize_documents(docs, tokenizer), tokenizer, task, max_length)
        elif task.objective == "clm":
            out[name] = clm_blocks(
                tokenize_documents(docs, tokenizer), tokenizer.eos_token_id, max_length, task.pack
            )
        elif task.objective == "mlm":
            ids = tokenize_documents(docs, tokenizer)
            out[name] = mlm_blocks(ids, tokenizer.cls_token_id, tokenizer.sep_token_id, max_length, task.pack)
        else:
            sentences = [split_sentences(d) for d in docs]
            flat = tokenize_documents([s for doc in sentences for s in doc], tokenizer)
            tokenized, at = [], 0
            for doc in sentences:
                tokenized.append(flat[at : at + len(doc)])
                at += len(doc)
            pairs = nsp_pairs(
                tokenized, tokenizer.cls_token_id, tokenizer.sep_token_id, max_length, task.nsp_classes,
                seed + (name == "eval"),
            )  # fmt: skip
            out[name] = pairs if docs else []
    if not out["train"]:
        raise DataError("data.train: no training examples could be built from the text")
    return out


def span_blocks(docs: list[dict], tokenizer, task, max_length: int) -> list[dict]:
    """span_corruption: EOS-joined blocks of max_length - 1 tokens (the input adds EOS, and each dropped span
    becomes one sentinel: it never grows); checks the tokenizer has a sentinel for every span."""
    from ..data.corpus import clm_blocks
    from ..training.seq2seq import noise_counts, sentinel_ids

    if not docs:
        return []
    sentinel_ids(tokenizer, noise_counts(max_length - 1, task.noise_density, task.mean_span_length)[1])
    blocks = clm_blocks(docs, tokenizer.eos_token_id, max_length - 1, task.pack)
    return [{"input_ids": b["input_ids"]} for b in blocks if len(b["input_ids"]) >= 2]


def infill_blocks(docs: list[dict], tokenizer, task, max_length: int) -> list[dict]:
    """blank_infilling: EOS-joined blocks short enough that Part A + Part B fit max_length."""
    from ..data.corpus import clm_blocks
    from ..training.blank_infilling import block_width

    if not docs:
        return []
    blocks = clm_blocks(docs, tokenizer.eos_token_id, block_width(max_length, task.noise_density), task.pack)
    return [{"input_ids": b["input_ids"]} for b in blocks if len(b["input_ids"]) >= 2]


def infiller(task, tokenizer, seed: int | None = None):
    """The recipe's blank infilling (share masked, Poisson lambda); `seed`: its own generator."""
    from ..training.blank_infilling import BlankInfiller, special_token_ids

    ids = special_token_ids(tokenizer)
    return BlankInfiller(ids, tokenizer.pad_token_id, task.noise_density, task.mean_span_length, seed)


def span_corrupter(task, tokenizer, max_length: int, seed: int | None = None):
    """The recipe's span corruption (noise density, mean span length); `seed`: its own generator."""
    from ..training.seq2seq import SpanCorrupter, noise_counts, sentinel_ids

    spans = noise_counts(max_length - 1, task.noise_density, task.mean_span_length)[1]
    sentinels = sentinel_ids(tokenizer, spans)
    return SpanCorrupter(tokenizer, sentinels, task.noise_density, task.mean_span_length, seed)


UNKNOWN_WARNING = 0.05  # a share of [UNK] tokens above which the log says the vocabulary does not fit


def unknown_share(features: list[dict], tokenizer, masked: bool, name: str) -> float:
    """The share of the training tokens the tokenizer maps to its unknown token. A masked objective with no
    token that is neither special nor unknown would train on nothing (loss 0): that is an error."""
    specials = set(tokenizer.all_special_ids)
    unk = tokenizer.unk_token_id
    if unk in (tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id):
        unk = None  # byte-level vocabularies (GPT-2) know every text; their "unk" is EOS, the separator
    unknown = maskable = 0  # of the text's own tokens ([CLS], [SEP], padding are not counted)
    for feature in features:
        for token in feature["input_ids"]:
            if token == unk:
                unknown += 1
            elif token not in specials:
                maskable += 1
    if masked and not maskable:
        raise DataError(
            f"data.train: every token of the training text is a special or unknown ({tokenizer.unk_token}) "
            f"token for the tokenizer of {name!r}, so there is nothing to mask; use a model whose vocabulary "
            "covers this text"
        )
    return unknown / max(1, unknown + maskable) if unk is not None else 0.0


def start_run(recipe, resume: bool, texts: dict, examples: dict, fresh: list[str]) -> RunDir:
    run_dir = RunDir.start(recipe, resume)
    run_dir.write_config(recipe)
    task = recipe.task
    counts = ", ".join(f"{k} {len(texts[k])} documents -> {len(examples[k])} examples" for k in texts)
    run_dir.log(f"task lm, objective {task.objective}: {counts}")
    if fresh:
        run_dir.log(
            f"{len(fresh)} parameters are not in the checkpoint of {recipe.model.name!r} and start freshly "
            f"initialised (seed {recipe.train.seed}); they train whatever the method: {', '.join(fresh)}"
        )
    return run_dir


def check_resumable(method: str, fresh: list[str], save_every: int | None) -> None:
    """LoRA checkpoints hold the adapter only: a fresh head (trained outside it) could not be restored."""
    if fresh and method == "lora" and save_every is not None:
        raise RecipeError(
            "train.save_every with method lora: the freshly initialised head trains outside the adapter, "
            "so checkpoints could not restore it; use method full or freeze, or leave out save_every"
        )


def adapt(model, method_cfg, objective: str, fresh: list[str]):
    """Apply the method, then make the fresh head's parameters trainable (a frozen random head learns
    nothing)."""
    from ..methods import apply_method

    model = apply_method(model, method_cfg, HEADS[objective][1])
    wanted = set(fresh)
    for name, param in model.named_parameters():
        if name.removeprefix("base_model.model.") in wanted:
            param.requires_grad_(True)
    return model


def held_out_measure(task, tokenizer, features: list[dict], cfg):
    """measure(model, when, log) -> the held-out metrics, keys suffixed `_before` when `when` is before.
    Masked-LM examples are masked once here (seeded), so before and after see the same positions."""
    from ..training.blank_infilling import BlankCollator, infill_once
    from ..training.pretraining import LmCollator, fix_masks, lm_metrics, pseudo_perplexity
    from ..training.seq2seq import corrupt_once

    plain = LmCollator(tokenizer)
    scored = fix_masks(features, masker(task, tokenizer, cfg.seed)) if task.masked else features
    if task.objective == "span_corruption":
        scored = corrupt_once(features, span_corrupter(task, tokenizer, cfg.max_length, cfg.seed))
    if task.objective == "blank_infilling":
        scored = infill_once(features, infiller(task, tokenizer, cfg.seed))
        plain = BlankCollator(tokenizer.pad_token_id)
    batch = cfg.eval_batch_size or 2 * cfg.batch_size
    sample = features[: task.pseudo_perplexity_examples] if task.masked else []

    def measure(model, when: str, log) -> dict:
        metrics = lm_metrics(model, scored, plain, task.objective, batch)
        if sample:
            metrics["pseudo_perplexity"] = pseudo_perplexity(
                model, sample, tokenizer.mask_token_id, tokenizer.all_special_ids, batch
            )
        log(f"held-out {when} training: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
        return {f"{k}_before" if when == "before" else k: v for k, v in metrics.items()}

    return measure


def masker(task, tokenizer, seed: int | None = None):
    """The recipe's masking (rate, replacement split, whole words); `seed`: its own generator."""
    from ..training.pretraining import Masker

    return Masker(
        tokenizer,
        task.mlm_probability,
        task.mask_replace_prob,
        task.random_replace_prob,
        task.whole_word,
        seed,
    )


def build_trainer(recipe, model, tokenizer, examples: dict, run_dir: RunDir):
    """The Trainer: masks drawn per training batch from torch's RNG (restored on resume); the eval loss per
    eval.every on held-out examples masked once."""
    from ..training.arguments import training_arguments
    from ..training.blank_infilling import BlankCollator, infill_once
    from ..training.pretraining import LmCollator, PretrainTrainer, fix_masks
    from ..training.seq2seq import corrupt_once

    task, cfg = recipe.task, recipe.train
    evals = examples["eval"]
    spans = task.objective == "span_corruption"
    if task.masked and evals:
        evals = fix_masks(evals, masker(task, tokenizer, cfg.seed))
    if spans and evals:
        evals = corrupt_once(evals, span_corrupter(task, tokenizer, cfg.max_length, cfg.seed))
    blanks = task.objective == "blank_infilling"
    corrupter = span_corrupter(task, tokenizer, cfg.max_length) if spans else None
    if blanks:
        evals = infill_once(evals, infiller(task, tokenizer, cfg.seed)) if evals else evals
        corrupter = infiller(task, tokenizer)
    labels = {
        "clm": ["labels"],
        "mlm": ["labels"],
        "nsp": ["next_sentence_label"],
        "span_corruption": ["labels"],
        "blank_infilling": ["labels"],
    }
    args = training_arguments(
        cfg, str(run_dir / "checkpoints"), eval_every=recipe.eval.every, has_eval=bool(evals),
        eval_batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, grouped=cfg.group_by_length,
        remove_unused_columns=False, prediction_loss_only=True,
        label_names=labels.get(task.objective, ["labels", "next_sentence_label"]),
    )  # fmt: skip
    return PretrainTrainer(
        model=model,
        args=args,
        data_collator=BlankCollator(tokenizer.pad_token_id) if blanks else LmCollator(tokenizer),
        train_dataset=examples["train"],
        eval_dataset=[{k: v for k, v in f.items() if k != "word_start"} for f in evals] or None,
        processing_class=tokenizer,
        masker=masker(task, tokenizer) if task.masked else None,
        corrupter=corrupter,
    )


def save_model(model, tokenizer, origin: tuple[Path, list[str]], run_dir: RunDir) -> Path:
    """`model/`: the whole model (LoRA merged) + tokenizer, plus checkpoint tensors it does not hold
    (blank_infilling: its block-position embedding goes beside it, see lmadapt.training.blank_infilling)."""
    from ..training.blank_infilling import pop_block_positions, save_block_positions
    from ..utils.io import atomic_path

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    block_positions = pop_block_positions(model)
    with atomic_path(run_dir / "model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        carried = carry_unused_tensors(*origin, tmp, model)
        if block_positions is not None:
            save_block_positions(block_positions, tmp)
    if carried:
        run_dir.log(
            f"model/: kept {len(carried)} checkpoint tensors the objective does not use: {', '.join(carried)}"
        )
    return run_dir / "model"


def carry_unused_tensors(source: Path, unused: list[str], folder: Path, model) -> list[str]:
    """Copy the checkpoint's `unused` tensors (as its files name them) into folder/model.safetensors, under
    the saved model's naming (BERT's `pooler.dense.weight` -> `bert.pooler.dense.weight`)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    target = folder / "model.safetensors"
    files = sorted(source.glob("*.safetensors")) if source.is_dir() else []
    if not target.is_file() or not files:
        return []
    saved = load_file(str(target))
    prefix = getattr(model, "base_model_prefix", "")
    unused = set(unused)
    carried = {}
    for file in files:
        with safe_open(str(file), "pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has keys(), no __iter__)
                name = key if key.startswith(f"{prefix}.") or not prefix else f"{prefix}.{key}"
                if key in unused and name not in saved:
                    carried[name] = f.get_tensor(key)
    if carried:
        save_file(saved | carried, str(target), metadata={"format": "pt"})
    return sorted(carried)


def _set_threads(num_threads: int | None) -> None:
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
