"""Stage pretrain on tiny random models: masking statistics, NSP pairs, CLM blocks, raw-text readers, and
runs end to end (saved models load in plain transformers; the adapted encoder feeds stage finetune)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertForPreTraining,
    BertModel,
    BertTokenizerFast,
)

from lmadapt.config import parse_recipe
from lmadapt.data.corpus import (
    OTHER_DOC,
    SAME_DOC,
    clm_blocks,
    mlm_blocks,
    nsp_pairs,
    read_documents,
    split_sentences,
    tokenize_documents,
)
from lmadapt.errors import DataError, RecipeError
from lmadapt.stages import run_stage
from lmadapt.training.pretraining import (
    IGNORE,
    LmCollator,
    Masker,
    masked_head,
    selected_mlm_logits,
)
from lmadapt.utils.io import write_jsonl
from tiny_lm import save_tiny

WORDS = [f"w{i}" for i in range(400)] + ["play", "##ing", "##ed", "un", "##do"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."]


def bert_tokenizer():
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(SPECIALS + WORDS)})


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny random *BertModel* (no MLM/NSP head, like minilm-l6) + WordPiece tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-bert-encoder")
    tokenizer = bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("tiny-llama")))


def corpus(n_docs: int, seed: int, sentences=(3, 6)) -> list[str]:
    """Documents of numbered sentences drawn from a small vocabulary, so the model can learn something."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        topic = rng.randrange(0, 380, 20)  # each document keeps to 20 words: predictable in context
        sents = [
            " ".join(f"w{topic + rng.randrange(20)}" for _ in range(rng.randint(4, 9))).capitalize() + "."
            for _ in range(rng.randint(*sentences))
        ]
        docs.append(" ".join(sents))
    return docs


def write_corpus(tmp_path, n_train=120, n_eval=30) -> dict:
    out = {}
    for name, n, seed in (("train", n_train, 0), ("eval", n_eval, 1)):
        path = tmp_path / f"{name}.jsonl"
        write_jsonl(
            path, [{"id": i, "title": f"W{i % 7} w1.", "body": d} for i, d in enumerate(corpus(n, seed))]
        )
        out[name] = str(path)
    return out


def recipe(tmp_path, model, task: dict, data: dict, method=None, output="run", **train):
    return parse_recipe(
        {
            "model": model,
            "task": {"type": "lm", "text": ["title", "body"]} | task,
            "data": data | {"test": None},
            "method": method or {"type": "full"},
            "stage": "pretrain",
            "train": {"max_steps": 30, "lr": 3e-3, "batch_size": 8, "max_length": 32, "seed": 0}
            | {"num_threads": 1, "logging_steps": 5}
            | train,
            "eval": {"every": "no"},
            "output": str(tmp_path / output),
        }
    )


# --- masking ----------------------------------------------------------------------------------------------
def random_rows(tokenizer, n_rows=400, width=64, seed=0):
    """[CLS] ... [SEP] rows of random word tokens, some padded: features for the collator."""
    rng = random.Random(seed)
    first = len(SPECIALS)
    rows = []
    for _ in range(n_rows):
        length = rng.randint(width // 2, width - 2)
        ids = [tokenizer.cls_token_id, *(rng.randrange(first, len(tokenizer)) for _ in range(length))]
        rows.append({"input_ids": [*ids, tokenizer.sep_token_id]})
    return rows


def masking_counts(tokenizer, batch_in, batch_out):
    original, masked, labels = batch_in["input_ids"], batch_out["input_ids"], batch_out["labels"]
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    chosen = labels != IGNORE
    return original, masked, labels, special, chosen


@pytest.mark.parametrize("split", [(0.8, 0.1), (0.5, 0.3)])
def test_mlm_masking_rate_and_replacement_split(split):
    tokenizer = bert_tokenizer()
    mask_p, random_p = split
    features = random_rows(tokenizer)
    plain = LmCollator(tokenizer)(features)
    torch.manual_seed(1)
    masked, labels = Masker(tokenizer, 0.15, mask_p, random_p)(plain["input_ids"])
    out = {"input_ids": masked, "labels": labels}
    original, masked, labels, special, chosen = masking_counts(tokenizer, plain, out)
    eligible = (~special).sum().item()
    assert eligible > 15_000
    assert abs(chosen.sum().item() / eligible - 0.15) < 0.01
    assert not (chosen & special).any()  # special and padding tokens are never chosen
    assert torch.equal(masked[special], original[special])
    assert torch.equal(labels[chosen], original[chosen])  # a label only where chosen: the original token
    assert not (masked[~chosen] != original[~chosen]).any()  # nothing else changes
    n = chosen.sum().item()
    to_mask = (masked[chosen] == tokenizer.mask_token_id).sum().item() / n
    kept = (masked[chosen] == original[chosen]).sum().item() / n
    randomised = 1 - to_mask - kept
    assert abs(to_mask - mask_p) < 0.03
    assert abs(randomised - random_p) < 0.03
    assert abs(kept - (1 - mask_p - random_p)) < 0.03


def test_whole_word_masking_takes_every_piece_of_a_word():
    tokenizer = bert_tokenizer()
    rng = random.Random(0)
    texts = [
        " ".join(rng.choice(["playing", "played", "undo", *WORDS[:50]]) for _ in range(40))
        for _ in range(300)
    ]
    docs = tokenize_documents(texts, tokenizer)
    features = mlm_blocks(docs, tokenizer.cls_token_id, tokenizer.sep_token_id, 48, pack=True)
    assert any(tokenizer.convert_ids_to_tokens(f["input_ids"]).count("##ing") for f in features)
    torch.manual_seed(0)
    padded = LmCollator(tokenizer)(features)
    masked, labels = Masker(tokenizer, 0.15, 0.8, 0.1, whole_word=True)(
        padded["input_ids"], padded["word_start"]
    )
    batch = {"input_ids": masked, "labels": labels}
    chosen = batch["labels"] != IGNORE
    starts = torch.tensor([f["word_start"] for f in features])
    ids = torch.tensor([f["input_ids"] for f in features])
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    words = torch.cumsum(starts, 1)
    for row in range(len(features)):
        for word in set(words[row][chosen[row]].tolist()):
            assert chosen[row][(words[row] == word) & ~special[row]].all(), "a chosen word is chosen whole"
    assert abs(chosen.sum().item() / (~special).sum().item() - 0.15) < 0.015
    n = chosen.sum().item()
    assert abs((batch["input_ids"][chosen] == tokenizer.mask_token_id).sum().item() / n - 0.8) < 0.04
    assert abs((batch["input_ids"][chosen] == ids[chosen]).sum().item() / n - 0.1) < 0.04


def test_selected_mlm_logits_give_the_models_own_loss(tiny_bert):
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()
    torch.manual_seed(0)
    batch = LmCollator(tokenizer)(random_rows(tokenizer, 8, 24))
    batch["input_ids"], labels = Masker(tokenizer, 0.3)(batch["input_ids"])
    with torch.no_grad():
        full = model(**batch, labels=labels).loss
        keep = labels != IGNORE
        mine = torch.nn.functional.cross_entropy(
            selected_mlm_logits(masked_head(model), batch, keep), labels[keep]
        )
    assert torch.allclose(full, mine, atol=1e-5)


# --- NSP pairs ----------------------------------------------------------------------------------------------
def sentence_docs(n_docs=40, seed=0):
    """Tokenized sentences whose single token names (document, sentence): w{d}{s} style unique ids."""
    rng = random.Random(seed)
    docs, token = [], 0
    for _ in range(n_docs):
        sents = []
        for _ in range(rng.randint(1, 7)):
            sents.append({"input_ids": [100 + token, 100 + token], "word_start": [1, 1]})
            token += 1
        docs.append(sents)
    return docs


def test_nsp_pairs_are_balanced_and_random_b_is_from_another_document():
    docs = sentence_docs()
    where = {s["input_ids"][0]: (d, i) for d, sents in enumerate(docs) for i, s in enumerate(sents)}
    pairs = nsp_pairs(docs, 2, 3, 16, classes=2, seed=0)
    anchors = sum(len(s) - 1 for s in docs if len(s) >= 2)
    assert len(pairs) == anchors
    labels = [p["next_sentence_label"] for p in pairs]
    assert abs(labels.count(0) - labels.count(1)) <= 1
    for p in pairs:
        ids, types = p["input_ids"], p["token_type_ids"]
        assert ids[0] == 2 and ids[3] == 3 and ids[-1] == 3  # [CLS] A A [SEP] B B [SEP]
        assert types == [0, 0, 0, 0, 1, 1, 1]
        (da, ia), (db, ib) = where[ids[1]], where[ids[4]]
        assert p["docs"] == [da, db]
        if p["next_sentence_label"] == 0:
            assert (db, ib) == (da, ia + 1)
        else:
            assert db != da  # never the same document
    assert nsp_pairs(docs, 2, 3, 16, seed=0) == pairs  # deterministic
    assert nsp_pairs(docs, 2, 3, 16, seed=1) != pairs


def test_nsp_three_way_labels():
    docs = sentence_docs(60)
    where = {s["input_ids"][0]: (d, i) for d, sents in enumerate(docs) for i, s in enumerate(sents)}
    pairs = nsp_pairs(docs, 2, 3, 16, classes=3, seed=0)
    labels = [p["next_sentence_label"] for p in pairs]
    assert max(labels.count(k) for k in range(3)) - min(labels.count(k) for k in range(3)) <= 1
    for p in pairs:
        (da, ia), (db, ib) = where[p["input_ids"][1]], where[p["input_ids"][4]]
        assert len(docs[da]) >= 3
        if p["next_sentence_label"] == 0:
            assert (db, ib) == (da, ia + 1)
        elif p["next_sentence_label"] == SAME_DOC:
            assert db == da and ib not in (ia, ia + 1)
        else:
            assert p["next_sentence_label"] == OTHER_DOC and db != da


def test_nsp_pair_is_cut_to_fit():
    a = {"input_ids": list(range(10, 30)), "word_start": [1] * 20}
    b = {"input_ids": list(range(40, 45)), "word_start": [1] * 5}
    pairs = nsp_pairs([[a, b], [b, a]], 2, 3, 16, seed=0)
    assert all(len(p["input_ids"]) <= 16 and len(p["token_type_ids"]) == len(p["input_ids"]) for p in pairs)
    assert any(len(p["input_ids"]) == 16 for p in pairs)  # a pair with the 20-token sentence is cut to fit


def test_split_sentences():
    text = "Cells grew (n = 4). The rate was 2.5 per day! Did it? Yes.\nA new line"
    assert split_sentences(text) == [
        "Cells grew (n = 4).",
        "The rate was 2.5 per day!",
        "Did it?",
        "Yes.",
        "A new line",
    ]


# --- CLM blocks ---------------------------------------------------------------------------------------------
def test_clm_blocks_have_no_padding_and_the_next_token_as_target(tiny_llama_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    texts = ["the cat sat on the mat", "hello how are you today", "one two three four five six seven"] * 5
    docs = tokenize_documents(texts, tokenizer)
    blocks = clm_blocks(docs, tokenizer.eos_token_id, 16)
    stream = [t for d in docs for t in (*d["input_ids"], tokenizer.eos_token_id)]
    assert all(len(b["input_ids"]) == 16 for b in blocks)
    assert tokenizer.pad_token_id not in {t for b in blocks for t in b["input_ids"]}
    assert [t for b in blocks for t in b["input_ids"]] == stream[: 16 * len(blocks)]
    assert len(stream) - 16 * len(blocks) < 16  # only the last partial block is dropped
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    batch = LmCollator(tokenizer)(blocks[:3])
    assert (batch["labels"] != IGNORE).all()  # loss on every token
    with torch.no_grad():
        out = model(**batch)
    targets = batch["input_ids"][:, 1:]  # the label of each position is the next token
    manual = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), targets.reshape(-1)
    )
    assert torch.allclose(out.loss, manual, atol=1e-5)
    unpacked = clm_blocks(docs[:2], tokenizer.eos_token_id, 16, pack=False)
    assert [b["input_ids"] for b in unpacked] == [
        (d["input_ids"] + [tokenizer.eos_token_id])[:16] for d in docs[:2]
    ]
    with pytest.raises(DataError, match="fewer than one block"):
        clm_blocks(docs[:1], tokenizer.eos_token_id, 500)


# --- readers ------------------------------------------------------------------------------------------------
def test_read_documents_from_txt_jsonl_and_csv(tmp_path):
    txt = tmp_path / "corpus.txt"
    txt.write_text("First doc line one.\nline two.\n\n  \nSecond doc.\n\n\nThird doc.\n", encoding="utf-8")
    assert read_documents(None, str(txt)) == ["First doc line one.\nline two.", "Second doc.", "Third doc."]
    assert read_documents(None, str(txt), documents="line") == [
        "First doc line one.", "line two.", "Second doc.", "Third doc.",
    ]  # fmt: skip
    assert read_documents(None, str(txt), limit=2, seed=0) == read_documents(None, str(txt), limit=2, seed=0)
    jsonl = tmp_path / "docs.jsonl"
    write_jsonl(jsonl, [{"title": "T1", "abstract": "A1"}, {"title": "T2", "abstract": "A2"}])
    assert read_documents(None, str(jsonl), ["title", "abstract"]) == ["T1\nA1", "T2\nA2"]
    csv = tmp_path / "docs.csv"
    csv.write_text("text\nhello there\n", encoding="utf-8")
    assert read_documents(None, str(csv)) == ["hello there"]
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.txt: no text"):
        read_documents(None, str(tmp_path / "empty.txt"))
    write_jsonl(tmp_path / "bad.jsonl", [{"title": "T"}, {"abstract": "A"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: .*abstract"):
        read_documents(None, str(tmp_path / "bad.jsonl"), ["title", "abstract"])


# --- end to end -----------------------------------------------------------------------------------------------
def test_mlm_pretrain_then_finetune_from_the_adapted_encoder(tmp_path, tiny_bert):
    from lmadapt.tasks import build_model, get_task

    data = write_corpus(tmp_path)
    task = {"objective": "mlm", "pseudo_perplexity_examples": 3}
    run = run_stage(recipe(tmp_path, tiny_bert, task, data, max_steps=60, lr=1e-2))
    metrics = json.loads((run / "metrics.json").read_text())["final"]["eval"]
    assert metrics["mlm_loss"] < metrics["mlm_loss_before"] - 0.5
    assert metrics["pseudo_perplexity"] < metrics["pseudo_perplexity_before"]
    assert metrics["mlm_accuracy"] > metrics["mlm_accuracy_before"]
    log = (run / "log.txt").read_text()
    assert "start freshly initialised" in log and "cls.predictions.transform.dense.weight" in log
    AutoModelForMaskedLM.from_pretrained(run / "model")  # plain transformers loads it
    saved = load_file(str(run / "model" / "model.safetensors"))
    original = load_file(f"{tiny_bert}/model.safetensors")
    assert torch.equal(saved["bert.pooler.dense.weight"], original["pooler.dense.weight"])  # carried over
    classify = parse_recipe(
        {
            "model": str(run / "model"),
            "task": {"type": "classify", "text": "text", "label": "label", "labels": ["a", "b"]},
            "data": {"train": data["train"]},
            "output": str(tmp_path / "ft"),
        }
    )
    task = get_task(classify.task)
    adapted, _ = build_model(classify.model, task)
    base, _ = build_model(parse_recipe(classify.model_dump() | {"model": tiny_bert}).model, task)
    a, b = adapted.state_dict(), base.state_dict()
    assert not torch.equal(
        a["bert.encoder.layer.0.attention.self.query.weight"],
        b["bert.encoder.layer.0.attention.self.query.weight"],
    )
    assert torch.equal(a["bert.pooler.dense.weight"], b["bert.pooler.dense.weight"])


def fresh_pretraining_model(folder: str, seed: int = 0):
    torch.manual_seed(seed)  # as the stage loads it: the fresh heads from the recipe's seed
    return BertForPreTraining.from_pretrained(folder)


def test_mlm_nsp_trains_both_heads_and_loads_in_bert_for_pretraining(tmp_path, tiny_bert):
    data = write_corpus(tmp_path)
    task = {"objective": "mlm+nsp", "pseudo_perplexity_examples": 0}
    run = run_stage(recipe(tmp_path, tiny_bert, task, data))
    metrics = json.loads((run / "metrics.json").read_text())["final"]["eval"]
    assert metrics["mlm_loss"] < metrics["mlm_loss_before"] - 0.2
    assert {"nsp_accuracy", "nsp_loss", "nsp_accuracy_before", "nsp_loss_before"} <= set(metrics)
    trained, fresh = BertForPreTraining.from_pretrained(run / "model"), fresh_pretraining_model(tiny_bert)
    for name in ("cls.seq_relationship.weight", "cls.predictions.transform.dense.weight"):  # both heads train
        assert not torch.equal(trained.state_dict()[name], fresh.state_dict()[name])
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert history[0]["loss"] > metrics["mlm_loss_before"] + 0.5  # the loss adds the NSP term (~ln 2)


def test_nsp_three_classes_and_lora(tmp_path, tiny_bert):
    data = write_corpus(tmp_path)
    method = {"type": "lora", "r": 4, "alpha": 8, "target": ["query", "value"]}
    run = run_stage(recipe(tmp_path, tiny_bert, {"objective": "nsp", "nsp_classes": 3}, data, method))
    metrics = json.loads((run / "metrics.json").read_text())["final"]["eval"]
    assert set(metrics) == {"nsp_accuracy", "nsp_loss", "nsp_accuracy_before", "nsp_loss_before"}
    saved = load_file(str(run / "model" / "model.safetensors"))
    assert saved["cls.seq_relationship.weight"].shape[0] == 3
    assert not any("lora" in k for k in saved)  # merged into the base weights


def test_freeze_trains_only_the_top_layer_and_the_fresh_head(tmp_path, tiny_bert):
    data = write_corpus(tmp_path)
    method = {"type": "freeze", "unfreeze_top": 1}
    run = run_stage(
        recipe(tmp_path, tiny_bert, {"objective": "mlm", "pseudo_perplexity_examples": 0}, data, method)
    )
    saved = load_file(str(run / "model" / "model.safetensors"))
    original = load_file(f"{tiny_bert}/model.safetensors")
    assert torch.equal(
        saved["bert.encoder.layer.0.output.dense.weight"], original["encoder.layer.0.output.dense.weight"]
    )
    assert not torch.equal(
        saved["bert.encoder.layer.1.output.dense.weight"], original["encoder.layer.1.output.dense.weight"]
    )
    assert "cls.predictions.transform.dense.weight" in saved


def test_clm_lora_reports_perplexity_and_loads_as_causal_lm(tmp_path, tiny_llama_dir):
    docs = [" ".join(["the cat sat on the mat"] * 3), "hello how are you today? I am fine, thank you"] * 30
    for name in ("train", "eval"):
        (tmp_path / f"{name}.txt").write_text("\n\n".join(docs), encoding="utf-8")
    data = {"train": str(tmp_path / "train.txt"), "eval": str(tmp_path / "eval.txt")}
    method = {"type": "lora", "r": 4, "alpha": 8, "target": "all-linear"}
    run = run_stage(
        recipe(tmp_path, tiny_llama_dir, {"objective": "clm", "text": ["text"]}, data, method, lr=1e-2)
    )
    metrics = json.loads((run / "metrics.json").read_text())["final"]["eval"]
    assert metrics["perplexity"] < metrics["perplexity_before"] / 2
    assert abs(metrics["perplexity"] - 2.718281828 ** metrics["loss"]) < 0.01 * metrics["perplexity"]
    AutoModelForCausalLM.from_pretrained(run / "model")


def test_bad_recipes_are_recipe_errors(tmp_path, tiny_bert, tiny_llama_dir):
    data = write_corpus(tmp_path, 10, 4)
    with pytest.raises(Exception, match="at most 1"):
        recipe(
            tmp_path,
            tiny_bert,
            {"objective": "mlm", "mask_replace_prob": 0.9, "random_replace_prob": 0.2},
            data,
        )
    with pytest.raises(RecipeError, match="has no cls_token, sep_token, mask_token"):
        run_stage(recipe(tmp_path, tiny_llama_dir, {"objective": "mlm"}, data))
    with pytest.raises(RecipeError, match="type: lm"):
        run_stage(
            parse_recipe(
                {
                    "model": tiny_bert,
                    "task": {"type": "classify"},
                    "stage": "pretrain",
                    "data": data,
                    "output": str(tmp_path / "x"),
                }
            )
        )
    lora = {"type": "lora", "target": ["query", "value"]}
    with pytest.raises(RecipeError, match="save_every with method lora"):
        run_stage(recipe(tmp_path, tiny_bert, {"objective": "mlm"}, data, lora, save_every=5))
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.incomplete").exists()


def test_text_the_vocabulary_does_not_cover_is_an_error_or_a_warning(tmp_path, tiny_bert):
    """Masked LM on text that is all [UNK] would train on nothing (loss 0): it stops; partly covered text
    trains, and the log says how much of it the tokenizer does not know."""
    unknown = tmp_path / "zh.jsonl"
    write_jsonl(unknown, [{"title": "医学", "body": "这篇论文是关于医学的。"}] * 12)
    with pytest.raises(DataError, match=r"every token .* special or unknown \(\[UNK\]\).*nothing to mask"):
        run_stage(recipe(tmp_path, tiny_bert, {"objective": "mlm"}, {"train": str(unknown), "eval": None}))
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.incomplete").exists()
    mixed = tmp_path / "mixed.jsonl"
    write_jsonl(mixed, [{"title": "W1 w2.", "body": "W3 w4 w5 医学 w6."}] * 12)  # 2 [UNK] (医, 学) of 10
    run = run_stage(recipe(tmp_path, tiny_bert, {"objective": "mlm"}, {"train": str(mixed), "eval": None},
                           max_steps=2))  # fmt: skip
    assert "warning: 20% of the training tokens are unknown to the tokenizer" in (run / "log.txt").read_text()


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, tiny_bert):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 13:
                raise RuntimeError("killed")

    data = write_corpus(tmp_path)
    task = {"objective": "mlm", "whole_word": True, "pseudo_perplexity_examples": 0}
    whole = run_stage(recipe(tmp_path, tiny_bert, task, data, output="whole", max_steps=20, save_every=5))
    crashed = recipe(tmp_path, tiny_bert, task, data, output="resumed", max_steps=20, save_every=5)
    with pytest.raises(RuntimeError, match="killed"):
        from lmadapt.stages.pretrain import run as pretrain

        pretrain(crashed, callbacks=[Crash()])
    assert (tmp_path / ".resumed.incomplete" / "checkpoints" / "checkpoint-10").is_dir()
    resumed = run_stage(crashed, resume=True)
    assert "resuming from checkpoint-10" in (resumed / "log.txt").read_text()
    a = load_file(str(whole / "model" / "model.safetensors"))
    b = load_file(str(resumed / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
