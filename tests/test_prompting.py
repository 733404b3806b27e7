"""Prompting on tiny random models: verbalizer scores equal a hand computation; calibration; answers."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    BertConfig,
    BertTokenizerFast,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from lmadapt.prompting.text import fill, fit_record, match_label
from lmadapt.prompting.verbalizer import Verbalizer, calibrate

TEXT_WORDS = "the movie was great good fine terrible bad awful plot actors very not it is review answer"
WORDS = [*TEXT_WORDS.split(), ":", ".", ",", "a"]


@pytest.fixture(scope="module")
def bert():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s"]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.5,
    )
    return AutoModelForMaskedLM.from_config(cfg).eval(), tok


@pytest.fixture(scope="module")
def llama():
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", *WORDS])}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
        initializer_range=0.5,
    )
    return AutoModelForCausalLM.from_config(cfg).eval(), tok


MAPPING = {"pos": ["great", "good"], "neg": ["terrible", "bad", "awful"]}
PROMPTS = ["the movie was great . it is {mask} .", "the plot was bad , actors awful . it is {mask} ."]


def by_hand(probs_per_prompt: list[dict[str, float]], how: str) -> torch.Tensor:
    """Label probabilities from word probabilities: aggregate, then normalise over the labels."""
    rows = []
    for probs in probs_per_prompt:
        scores = []
        for words in MAPPING.values():
            p = torch.tensor([probs[w] for w in words], dtype=torch.float64)
            scores.append(torch.log(p.sum()) if how == "logsumexp" else torch.log(p).mean())
        rows.append(torch.softmax(torch.stack(scores), dim=0))
    return torch.stack(rows).float()


@pytest.mark.parametrize("how", ["logsumexp", "mean"])
def test_masked_verbalizer_matches_hand_computation(bert, how):
    model, tok = bert
    verb = Verbalizer(model, tok, MAPPING, kind="masked", aggregate=how)
    expected = []
    for prompt in PROMPTS:
        text = prompt.replace("{mask}", "[MASK]")
        enc = tok(text, return_tensors="pt")
        pos = enc["input_ids"][0].tolist().index(tok.mask_token_id)
        with torch.no_grad():
            p = torch.softmax(model(**enc).logits[0, pos].double(), dim=-1)
        expected.append({w: p[tok.convert_tokens_to_ids(w)].item() for ws in MAPPING.values() for w in ws})
    torch.testing.assert_close(verb.label_probs(PROMPTS), by_hand(expected, how), atol=1e-5, rtol=1e-4)


def test_causal_verbalizer_multi_token_word_matches_hand_computation(llama):
    model, tok = llama
    mapping = {"pos": ["very good", "great"], "neg": ["not good"]}
    verb = Verbalizer(model, tok, mapping, kind="causal", aggregate="logsumexp")
    for prompt, got in zip(PROMPTS, verb.label_probs(PROMPTS), strict=True):
        prefix = prompt.split("{mask}")[0]
        word_p = {}
        for words in mapping.values():
            for w in words:
                ids = tok(prefix + w)["input_ids"]
                n = len(tok(w)["input_ids"])
                with torch.no_grad():
                    logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
                # P(word) = product over its tokens of p(token | everything before it)
                word_p[w] = torch.exp(sum(logp[t - 1, ids[t]] for t in range(len(ids) - n, len(ids)))).item()
        scores = torch.log(torch.tensor([word_p["very good"] + word_p["great"], word_p["not good"]]))
        torch.testing.assert_close(got, torch.softmax(scores, dim=0).float(), atol=1e-5, rtol=1e-4)


def test_calibration_flips_predictions_of_a_biased_model(bert):
    model, tok = bert
    mapping = {"pos": ["great"], "neg": ["bad"], "meh": ["fine"]}
    prompts = [
        f"review : {t} . answer : {{mask}}"
        for t in [
            "the movie was great",
            "the plot was bad",
            "actors awful",
            "it is fine",
            "not good",
            "very bad movie",
            "a great plot",
            "the actors were terrible",
        ]
    ]
    scores = Verbalizer(model, tok, mapping, kind="masked").label_scores(prompts)
    # Bias the head towards "great" just enough that the model says "pos" whatever the input.
    bias = (scores[:, 1:].max(dim=1).values - scores[:, 0]).max().item() + 0.5
    biased = AutoModelForMaskedLM.from_config(model.config).eval()
    biased.load_state_dict(model.state_dict())
    with torch.no_grad():
        biased.get_output_embeddings().bias[tok.convert_tokens_to_ids("great")] += bias
    verb = Verbalizer(biased, tok, mapping, kind="masked")
    content_free = [f"review : {t} . answer : {{mask}}" for t in ["N/A", "", "[MASK]"]]
    raw = verb.predict(prompts)
    calibrated = verb.predict(prompts, content_free=content_free)
    assert set(raw) == {"pos"}
    assert set(calibrated) != {"pos"}
    # calibration is exactly p / p_cf renormalised
    p, p_cf = verb.label_probs(prompts), verb.content_free_probs(content_free)
    manual = (p / p_cf) / (p / p_cf).sum(-1, keepdim=True)
    torch.testing.assert_close(calibrate(p, p_cf), manual)


def test_masked_multi_token_word_uses_one_mask_per_token(bert):
    model, tok = bert
    verb = Verbalizer(model, tok, {"pos": ["goods"], "neg": ["bad"]}, kind="masked")  # goods = good ##s
    prompt = "the movie was {mask} ."
    enc = tok("the movie was [MASK] [MASK] .", return_tensors="pt")
    with torch.no_grad():
        logp = torch.log_softmax(model(**enc).logits[0], dim=-1)
    ids = enc["input_ids"][0].tolist()
    first = ids.index(tok.mask_token_id)
    want = logp[first, tok.convert_tokens_to_ids("good")] + logp[first + 1, tok.convert_tokens_to_ids("##s")]
    torch.testing.assert_close(verb.word_log_probs([prompt])[0, 0], want)


def test_fit_record_shortens_long_fields_and_keeps_template(bert):
    _, tok = bert
    template = "review : {text} answer : {mask}"
    values = fit_record(tok, template, {"text": " ".join(["the movie was great"] * 50)}, budget=20)
    filled = fill(template, values)
    assert filled.endswith("answer : {mask}")
    assert len(tok(filled.replace("{mask}", ""), add_special_tokens=False)["input_ids"]) <= 20


def test_match_label_reads_first_label_named():
    assert match_label("The answer is Animals, not humans.", ["Humans", "Animals"]) == "Animals"
    assert match_label("neither", ["pos", "neg"]) is None
    assert match_label("non-spam for sure", ["spam", "non-spam"]) == "non-spam"


def test_similar_selection_puts_the_nearest_demo_last(bert, tmp_path):
    from lmadapt.prompting.fewshot import choose_demos, random_demos

    model, tok = bert
    AutoModelForMaskedLM.from_config(model.config).bert.save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    pool = ["the movie was great", "bad plot", "actors awful", "it is fine", "very good movie"]
    queries = ["bad plot", "it is fine"]
    chosen = choose_demos(pool, queries, 2, "similar", encoder=str(tmp_path / "enc"))
    assert [c[-1] for c in chosen] == [1, 3]  # an identical text is the most similar, and goes last
    assert random_demos(5, 2, 3, seed=7) == random_demos(5, 2, 3, seed=7)
    assert len(set(random_demos(5, 2, 1, seed=7)[0])) == 2


def test_few_shot_and_cot_prompts_hold_demos_then_query():
    from lmadapt.prompting.cot import reasoning_prompt
    from lmadapt.prompting.zeroshot import build_prompt

    template = "Text: {text}"
    p = build_prompt("Classify.", template, {"text": "q"}, [({"text": "d1"}, "pos"), ({"text": "d2"}, "neg")])
    assert p == "Classify.\n\nText: d1\nAnswer: pos\n\nText: d2\nAnswer: neg\n\nText: q\nAnswer:"
    c = reasoning_prompt(
        "Classify.", template, {"text": "q"}, "Let's think step by step.", [({"text": "d"}, "Why.", "neg")]
    )
    assert c.endswith("Q: Classify.\nText: q\nA: Let's think step by step.")
    assert "A: Why. So the answer is neg." in c


@pytest.fixture(scope="module")
def llama_folder(llama, tmp_path_factory):
    model, tok = llama
    path = tmp_path_factory.mktemp("llama")
    tok.eos_token = "<pad>"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("mode", ["zero_shot", "few_shot", "cot", "verbalizer"])
def test_prompt_stage_each_mode_on_a_tiny_causal_lm(llama_folder, tmp_path, mode, monkeypatch):
    import json

    from lmadapt.config import parse_recipe
    from lmadapt.infer.engine import Engine
    from lmadapt.stages import run_stage

    records = [
        {"id": i, "text": t, "label": lab, "why": "it is " + t}
        for i, (t, lab) in enumerate(
            [
                ("the movie was great", "pos"),
                ("bad plot", "neg"),
                ("very good", "pos"),
                ("awful actors", "neg"),
            ]
        )
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    prompt = {
        "mode": mode,
        "max_new_tokens": 4,
        "template": "review : {text} . it is {mask}" if mode == "verbalizer" else None,
    }
    if mode == "cot":
        prompt |= {"k": 1, "rationale": "why"}
    if mode == "verbalizer":
        prompt |= {"calibrate": True}
    raw = {
        "model": str(llama_folder),
        "task": {"type": "classify", "text": ["text"]},
        "data": {
            "train": str(tmp_path / "train.jsonl"),
            "eval": None,
            "test": str(tmp_path / "train.jsonl"),
        },
        "stage": "prompt",
        "prompt": prompt,
        "train": {"max_length": 48},
        "output": str(tmp_path / "run"),
    }
    recipe = parse_recipe(raw)
    run = run_stage(recipe)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["final"]["test"]) >= {"accuracy", "f1_macro"}
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and all(p["prediction"] in {"pos", "neg", ""} for p in preds)
    # Exactly: the word-level vocabulary cannot spell "pos" or "neg", so no answer names a label (unparseable:
    # "", counted wrong), and both verbalizer words are <unk>: equal scores, the tie goes to the first label.
    if mode == "verbalizer":
        assert [p["prediction"] for p in preds] == ["neg"] * 4
        assert all(p["probs"] == [0.5, 0.5] for p in preds)
    else:
        assert [p["prediction"] for p in preds] == [""] * 4 and metrics["final"]["test"]["accuracy"] == 0.0
    example = (run / "prompt_example.txt").read_text()
    if mode == "few_shot":  # 4 demonstrations (the default k) from train, then the query
        assert example.count("Answer:") == 5
    if mode == "verbalizer":  # calibrated probabilities, and the raw ones kept beside them
        assert all(len(p["probs"]) == len(p["probs_uncalibrated"]) == 2 for p in preds)
        assert "accuracy without calibration" in (run / "log.txt").read_text()
    if mode == "cot":
        assert "So the answer is" in example and all("reasoning" in p for p in preds)
    if mode != "verbalizer":  # generation precision: prompt.dtype, auto (bf16 where the CPU has it)
        from lmadapt.infer.loading import inference_dtype

        assert f"generating in {inference_dtype('auto')}" in (run / "log.txt").read_text()
    if mode != "verbalizer":  # a controlled case: scripted answers, parsed into the label each names first
        script = {
            "the movie was great": "pos",
            "bad plot": "It is NEG.",
            "very good": "positive",
            "awful actors": "neg or pos",
        }

        def answer(self, prompts, **options):  # the query: the record text that comes last in the prompt
            texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
            return [script[max(script, key=text.rfind)] for text in texts]

        monkeypatch.setattr(Engine, "generate", answer)
        exact = {"output": str(tmp_path / "scripted"), "prompt": prompt | {"dtype": "float32"}}
        run = run_stage(parse_recipe(raw | exact))
        assert "generating in float32" in (run / "log.txt").read_text()
        preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
        assert [p["prediction"] for p in preds] == ["pos", "neg", "", "neg"]  # "positive" names no label
        assert json.loads((run / "metrics.json").read_text())["final"]["test"]["accuracy"] == 0.75
