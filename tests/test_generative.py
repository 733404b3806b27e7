"""Generative task metrics: label parsing with unparseable counts, keyword-set F1, ROUGE-L with CJK."""

from __future__ import annotations

import pytest

from lmadapt.config import parse_recipe
from lmadapt.generative import parse_keywords, parse_label, rouge_l, rouge_tokens, score_outputs


def task(**kw):
    base = {"type": "generate", "instruction": "Judge -->", "text": ["title"], "target": "label"}
    return parse_recipe({"model": "m", "task": base | kw, "stage": "sft"}).task


def test_parse_label():
    labels = ["1", "0"]
    assert parse_label("1", labels) == "1"
    assert parse_label(" 0.\nBecause it is about mice", labels) == "0"
    assert parse_label("The answer is 1", labels) == "1"
    assert parse_label("10 or 0", labels) == "0"  # '10' is not the label '1'
    assert parse_label("either 1 or 0", labels) is None
    assert parse_label("medical", labels) is None
    assert parse_label("Positive!", ["positive", "negative"]) == "positive"


def test_label_f1_counts_unparseable_as_wrong():
    t = task(metric="label_f1", labels=["1", "0"], label_map={"Humans": "1", "Animals": "0"})
    records = [{"title": "x", "label": g} for g in ("Humans", "Humans", "Animals", "Animals")]
    metrics, parsed = score_outputs(t, records, ["1", "I cannot tell", "0", "1"])
    assert parsed == ["1", None, "0", "1"]
    assert metrics["unparseable"] == 1 and metrics["unparseable_rate"] == 0.25
    assert metrics["accuracy"] == 0.5
    assert metrics["f1"] == pytest.approx(0.5)  # label '1': tp 1, fp 1, fn 1


def test_keywords_and_keyword_f1():
    assert parse_keywords("cancer, Protein; cell，小鼠、 cancer.") == ["cancer", "Protein", "cell", "小鼠"]
    t = task(metric="keyword_f1", target="keywords")
    records = [{"title": "x", "keywords": ["cancer", "cell"]}, {"title": "y", "keywords": ["mouse"]}]
    metrics, _ = score_outputs(t, records, ["Cancer, cell death", ""])
    assert metrics["keyword_f1"] == pytest.approx(0.25)  # doc 1: p 1/2 r 1/2; doc 2: nothing predicted
    assert metrics["empty_outputs"] == 1


def test_rouge_l_words_and_chinese_characters():
    assert rouge_tokens("The cat sat.") == ["the", "cat", "sat"]
    assert rouge_tokens("我爱北京 ok") == ["我", "爱", "北", "京", "ok"]
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("the cat sat on the mat", "the cat on mat") == pytest.approx(2 * 1 * (4 / 6) / (1 + 4 / 6))
    assert rouge_l("我爱北京天安门", "我爱天安门") == pytest.approx(2 * 1 * (5 / 7) / (1 + 5 / 7))
    assert rouge_l("abc", "xyz") == 0.0
