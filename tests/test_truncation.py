"""Generate and sft tasks fit their prompts: only input fields are cut (last first, at token boundaries) so that
instruction + input + answer fit train.max_length in the model's tokens; the instruction and the answer never
are. The tiny tokenizer is byte-level BPE with no Chinese merges, so each Chinese character is 3 tokens, as in
a real byte-level BPE's worst case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.config import parse_recipe
from lmadapt.errors import DataError
from lmadapt.stages.sft import fit_report, prepare_examples
from lmadapt.templates import IGNORE, encode_chat, fit_fields
from tiny_lm import save_tiny, tiny_tokenizer

INSTRUCTION = "判断下面这条购物评论的情感倾向，只回答正面或负面："
REVIEW = "这个手机壳质量很好，颜色也漂亮，物流很快，包装完整，客服态度热情，下次还会再来买的。" * 3
GEN_TASK = {
    "type": "generate",
    "instruction": INSTRUCTION,
    "text": ["title", "review"],
    "target": "label",
    "metric": "label_f1",
    "labels": ["正面", "负面"],
    "label_map": {"pos": "正面", "neg": "负面"},
}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def task_of(raw: dict):
    return parse_recipe({"model": "x", "task": raw}).task


def decoded(tok, feature: dict, answer: bool) -> str:
    """The text of the answer tokens (answer=True) or of the prompt tokens."""
    ids = [
        i for i, lab in zip(feature["input_ids"], feature["labels"], strict=True) if (lab != IGNORE) == answer
    ]
    return tok.decode(ids)


def splits_of(train: list[dict]) -> dict:
    return {"train": train, "eval": [], "test": []}


def test_chinese_input_is_cut_and_instruction_and_answer_stay_whole(tok):
    assert len(tok("评", add_special_tokens=False)["input_ids"]) == 3  # the worst case of a byte-level BPE
    task = task_of(GEN_TASK)
    records = [{"title": "手机壳", "review": REVIEW, "label": lab} for lab in ("pos", "neg")]
    full = len(
        encode_chat(tok, [{"role": "user", "content": f"{INSTRUCTION}\n手机壳\n{REVIEW}"}], "model")[0]
    )
    max_length = full // 2
    splits, features, counts = prepare_examples(splits_of(records), task, tok, "model", max_length)
    assert counts["train"] == {"cut": 2, "too_long": 0, "dropped": 0}
    for record, feature, answer in zip(splits["train"], features["train"], ("正面", "负面"), strict=True):
        assert len(feature["input_ids"]) <= max_length
        assert decoded(tok, feature, answer=True).startswith(answer)  # the whole answer, then the end of turn
        prompt = decoded(tok, feature, answer=False)
        assert INSTRUCTION in prompt and "手机壳" in prompt  # instruction and the first field are untouched
        assert record["title"] == "手机壳" and REVIEW.startswith(record["review"])
        assert 0 < len(record["review"]) < len(REVIEW) and record["review"] in prompt
        assert "\ufffd" not in prompt  # never half a character
    # the cut is as short as it can be: one more character would not fit
    longer = {**splits["train"][0], "review": REVIEW[: len(splits["train"][0]["review"]) + 1]}
    messages = [{"role": "user", "content": f"{INSTRUCTION}\n手机壳\n{longer['review']}"},
                {"role": "assistant", "content": "正面"}]  # fmt: skip
    assert len(encode_chat(tok, messages, "model")[0]) > max_length


def test_the_last_field_goes_first_then_the_earlier_one():
    tok = tiny_tokenizer()
    count = lambda r: len(tok(r["a"] + r["b"] + r["keep"], add_special_tokens=False)["input_ids"])  # noqa: E731
    record = {"a": "一二三四五", "b": "六七八", "keep": "答"}  # 3 tokens per character
    fitted, status = fit_fields(record, ["a", "b"], tok, count, max_length=3 * 7)
    assert status == "cut" and fitted == {"a": "一二三四五", "b": "六", "keep": "答"}
    fitted, status = fit_fields(record, ["a", "b"], tok, count, max_length=3 * 4)
    assert status == "cut" and fitted == {"a": "一二三", "b": "", "keep": "答"}
    assert fit_fields(record, ["a", "b"], tok, count, max_length=3 * 9) == (record, "fits")
    assert fit_fields(record, ["a", "b"], tok, count, max_length=2) == (record, "too_long")  # "答" alone: 3


def test_examples_that_cannot_fit_are_dropped_and_counted_never_half_answered(tok):
    task = task_of(
        GEN_TASK | {"label_map": {"pos": "正面" * 20, "neg": "负面"}, "labels": ["正面" * 20, "负面"]}
    )
    records = [
        {"title": "好", "review": REVIEW, "label": "pos"},
        {"title": "差", "review": REVIEW, "label": "neg"},
    ]
    bare = len(encode_chat(tok, [{"role": "user", "content": f"{INSTRUCTION}\n差"},
                                 {"role": "assistant", "content": "负面"}], "model")[0])  # fmt: skip
    splits, features, counts = prepare_examples(splits_of(records), task, tok, "model", bare + 10)
    assert counts["train"] == {"cut": 1, "too_long": 1, "dropped": 1}
    assert len(features["train"]) == 1 and decoded(tok, features["train"][0], True).startswith("负面")
    assert splits["train"][0]["review"] == REVIEW  # a record that cannot fit is kept as is (still scored)
    lines = fit_report(counts, "generate", bare + 10)
    assert any("train: 1 examples had their input cut" in line for line in lines)
    assert any("train: 1 examples left out" in line for line in lines)


def test_when_nothing_fits_the_error_says_how_long_it_must_be(tok):
    task = task_of(GEN_TASK)
    records = [{"title": "好", "review": REVIEW, "label": "pos"}] * 3
    bare = len(
        encode_chat(
            tok,
            [{"role": "user", "content": f"{INSTRUCTION}\n"}, {"role": "assistant", "content": "正面"}],
            "model",
        )[0]
    )  # no input at all
    with pytest.raises(DataError, match=rf"all 3 training examples were dropped.*at least {bare}\b"):
        prepare_examples(splits_of(records), task, tok, "model", bare - 1)


def test_sft_cuts_the_alpaca_input_and_never_the_instruction_or_output(tok):
    task = task_of({"type": "sft"})
    short = {"instruction": "总结下面的评论。", "input": REVIEW, "output": "质量好，物流快。"}
    long_answer = {"instruction": "写一首诗。", "input": "春天", "output": REVIEW}
    user = lambda r: f"{r['instruction']}\n\n{r['input']}" if r["input"] else r["instruction"]  # noqa: E731
    full = len(encode_chat(tok, [{"role": "user", "content": user(short)},
                                 {"role": "assistant", "content": short["output"]}], "model")[0])  # fmt: skip
    max_length = full - 60
    splits, features, counts = prepare_examples(
        splits_of([short, long_answer]), task, tok, "model", max_length
    )
    assert counts["train"] == {"cut": 1, "too_long": 1, "dropped": 0}
    fitted, cut_feature = splits["train"][0], features["train"][0]
    assert fitted["instruction"] == short["instruction"] and fitted["output"] == short["output"]
    assert REVIEW.startswith(fitted["input"]) and len(fitted["input"]) < len(REVIEW)
    assert decoded(tok, cut_feature, True).startswith(short["output"])
    # the long answer cannot fit even without its input: kept with its input, the end of its answer cut
    assert splits["train"][1] == long_answer and len(features["train"][1]["input_ids"]) == max_length
    lines = fit_report(counts, "sft", max_length)
    assert any("1 examples exceed" in line and "the end of the answer is cut" in line for line in lines)


def test_the_stage_logs_how_many_inputs_were_cut(tmp_path):
    from lmadapt.stages.sft import run

    model = save_tiny(tmp_path / "tiny")
    rows = [
        {"title": "评论", "review": REVIEW[: 20 + 7 * k], "label": ("pos", "neg")[k % 2]} for k in range(6)
    ]
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    recipe = parse_recipe(
        {
            "model": str(model),
            "task": GEN_TASK | {"max_new_tokens": 2},
            "data": {"train": str(data), "eval": None, "test": str(data)},
            "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target": "all-linear"},
            "stage": "sft",
            "train": {"epochs": 1, "lr": 1e-3, "batch_size": 2, "max_length": 140, "num_threads": 1},
            "eval": {"every": "no"},
            "output": str(tmp_path / "run"),
        }
    )
    log = (Path(run(recipe)) / "log.txt").read_text(encoding="utf-8")
    assert "train: 6 examples had their input cut to fit max_length=140" in log
    assert "test: 6 examples had their input cut" in log and "left out" not in log
