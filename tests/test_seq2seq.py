"""Encoder-decoder models (T5 family) on tiny random T5s: sft (full, LoRA), the engine's seq2seq decoding,
span-corruption pretraining and its noise maths, and the errors for objective / model mismatches."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lmadapt.config import parse_recipe
from lmadapt.errors import LmadaptError, RecipeError
from lmadapt.training.seq2seq import (
    IGNORE,
    SpanCorrupter,
    corrupt_spans,
    noise_counts,
    pad_seq2seq,
    random_spans_noise_mask,
)
from tiny_lm import SENTENCES, SPECIALS, save_tiny

SENTINELS = [f"<extra_id_{k}>" for k in range(24)]
PAIRS = [
    ("count to three", "one two three"),
    ("capital of france?", "paris"),
    ("greet me", "hello how are you today?"),
    ("where did the cat sit?", "the cat sat on the mat"),
    ("say thanks", "thank you very much"),
    ("last number", "ten"),
]


def t5_tokenizer():
    """Byte-level BPE with T5's conventions: <pad> first (the decoder start), </s> appended to every
    encoded text, sentinels <extra_id_0>.. for span corruption."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = [*SPECIALS, "<unk>", *SENTINELS]
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(SENTENCES * 3, trainer)
    eos = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=SENTINELS,
    )  # fmt: skip


def tiny_t5(tokenizer, seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, dropout_rate=0.0, tie_word_embeddings=False,
    )  # fmt: skip
    return T5ForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-t5")
    tok = t5_tokenizer()
    tiny_t5(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sft_recipe(tmp: Path, model: Path, method: dict, output: str, **train):
    data = write_jsonl(tmp / "train.jsonl", [{"instruction": i, "input": "", "output": o} for i, o in PAIRS])
    return parse_recipe(
        {
            "model": str(model),
            "task": {"type": "sft", "template": "plain"},
            "data": {"train": str(data), "eval": str(data), "test": None},
            "method": method,
            "stage": "sft",
            "train": {"epochs": 20, "lr": 1e-2, "batch_size": 3, "max_length": 48, "num_threads": 1}
            | {"packing": True}
            | train,
            "eval": {"every": "no", "metrics": ["rouge_l"]},
            "output": str(tmp / output),
        }
    )


PROMPTS = [[{"role": "user", "content": i}] for i, _ in PAIRS]


# --- sft + engine ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_run(tmp_path_factory, t5_dir) -> Path:
    from lmadapt.stages.sft import run

    tmp = tmp_path_factory.mktemp("full-sft")
    return run(sft_recipe(tmp, t5_dir, {"type": "full"}, "full", epochs=30, lr=3e-3))


def test_full_sft_learns_the_answers_and_generation_reproduces_one(full_run, t5_dir):
    from lmadapt.infer.engine import load_engine

    metrics = json.loads((full_run / "metrics.json").read_text())
    assert metrics["final"]["eval"]["loss"] < 0.3 * metrics["final"]["eval"]["loss_before"]
    assert (full_run / "model" / "model.safetensors").is_file()
    assert "packing off (encoder-decoder)" in (full_run / "log.txt").read_text()
    engine = load_engine(str(full_run), dtype="float32")
    assert engine.is_seq2seq
    outputs = engine.generate(PROMPTS, max_new_tokens=12)
    golds = [o for _, o in PAIRS]
    assert sum(o.strip() == g for o, g in zip(outputs, golds, strict=True)) >= 4, outputs
    assert metrics["final"]["eval"]["rouge_l"] > 0.6  # sft's own generative eval, through the same engine
    base = load_engine(str(t5_dir), dtype="float32").generate(PROMPTS, max_new_tokens=12)
    assert base != outputs


def test_generate_file_and_chat_answer_with_the_trained_t5(full_run, tmp_path):
    from lmadapt.infer.batch import generate_file
    from lmadapt.infer.chat import run_chat

    records = [{"instruction": i, "output": o} for i, o in PAIRS]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    assert generate_file(str(full_run), source, tmp_path / "out.jsonl", max_new_tokens=12) == len(PAIRS)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    hits = sum(r["output"].strip() == o for r, (_, o) in zip(rows, PAIRS, strict=True))
    assert hits >= 4, rows
    said = []
    session = run_chat(str(full_run), lines=["capital of france?"], write=said.append, max_new_tokens=12)
    assert said[-1] == "assistant> paris"
    assert session.messages[-1] == {"role": "assistant", "content": "paris"}


def test_serve_refuses_a_seq2seq_model_by_kind(t5_dir, full_run):
    from lmadapt.serve.models import load_served
    from lmadapt.serve.security import ServeError

    for spec in (str(t5_dir), str(full_run)):
        with pytest.raises(
            ServeError, match=r"encoder-decoder \(t5\) model; lmadapt serve decodes decoder-only"
        ):
            load_served([spec])


def test_lora_sft_reloads_to_identical_generations(tmp_path, t5_dir, monkeypatch):
    from lmadapt.infer.engine import Engine, load_engine
    from lmadapt.stages import sft

    recipe = sft_recipe(
        tmp_path, t5_dir, {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target": ["q", "k", "v", "o"]},
        "lora",
    )  # fmt: skip
    seen = {}
    build = sft.build_trainer

    def spy(recipe, method, model, tokenizer, features, run_dir):  # keep the trained model in memory
        seen["model"], seen["tokenizer"] = model, tokenizer
        return build(recipe, method, model, tokenizer, features, run_dir)

    monkeypatch.setattr(sft, "build_trainer", spy)
    run_dir = sft.run(recipe)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final"]["eval"]["loss"] < 0.5 * metrics["final"]["eval"]["loss_before"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_2_SEQ_LM"
    assert metrics["cost"]["trainable_params"] < metrics["cost"]["total_params"] / 3
    trained = Engine(seen["model"], seen["tokenizer"], "plain").generate(PROMPTS, max_new_tokens=12)
    reloaded = load_engine(str(run_dir), dtype="float32").generate(PROMPTS, max_new_tokens=12)
    assert reloaded == trained
    assert reloaded != load_engine(str(t5_dir), dtype="float32").generate(PROMPTS, max_new_tokens=12)


def manual_greedy(model, tokenizer, prompt_ids: list[int], n: int) -> str:
    """Reference: the encoder once, then one decoder forward over the whole prefix per new token."""
    enc = model.get_encoder()(input_ids=torch.tensor([prompt_ids])).last_hidden_state
    new = [model.config.decoder_start_token_id]
    with torch.no_grad():
        for _ in range(n):
            logits = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([new])).logits[0, -1]
            token = int(logits.argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    return tokenizer.decode(new[1:], skip_special_tokens=True)


def test_engine_decodes_seq2seq_batched_like_one_by_one_and_seeded(t5_dir):
    from lmadapt.infer.engine import load_engine

    torch.set_num_threads(1)
    engine = load_engine(str(t5_dir), dtype="float32")
    texts = ["the cat", "hello how are you today? I am", "one two three four five six", "paris"]
    greedy = engine.generate(texts, max_new_tokens=8, batch_size=4)
    with torch.no_grad():
        assert greedy == [manual_greedy(engine.model, engine.tokenizer, engine.encode(t), 8) for t in texts]
    assert engine.encode("paris")[-1] == engine.tokenizer.eos_token_id  # the encoder sees T5's </s>
    assert engine.generate(texts, max_new_tokens=8, batch_size=3) == greedy
    sampled = engine.generate(texts, max_new_tokens=8, do_sample=True, temperature=2.0, seed=3)
    alone = engine.generate(texts, max_new_tokens=8, do_sample=True, temperature=2.0, seed=3, batch_size=1)
    assert alone == sampled  # each prompt draws from its own seed: the batch it shares does not matter
    assert engine.generate(texts, max_new_tokens=8, do_sample=True, temperature=2.0, seed=4) != sampled
    assert engine.generate(texts, max_new_tokens=8, do_sample=True, temperature=2.0, seed=3) == sampled
    assert engine.generate(texts, max_new_tokens=8, do_sample=True, top_k=1, seed=9) == greedy
    with pytest.raises(LmadaptError, match="encoder-decoder"):
        engine.sequence([1, 2], engine.decoding())


def test_seq2seq_beam_search_matches_unpadded_generate_and_penalty_changes_output(t5_dir):
    from lmadapt.infer.engine import load_engine

    engine = load_engine(str(t5_dir), dtype="float32")
    texts = ["the cat", "hello how are you today? I am", "paris"]
    beams = engine.generate(texts, max_new_tokens=6, num_beams=3, batch_size=3)  # padded batch
    for text, got in zip(texts, beams, strict=True):
        ids = torch.tensor([engine.encode(text)])
        with torch.no_grad():  # the best beam of an unpadded, one-prompt beam search
            direct = engine.model.generate(
                ids, attention_mask=torch.ones_like(ids), num_beams=3, max_new_tokens=6, do_sample=False,
                eos_token_id=engine.eos_ids,
            )  # fmt: skip
        assert got == engine.tokenizer.decode(direct[0, 1:], skip_special_tokens=True)
    greedy = engine.generate(texts, max_new_tokens=16)
    penalised = engine.generate(texts, max_new_tokens=16, repetition_penalty=5.0)
    assert penalised != greedy


def test_stop_string_cuts_a_trained_answer(full_run):
    from lmadapt.infer.engine import load_engine

    engine = load_engine(str(full_run), dtype="float32")
    answer = engine.generate(PROMPTS[2:3], max_new_tokens=12)[0]
    assert answer == "hello how are you today?"
    assert engine.generate(PROMPTS[2:3], max_new_tokens=12, stop=[" are"]) == ["hello how"]
    assert engine.generate(PROMPTS[2:3], max_new_tokens=12, stop=["?", "how"]) == ["hello "]


# --- span corruption: the noise maths -------------------------------------------------------------------
def test_noise_mask_density_span_length_and_shape():
    gen = torch.Generator().manual_seed(0)
    for length in (20, 63, 100, 511):
        noise, spans = noise_counts(length, 0.15, 3.0)
        assert noise == round(length * 0.15) and spans == max(1, round(noise / 3.0))
        for _ in range(20):
            mask = random_spans_noise_mask(length, 0.15, 3.0, gen)
            assert len(mask) == length and sum(mask) == noise
            runs = [r for r in _runs(mask) if r[0]]
            assert len(runs) == spans and all(n >= 1 for _, n in runs)
            assert not mask[0] and mask[-1]  # kept text first, a dropped span last (T5's layout)
    lengths = [n for _ in range(200) for d, n in _runs(random_spans_noise_mask(200, 0.15, 3.0, gen)) if d]
    assert sum(lengths) / len(lengths) == pytest.approx(3.0, abs=0.05)
    assert len(set(lengths)) > 3  # span lengths vary, they are not all 3
    mask = random_spans_noise_mask(1000, 0.3, 5.0, gen)
    assert sum(mask) == 300 and len([1 for d, _ in _runs(mask) if d]) == 60


def _runs(mask):
    out = []
    for m in mask:
        if out and out[-1][0] == m:
            out[-1][1] += 1
        else:
            out.append([m, 1])
    return out


def test_corrupted_inputs_and_targets_reconstruct_the_original():
    sentinels, eos = [900 + k for k in range(30)], 2
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        ids = [rng.randrange(10, 800) for _ in range(rng.randint(8, 120))]
        mask = random_spans_noise_mask(len(ids), 0.15, 3.0, gen)
        inputs, targets = corrupt_spans(ids, mask, sentinels, eos)
        assert inputs[-1] == eos and targets[-1] == eos
        used_in = [t for t in inputs if t in sentinels]
        used_out = [t for t in targets if t in sentinels]
        spans = sum(1 for d, _ in _runs(mask) if d)
        assert used_in == used_out == sentinels[:spans]  # ordered <extra_id_0>, <extra_id_1>, ...
        assert targets[0] == sentinels[0]  # the targets open with the first sentinel
        assert len(inputs) == len(ids) - sum(mask) + spans + 1
        # put each dropped span back in place of its sentinel
        dropped, current = {}, None
        for t in targets[:-1]:
            if t in sentinels:
                current = t
                dropped[t] = []
            else:
                dropped[current].append(t)
        rebuilt = [x for t in inputs[:-1] for x in (dropped[t] if t in sentinels else [t])]
        assert rebuilt == ids


def test_span_corrupter_batches_pad_inputs_and_targets_apart():
    tok = t5_tokenizer()
    sentinels = [tok.convert_tokens_to_ids(s) for s in SENTINELS]
    corrupter = SpanCorrupter(tok, sentinels, seed=0)
    rows = torch.tensor([[10 + k for k in range(40)], [50 + k for k in range(40)]])
    mask = torch.ones_like(rows)
    mask[1, 30:] = 0  # the second row is 30 tokens long
    batch = corrupter.batch(rows, mask)
    assert batch["labels"].shape[1] < batch["input_ids"].shape[1]
    assert int(batch["attention_mask"][1].sum()) == 30 - round(30 * 0.15) + round(round(30 * 0.15) / 3) + 1
    assert (batch["labels"][1] == IGNORE).any() or batch["labels"].shape[1] == int(
        (batch["labels"][1] != IGNORE).sum()
    )
    again = SpanCorrupter(tok, sentinels, seed=0).batch(rows, mask)
    assert all(torch.equal(batch[k], again[k]) for k in batch)  # a seeded corrupter repeats itself
    padded = pad_seq2seq([{"input_ids": [5, 6, 7], "labels": [1]}, {"input_ids": [5], "labels": [1, 2]}], 0)
    assert padded["labels"].tolist() == [[1, IGNORE], [1, 2]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


# --- span corruption: stage pretrain --------------------------------------------------------------------
def corpus_files(tmp: Path) -> dict:
    rng = random.Random(0)
    words = " ".join(SENTENCES).split()
    out = {}
    for name, n in (("train", 80), ("eval", 16)):
        docs = []
        for _ in range(n):
            start = rng.randrange(len(SENTENCES))
            docs.append(" ".join(SENTENCES[(start + k) % len(SENTENCES)] for k in range(2)))
        out[name] = str(write_jsonl(tmp / f"{name}.jsonl", [{"text": d} for d in docs]))
    assert words
    return out


def pretrain_recipe(tmp: Path, model: str, objective: str = "span_corruption", method=None, **train):
    return {
        "model": model,
        "task": {"type": "lm", "objective": objective},
        "data": corpus_files(tmp) | {"test": None},
        "method": method or {"type": "full"},
        "stage": "pretrain",
        "train": {"max_steps": 40, "lr": 5e-3, "batch_size": 8, "max_length": 32, "seed": 0}
        | {"num_threads": 1, "logging_steps": 10}
        | train,
        "eval": {"every": "no"},
        "output": str(tmp / "run"),
    }


def test_span_corruption_pretrain_lowers_held_out_loss_and_saves_a_t5(tmp_path, t5_dir):
    from transformers import AutoModelForSeq2SeqLM

    from lmadapt.stages import run_stage

    run_dir = run_stage(parse_recipe(pretrain_recipe(tmp_path, str(t5_dir))))
    final = json.loads((run_dir / "metrics.json").read_text())["final"]["eval"]
    assert final["span_loss"] < 0.7 * final["span_loss_before"]
    assert final["span_accuracy"] > final["span_accuracy_before"]
    model = AutoModelForSeq2SeqLM.from_pretrained(run_dir / "model")
    assert model.config.is_encoder_decoder
    assert "span_corruption" in (run_dir / "log.txt").read_text()


def test_span_corruption_with_lora_runs_and_merges(tmp_path, t5_dir):
    from transformers import AutoModelForSeq2SeqLM

    from lmadapt.stages import run_stage

    method = {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target": ["q", "v"]}
    run_dir = run_stage(parse_recipe(pretrain_recipe(tmp_path, str(t5_dir), method=method, max_steps=10)))
    base = AutoModelForSeq2SeqLM.from_pretrained(t5_dir)
    merged = AutoModelForSeq2SeqLM.from_pretrained(run_dir / "model")
    assert not (run_dir / "model" / "adapter_config.json").exists()
    q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert not torch.equal(base.state_dict()[q], merged.state_dict()[q])  # LoRA merged into q


def test_span_corruption_config_is_strict():
    task = parse_recipe({"model": "x", "task": {"type": "lm", "objective": "span_corruption"}}).task
    assert (task.noise_density, task.mean_span_length) == (0.15, 3.0)
    with pytest.raises(RecipeError, match="objective"):
        parse_recipe({"model": "x", "task": {"type": "lm", "objective": "span-corruption"}})
    with pytest.raises(RecipeError, match="noise_density"):
        parse_recipe(
            {"model": "x", "task": {"type": "lm", "objective": "span_corruption", "noise_density": 1.5}}
        )


@pytest.mark.parametrize(
    ("kind", "objective", "message"),
    [
        ("llama", "span_corruption", "not an encoder-decoder"),
        ("bert", "span_corruption", "not an encoder-decoder"),
        ("t5", "clm", "pretrain it with objective span_corruption"),
        ("t5", "mlm", "pretrain it with objective span_corruption"),
    ],
)
def test_objective_and_model_mismatch_is_a_clear_error_with_exit_2(
    tmp_path, t5_dir, kind, objective, message
):
    from typer.testing import CliRunner

    from lmadapt.cli import app

    if kind == "llama":
        model = str(save_tiny(tmp_path / "llama"))
    elif kind == "bert":
        from transformers import BertConfig, BertModel, BertTokenizerFast

        model = str(tmp_path / "bert")
        tok = BertTokenizerFast(
            vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])}
        )
        BertModel(BertConfig(vocab_size=6, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32)).save_pretrained(model)  # fmt: skip
        tok.save_pretrained(model)
    else:
        model = str(t5_dir)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(pretrain_recipe(tmp_path, model, objective)))
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "run").exists()


def test_seq2seq_with_an_unsupported_method_is_a_clear_error(tmp_path, t5_dir):
    from lmadapt.stages.sft import run

    recipe = sft_recipe(tmp_path, t5_dir, {"type": "freeze", "unfreeze_top": 1}, "freeze")
    with pytest.raises(RecipeError, match=r"seq2seq_lm.*full, lora"):
        run(recipe)
    assert not (tmp_path / "freeze").exists()


def test_generate_task_on_t5_is_scored_during_and_after_training(tmp_path, t5_dir):
    from lmadapt.stages.sft import run

    rows = [{"id": str(k), "title": t, "label": lab}
            for k, (t, lab) in enumerate([("human cell", "Humans"), ("mouse protein", "Animals")] * 4)]  # fmt: skip
    data = write_jsonl(tmp_path / "mesh.jsonl", rows)
    task = {
        "type": "generate", "instruction": "human or animal?", "text": ["title"], "metric": "label_f1",
        "labels": ["yes", "no"], "label_map": {"Humans": "yes", "Animals": "no"}, "id": "id",
        "max_new_tokens": 4, "template": "plain",
    }  # fmt: skip
    recipe = sft_recipe(tmp_path, t5_dir, {"type": "full"}, "gen", epochs=20, lr=3e-3)
    recipe = parse_recipe(
        recipe.model_dump(mode="json", exclude_none=True)
        | {
            "task": task,
            "data": {"train": str(data), "eval": str(data), "test": str(data)},
            "eval": {"every": 10},
        }
    )
    run_dir = run(recipe)
    saved = json.loads((run_dir / "metrics.json").read_text())
    during = [h for h in saved["history"] if h["split"] == "eval" and "unparseable_rate" in h]
    assert len(during) >= 2
    assert saved["final"]["test"]["accuracy"] == 1.0
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert {p["prediction"] for p in preds} == {"yes", "no"}


def test_prompt_stage_zero_and_few_shot_generate_with_a_t5(tmp_path, t5_dir):
    from lmadapt.stages import run_stage

    records = [{"id": i, "text": t, "label": lab}
               for i, (t, lab) in enumerate([("great movie", "pos"), ("bad plot", "neg")] * 2)]  # fmt: skip
    data = write_jsonl(tmp_path / "data.jsonl", records)
    for mode, k in (("zero_shot", 0), ("few_shot", 1)):
        raw = {
            "model": str(t5_dir), "task": {"type": "classify", "text": ["text"]},
            "data": {"train": str(data), "eval": None, "test": str(data)}, "stage": "prompt",
            "prompt": {"mode": mode, "k": k, "max_new_tokens": 4}, "train": {"max_length": 64},
            "output": str(tmp_path / mode),
        }  # fmt: skip
        run_dir = run_stage(parse_recipe(raw))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert {"accuracy", "f1_macro"} <= set(metrics["final"]["test"])
        preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
        assert len(preds) == len(records) and all("answer" in p for p in preds)
    raw |= {
        "prompt": {"mode": "verbalizer", "template": "review : {text} . it is {mask}"},
        "output": str(tmp_path / "v"),
    }
    with pytest.raises(RecipeError, match=r"encoder-decoder \(t5\) model, which has no next-token"):
        run_stage(parse_recipe(raw))


def test_seq2seq_examples_prompt_to_the_encoder_answer_to_the_labels_each_fitted():
    from lmadapt.stages.sft import prepare_examples

    tok = t5_tokenizer()
    task = parse_recipe({"model": "x", "task": {"type": "sft", "template": "plain"}}).task
    long_input = "the cat sat on the mat and the dog sat on the log " * 3
    chat = [("hello", "hi"), ("count to three", "one two three")]
    splits = {
        "train": [{"instruction": "greet me", "input": long_input, "output": "hello how are you today?"}],
        "eval": [{"messages": [{"role": r, "content": c} for u, a in chat for r, c in (("user", u), ("assistant", a))]}],
        "test": [{"instruction": "say", "input": "", "output": "one two three four five six seven eight nine ten " * 4}],
    }  # fmt: skip
    splits, features, counts = prepare_examples(splits, task, tok, "plain", 32, seq2seq=True)
    (train,), (chat_example,), (test,) = features["train"], features["eval"], features["test"]
    assert counts["train"]["cut"] == 1 and len(train["input_ids"]) <= 32  # the input field was cut to fit
    assert splits["train"][0]["input"] and len(splits["train"][0]["input"]) < len(long_input)
    assert tok.decode(train["labels"], skip_special_tokens=True) == "hello how are you today?"
    assert train["labels"][-1] == tok.eos_token_id and train["input_ids"][-1] == tok.eos_token_id
    prompt = tok.decode(chat_example["input_ids"], skip_special_tokens=True)
    assert prompt == "User: hello\nAssistant: hi\nUser: count to three\nAssistant: "  # earlier turns included
    assert tok.decode(chat_example["labels"], skip_special_tokens=True) == "one two three"
    assert len(test["labels"]) == 32 and counts["test"]["too_long"] == 1  # an sft answer is cut at max_length
    generate = parse_recipe(
        {"model": "x", "task": {"type": "generate", "instruction": "say", "text": ["t"], "target": "y"}}
    ).task
    _, built, _ = prepare_examples(
        {"train": [{"t": "a", "y": "b"}], "eval": [{"t": "a", "y": "one two three four five six seven eight nine ten " * 4}], "test": []},
        generate, tok, "plain", 32, seq2seq=True,
    )  # fmt: skip
    assert len(built["train"]) == 1 and built["eval"] == []  # a generate answer is learnt whole or not at all
