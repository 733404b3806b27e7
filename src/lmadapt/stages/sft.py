"""`stage: sft`: instruction-tune a decoder on chat data (task `sft`) or on a generative task (task `generate`).

Reads top to bottom: load the model, build examples (prompt tokens masked, loss on every assistant turn),
apply the method, measure held-out loss, train (Hugging Face `Trainer`, used as is), measure again, generate
and score (generate tasks; sft tasks when eval.metrics asks for rouge_l), save.

Batching (`train.packing`): plain padding, or padding-free packing: several examples per row, position ids
restarting at each example, no attention mask, so transformers attends only within each example; `rows`
packs the whole training set into max_length rows, `batch` packs each batch's own examples (same data order
and same loss as unpacked, less padding). Speed levers (docs/performance.md): bf16 autocast with frozen
linear weights stored in bf16 while training, and the chunked loss that never builds full-vocabulary logits.
With no `data.train` split the stage trains nothing and evaluates the model as it is (zero-shot baseline).

Encoder-decoder models (T5 family, `AutoModelForSeq2SeqLM`): the prompt (the rendered messages before the last
assistant turn) is the encoder's input, that answer the decoder's labels; batches are padded (no packing),
the model computes its own loss, and methods full and lora apply (PEFT task type SEQ_2_SEQ_LM).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, RecipeError
from ..evaluation import cost_record
from ..runs import RunDir, timer
from ..templates import IGNORE, encode_chat, fit_fields, render_prompt, resolve_template, to_messages
from ..utils import distributed
from ..utils.io import write_jsonl
from ..utils.seed import seed_everything


def run(recipe, callbacks: list | None = None, resume: bool = False) -> Path:
    """Train and evaluate; `callbacks` are extra `TrainerCallback`s (the benchmark's step timer);
    `resume` continues the interrupted run of this recipe from its last verified checkpoint."""
    from ..infer.engine import Engine
    from ..infer.loading import is_encoder_decoder
    from ..methods import check_method, save_trained
    from ..plots import save_plots
    from ..training.progress import history_from, run_callbacks

    task, cfg = recipe.task, recipe.train
    if task.type not in ("sft", "generate"):
        raise RecipeError(f"stage sft: task type {task.type!r} is not supported; use sft or generate")
    check_method(recipe.method, "causal_lm")  # a bad method fails before any loading
    _set_threads(cfg.num_threads)
    seed_everything(cfg.seed)

    # --- data, model, examples ------------------------------------------------------------------------
    splits = load_records(recipe)
    model, tokenizer, method, template = load_model(recipe)
    splits, features, counts = prepare_examples(
        splits, task, tokenizer, template, cfg.max_length, is_encoder_decoder(model)
    )
    training = bool(features["train"])

    # --- run folder (only now: a bad recipe, data or model leaves nothing behind), method ------------
    run_dir = start_run(recipe, resume, splits, counts)
    model, trainable, total = adapt(model, recipe.method, training, template, run_dir)

    # --- train, with the held-out loss before and after ----------------------------------------------
    trainer = build_trainer(recipe, method, model, tokenizer, features, run_dir)
    for callback in [*(callbacks or []), *run_callbacks(run_dir, cfg.keep_checkpoints)]:
        trainer.add_callback(callback)
    during = []  # generate tasks: the task metric at each evaluation while training, not only the loss
    if training and task.type == "generate" and trainer.args.eval_strategy != "no":
        engine, batch = Engine(model, tokenizer, template), cfg.eval_batch_size or cfg.batch_size
        during.append(generation_eval(engine, task, splits["eval"], batch))
    final, train_seconds, resumed_from = train_with_eval_loss(
        trainer, cfg, run_dir, training, features["eval"], during
    )
    model = trainer.model

    # --- generate + score (generate tasks; sft when eval.metrics asks for rouge_l) -------------------
    predictions, infer_per_s = [], None
    if task.type == "generate" or "rouge_l" in (recipe.eval.metrics or []):
        engine = Engine(model, tokenizer, template)
        predictions, infer_per_s = score_splits(engine, task, splits, cfg, final, run_dir.log)

    # --- save -------------------------------------------------------------------------------------------
    if training:
        save_trained(model, recipe.method, run_dir.path)
    if predictions:
        write_jsonl(run_dir / "predictions.jsonl", predictions)
    history = history_from(trainer.state.log_history)
    save_plots(run_dir / "plots", history, {}, "loss")
    cost = cost_record(
        train_seconds, len(features["train"]), trainable, total, infer_per_s,
        train_tokens=sum(len(f["input_ids"]) for f in features["train"]), resumed_from_step=resumed_from,
    )  # fmt: skip
    run_dir.write_metrics(final=final, history=history, cost=cost)
    return run_dir.commit(keep_checkpoints=cfg.save_every is not None)


def load_model(recipe):
    """(model, tokenizer, method, template): a decoder-only or encoder-decoder LM, the method checked for
    its kind (an encoder-decoder model takes full or lora), the chat template its prompts are rendered with."""
    from ..infer.loading import lm_task_type, load_lm
    from ..methods import check_method

    model, tokenizer = load_lm(recipe.model.name, recipe.model.dtype, recipe.model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    method = check_method(recipe.method, lm_task_type(model))
    return model, tokenizer, method, resolve_template(tokenizer, recipe.task.template)


def start_run(recipe, resume: bool, splits: dict, counts: dict) -> RunDir:
    run_dir = RunDir.start(recipe, resume)
    run_dir.write_config(recipe)
    run_dir.log(f"task {recipe.task.type}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    for line in fit_report(counts, recipe.task.type, recipe.train.max_length):
        run_dir.log(line)
    return run_dir


def fit_report(counts: dict, task_type: str, max_length: int) -> list[str]:
    """Log lines: per split, inputs cut to fit max_length, answers cut (sft), examples left out."""
    lines = []
    for name, c in counts.items():
        if c["cut"]:
            lines.append(f"{name}: {c['cut']} examples had their input cut to fit max_length={max_length}")
        answer_cut = c["too_long"] - c["dropped"]
        if task_type == "sft" and answer_cut > 0:
            lines.append(f"{name}: {answer_cut} examples exceed max_length={max_length} without their input: "
                         "the end of the answer is cut")  # fmt: skip
        if c["dropped"]:
            why = (
                "no answer token within max_length"
                if task_type == "sft"
                else "instruction + answer exceed it"
            )
            lines.append(f"{name}: {c['dropped']} examples left out ({why}, max_length={max_length})")
    return lines


def adapt(model, method_cfg, training: bool, template: str, run_dir: RunDir):
    """Apply the method when there is something to train; (model, trainable params, total params)."""
    from ..infer.loading import lm_task_type
    from ..methods import apply_method, count_parameters

    if training:
        model = apply_method(model, method_cfg, lm_task_type(model))
    trainable, total = count_parameters(model)
    run_dir.log(
        f"template {template}; method {method_cfg.type}: {trainable:,} of {total:,} parameters train"
        if training
        else f"template {template}; no training split: evaluating the model as it is ({total:,} params)"
    )
    return model, (trainable if training else 0), total


def prepare_examples(splits, task, tokenizer, template: str, max_length: int, seq2seq: bool = False):
    """(records, tokenized examples, counts) per split. Input fields are cut first so that instruction +
    input + answer fit max_length (never the instruction or the answer); counts per split: cut, too_long
    (not even without input), dropped. Stops when every training example is dropped: it never falls back to
    the untrained model. `seq2seq`: encoder-decoder examples (the encoder's input must fit max_length, and
    the answer, apart)."""
    length = (seq2seq_length if seq2seq else example_length)(task, tokenizer, template)
    build = build_seq2seq_examples if seq2seq else build_examples
    fitted = {
        n: [fit_fields(r, input_fields(task), tokenizer, length, max_length) for r in rs]
        for n, rs in splits.items()
    }
    splits = {n: [r for r, _ in rs] for n, rs in fitted.items()}
    built = {name: build(rs, tokenizer, template, max_length, task) for name, rs in splits.items()}
    features = {name: f for name, (f, _) in built.items()}
    if splits["train"] and not features["train"]:
        blank = dict.fromkeys(input_fields(task), "")
        bare = min(length(r | blank) for r in splits["train"])
        raise DataError(
            f"data.train: all {len(splits['train'])} training examples were dropped: none fits "
            f"train.max_length={max_length} even with its input cut (the shortest instruction + answer "
            f"takes {bare} tokens); raise train.max_length to at least {bare} or shorten the instruction"
        )
    counts = {
        n: {"cut": sum(s == "cut" for _, s in rs), "too_long": sum(s == "too_long" for _, s in rs)}
        | {"dropped": built[n][1]}
        for n, rs in fitted.items()
    }
    return splits, features, counts


def build_trainer(recipe, method, model, tokenizer, features: dict, run_dir: RunDir):
    """The causal-LM Trainer: packing per `train.packing`, the chunked loss unless the method injects inputs."""
    import torch

    from ..infer.loading import is_encoder_decoder
    from ..training.arguments import training_arguments
    from ..training.seq2seq import Seq2SeqCollator
    from ..training.trainer import CausalLMTrainer

    cfg = recipe.train
    seq2seq = is_encoder_decoder(model)
    packing = "off" if seq2seq else cfg.packing  # encoder-decoder batches are padded: no packing
    rows = packing == "rows"
    train_rows = pack_examples(features["train"], cfg.max_length) if rows else features["train"]
    if rows and train_rows:
        real = sum(len(f["input_ids"]) for f in features["train"])
        run_dir.log(f"packing: {len(features['train'])} examples into {len(train_rows)} rows ({real} tokens)")
    loss_chunk = cfg.loss_chunk if cfg.chunked_loss and not method.injects_inputs and not seq2seq else None
    run_dir.log(
        f"speed: packing {packing}{' (encoder-decoder)' * seq2seq}, bf16 {cfg.bf16} "
        f"(frozen weights bf16: {cfg.bf16 and cfg.bf16_frozen}), "
        f"chunked loss {loss_chunk or 'off'}, compile {cfg.compile}, threads {torch.get_num_threads()}"
    )
    args = training_arguments(
        cfg, str(run_dir / "checkpoints"), eval_every=recipe.eval.every, has_eval=bool(features["eval"]),
        eval_batch_size=cfg.eval_batch_size or cfg.batch_size, grouped=cfg.group_by_length and not rows,
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,  # every trainable parameter is in every step's graph: skip DDP's search
    )  # fmt: skip
    model.config.use_cache = False  # a KV cache would switch off transformers' packed-sequence masking
    pack_width = cfg.max_length if packing == "batch" else None
    return CausalLMTrainer(  # with loss_chunk None (encoder-decoder models): the model's own loss
        model=model,
        args=args,
        data_collator=Seq2SeqCollator(tokenizer.pad_token_id)
        if seq2seq
        else SftCollator(tokenizer.pad_token_id, pack_width),
        train_dataset=train_rows or None,
        eval_dataset=features["eval"] or None,
        processing_class=tokenizer,
        loss_chunk=loss_chunk,
    )


def train_with_eval_loss(trainer, cfg, run_dir: RunDir, training: bool, eval_features: list, during=()):
    """Held-out loss before, training (resumable, with the `during` callbacks), held-out loss after; then
    only rank 0 goes on (data-parallel runs).

    Returns (final metrics, training seconds, the step it resumed from)."""
    from ..training.checkpoints import train_from_latest
    from ..training.compile import compiled_layers
    from ..training.precision import frozen_in_bf16
    from ..training.trainer import evaluate_before_training

    model = trainer.model
    final: dict[str, dict] = {}
    if eval_features:
        final["eval"] = {"loss_before": round(evaluate_before_training(trainer)["eval_loss"], 4)}
        run_dir.log(f"eval loss before training: {final['eval']['loss_before']}")
    seconds, resumed_from = 0.0, None
    if training:
        for callback in during:
            trainer.add_callback(callback)
        stash = run_dir / "frozen-fp32.safetensors"
        if not distributed.is_main():  # the run folder is rank 0's; the others stash among temporary files
            import os
            import tempfile

            stash = Path(tempfile.gettempdir()) / f"lmadapt-frozen-fp32-{os.getpid()}.safetensors"
        bf16_frozen = frozen_in_bf16(model, stash, cfg.bf16 and cfg.bf16_frozen)
        seconds, resumed_from = train_from_latest(
            trainer, run_dir, bf16_frozen, compiled_layers(model, cfg.compile)
        )
        if eval_features:
            final["eval"]["loss"] = round(trainer.evaluate()["eval_loss"], 4)
            run_dir.log(f"eval loss after training: {final['eval']['loss']}")
    distributed.leave_unless_main()  # the other ranks are done: generation and saving run once, on rank 0
    trainer.model.config.use_cache = True
    return final, seconds, resumed_from


def score_splits(engine, task, splits, cfg, final: dict, log) -> tuple[list[dict], float | None]:
    """Generate for eval and test and score by the task metric into `final`; (test rows, examples/s)."""
    batch_size = cfg.eval_batch_size or cfg.batch_size
    predictions, seconds, examples = [], 0.0, 0
    for name in ("eval", "test"):
        records = splits[name]
        if not records:
            continue
        with timer() as infer_time:
            metrics, predictions = generate_and_score(engine, task, records, batch_size)
        seconds += infer_time()
        examples += len(records)
        final.setdefault(name, {}).update(metrics)
        log(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return predictions, round(examples / seconds, 2) if seconds else None


def _set_threads(num_threads: int | None) -> None:
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)


# --- data ---------------------------------------------------------------------------------------------------
def load_records(recipe) -> dict[str, list[dict]]:
    """train / eval / test records through the shared readers, validated for the task's record shape."""
    from ..data import load_split, shape_fields

    data, task = recipe.data, recipe.task
    limits = {"train": data.max_train, "eval": data.max_eval, "test": data.max_test}
    out = {}
    for name in ("train", "eval", "test"):
        split = getattr(data, name)
        if task.type == "generate":
            from ..generative import record_fields

            fields = record_fields(task)
        else:
            shape = task.format
            if shape == "auto" and split is not None:
                first = load_split(data.source, split, {}, limit=1)
                shape = "messages" if first and "messages" in first[0] else "alpaca"
            fields = shape_fields("messages" if shape == "messages" else "alpaca")
        out[name] = load_split(data.source, split, fields, limit=limits[name], seed=data.seed)
    return out


def record_messages(record: dict, task) -> list[dict]:
    """The conversation a record trains on (user/assistant turns; an opening assistant turn is dropped)."""
    if task.type == "generate":
        from ..generative import prompt_messages, target_text

        return [*prompt_messages(task, record), {"role": "assistant", "content": target_text(task, record)}]
    messages = to_messages(record, task.system)
    head = 1 if messages and messages[0]["role"] == "system" else 0
    while len(messages) > head and messages[head]["role"] == "assistant":
        messages.pop(head)  # an answer with no question before it cannot be prompted for
    return messages


def fit_record(record: dict, task, tokenizer, template: str, max_length: int) -> tuple[dict, str]:
    """(record, status): its input fields (generate: task.text; sft: an Alpaca `input`) cut, last first, so
    that the whole example fits `max_length` tokens; status "fits", "cut" or "too_long" (templates.fit_fields)."""
    length = example_length(task, tokenizer, template)
    return fit_fields(record, input_fields(task), tokenizer, length, max_length)


def example_length(task, tokenizer, template: str):
    """record -> its token count as a decoder-only example (prompt + answer)."""
    return lambda r: len(encode_chat(tokenizer, record_messages(r, task), template)[0])


def seq2seq_length(task, tokenizer, template: str):
    """record -> its encoder-decoder example's longer side: the encoder's input or the answer."""
    from ..training.seq2seq import source_ids, split_last_answer, target_ids

    def length(record) -> int:
        split = split_last_answer(record_messages(record, task))
        if split is None:
            return 0
        prompt, answer = split
        source = source_ids(tokenizer, render_prompt(tokenizer, prompt, template))
        return max(len(source), len(target_ids(tokenizer, answer)))

    return length


def input_fields(task) -> list[str]:
    """The fields that may be cut to fit: a generate task's inputs, an Alpaca record's `input`."""
    return list(task.text) if task.type == "generate" else ["input"]


def build_examples(records, tokenizer, template: str, max_length: int, task) -> tuple[list[dict], int]:
    """Tokenized examples ({input_ids, labels}) cut at max_length, and how many were dropped: no answer token
    left, or (generate tasks, whose answer is learnt whole or not at all) any part of the answer cut."""
    features, dropped = [], 0
    for record in records:
        ids, labels = encode_chat(tokenizer, record_messages(record, task), template)
        whole = len(ids) <= max_length
        ids, labels = ids[:max_length], labels[:max_length]
        if task.type == "generate" and not whole:
            dropped += 1
            continue
        if all(x == IGNORE for x in labels[1:]):  # label 0 is never predicted (nothing comes before it)
            dropped += 1
            continue
        features.append({"input_ids": ids, "labels": labels})
    return features, dropped


def build_seq2seq_examples(
    records, tokenizer, template: str, max_length: int, task
) -> tuple[list[dict], int]:
    """Encoder-decoder examples ({input_ids: the rendered prompt, labels: the last answer + EOS}), each side
    cut at max_length, and how many were dropped: no answer, or (generate tasks) an answer that was cut."""
    from ..training.seq2seq import source_ids, split_last_answer, target_ids

    features, dropped = [], 0
    for record in records:
        split = split_last_answer(record_messages(record, task))
        labels = target_ids(tokenizer, split[1]) if split else []
        if not split or not split[1] or (task.type == "generate" and len(labels) > max_length):
            dropped += 1
            continue
        ids = source_ids(tokenizer, render_prompt(tokenizer, split[0], template))
        features.append({"input_ids": ids[:max_length], "labels": labels[:max_length]})
    return features, dropped


# --- batching -----------------------------------------------------------------------------------------------
def pack_examples(features: list[dict], max_length: int) -> list[dict]:
    """Pack examples into rows of at most `max_length` tokens (first fit, longest first).

    Each row holds input_ids, labels and position_ids restarting at 0 per example. Each example's first label
    is masked: in a row it would be predicted from the previous example's last token, and unpacked it is
    never predicted, so per-example losses are unchanged.
    """
    return _build_rows(features, _first_fit([len(f["input_ids"]) for f in features], max_length))


def pack_batch(features: list[dict], max_width: int) -> list[dict]:
    """One batch's examples packed into the rows that need the fewest padded slots (rows x widest row).

    Tries every row width from the longest example up to `max_width`: a wider row fits more examples but
    pads every row to it, so the best width depends on the batch's length mix (all-equal lengths: no packing).
    Widths are compared on lengths alone; only the chosen layout's rows are built.
    """
    lengths = [len(f["input_ids"]) for f in features]
    longest = max(lengths)
    best, best_slots = None, None
    for width in range(longest, max(max_width, longest) + 1):
        layout = _first_fit(lengths, width)
        slots = len(layout) * max(sum(lengths[i] for i in row) for row in layout)
        if best_slots is None or slots < best_slots:
            best, best_slots = layout, slots
    return _build_rows(features, best)


def _first_fit(lengths: list[int], width: int) -> list[list[int]]:
    """Rows of example indices: longest first, each into the first row it fits (a row of its own if none)."""
    rows: list[list[int]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        slot = next((r for r, u in enumerate(used) if u + lengths[i] <= width), None)
        if slot is None:
            rows.append([])
            used.append(0)
            slot = len(rows) - 1
        rows[slot].append(i)
        used[slot] += lengths[i]
    return rows


def _build_rows(features: list[dict], layout: list[list[int]]) -> list[dict]:
    rows = []
    for row in layout:
        packed = {"input_ids": [], "labels": [], "position_ids": []}
        for i in row:
            f = features[i]
            packed["input_ids"] += f["input_ids"]
            packed["labels"] += [IGNORE, *f["labels"][1:]]
            packed["position_ids"] += list(range(len(f["input_ids"])))
        rows.append(packed)
    return rows


class SftCollator:
    """Pads a batch on the right. Plain examples get an attention mask; packed rows (with position_ids) get
    none, and their padding is one more segment (positions from 0), so no example attends across another.
    With `pack_width`, the batch's own examples are first packed into rows at most that wide."""

    def __init__(self, pad_id: int, pack_width: int | None = None):
        self.pad_id = pad_id
        self.pack_width = pack_width

    def __call__(self, features: list[dict]) -> dict:
        import torch

        if self.pack_width and "position_ids" not in features[0]:
            features = pack_batch(features, self.pack_width)
        width = max(len(f["input_ids"]) for f in features)
        packed = "position_ids" in features[0]
        batch = {"input_ids": [], "labels": [], ("position_ids" if packed else "attention_mask"): []}
        for f in features:
            n = len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_id] * (width - n))
            batch["labels"].append(f["labels"] + [IGNORE] * (width - n))
            if packed:
                batch["position_ids"].append(f["position_ids"] + list(range(width - n)))
            else:
                batch["attention_mask"].append([1] * n + [0] * (width - n))
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


# --- generation -------------------------------------------------------------------------------------------
def generation_eval(engine, task, records: list[dict], batch_size: int):
    """A Trainer callback: after each evaluation during training, generate on `records` and log the metric."""
    from transformers import TrainerCallback

    class GenerationEval(TrainerCallback):
        def on_evaluate(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return  # generated and scored once, on rank 0
            training = engine.model.training
            engine.model.config.use_cache = True
            try:
                metrics, _ = generate_and_score(engine, task, records, batch_size)
            finally:
                engine.model.config.use_cache = False  # back to training: packed rows need no cache
                engine.model.train(training)
            entry = {"step": state.global_step, "epoch": state.epoch}
            state.log_history.append(entry | {f"eval_{k}": v for k, v in metrics.items()})

    return GenerationEval()


def generate_and_score(engine, task, records: list[dict], batch_size: int) -> tuple[dict, list[dict]]:
    """Greedy answers for `records`, scored by the task's metric; returns (metrics, prediction rows)."""
    from ..generative import prompt_messages, rouge_l, score_outputs, target_text

    if task.type == "generate":
        prompts = [prompt_messages(task, r) for r in records]
        golds = [target_text(task, r) for r in records]
        max_new = task.max_new_tokens
    else:  # free text: answer the last user turn, compare with the reference answer
        convs = [to_messages(r, task.system) for r in records]
        prompts = [c[:-1] if c[-1]["role"] == "assistant" else c for c in convs]
        golds = [c[-1]["content"] if c[-1]["role"] == "assistant" else "" for c in convs]
        max_new = 128
    outputs = engine.generate(prompts, max_new_tokens=max_new, batch_size=batch_size)
    if task.type == "generate":
        metrics, parsed = score_outputs(task, records, outputs)
    else:
        scores = [rouge_l(g, o) for g, o in zip(golds, outputs, strict=True)]
        metrics, parsed = {"rouge_l": sum(scores) / max(len(scores), 1)}, outputs
    id_field = getattr(task, "id", None)
    rows = [
        {"id": r.get(id_field, i) if id_field else i, "output": o, "prediction": p, "gold": g}
        for i, (r, o, p, g) in enumerate(zip(records, outputs, parsed, golds, strict=True))
    ]
    return metrics, rows
