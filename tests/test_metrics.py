"""Metrics against hand-computed values and sklearn/seqeval where they overlap."""

from __future__ import annotations

import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from lmadapt.metrics import (
    classification_metrics,
    confusion,
    entity_metrics,
    exact_match,
    keyword_metrics,
    keyword_set_f1,
    multilabel_metrics,
    normalize_keyword,
    per_class_report,
    span_metrics,
    token_f1,
)

GOLD = ["a", "b", "c", "a", "b", "c", "a", "a"]
PRED = ["a", "b", "a", "a", "c", "c", "b", "a"]
LABELS = ["a", "b", "c"]


def test_classification_matches_sklearn():
    m = classification_metrics(GOLD, PRED, LABELS)
    assert m["accuracy"] == pytest.approx(accuracy_score(GOLD, PRED))
    for avg in ("macro", "micro"):
        assert m[f"f1_{avg}"] == pytest.approx(f1_score(GOLD, PRED, average=avg))
        assert m[f"precision_{avg}"] == pytest.approx(precision_score(GOLD, PRED, average=avg))
        assert m[f"recall_{avg}"] == pytest.approx(recall_score(GOLD, PRED, average=avg))
    assert "f1" not in m  # binary scores only for two labels


def test_binary_scores_use_positive_label():
    gold, pred = ["neg", "pos", "pos", "neg"], ["pos", "pos", "neg", "neg"]
    m = classification_metrics(gold, pred, ["neg", "pos"])
    assert m["f1"] == pytest.approx(f1_score(gold, pred, pos_label="pos"))
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)


def test_per_class_report_and_confusion():
    report = per_class_report(GOLD, PRED, LABELS)
    assert report["a"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert report["b"]["support"] == 2 and report["b"]["precision"] == 0.5
    matrix = confusion(GOLD, PRED, LABELS)
    assert matrix == [[3, 1, 0], [0, 1, 1], [1, 0, 1]]  # rows gold, columns predicted
    assert sum(map(sum, matrix)) == len(GOLD)


def test_multilabel():
    gold = [["x", "y"], ["y"], []]
    pred = [["x"], ["y"], ["z"]]
    m = multilabel_metrics(gold, pred, ["x", "y", "z"])
    assert m["accuracy"] == pytest.approx(1 / 3)
    # micro: tp = x + y = 2, fp = z = 1, fn = y (first) = 1
    assert m["f1_micro"] == pytest.approx(2 / 3)
    # macro: x f1 1, y f1 2/3, z f1 0
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_entity_f1_is_entity_level():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    partial = [["B-PER", "O", "O", "B-LOC"]]  # PER boundary wrong: that entity counts as missed
    m = entity_metrics(gold, partial)
    assert m["entity_precision"] == pytest.approx(0.5)
    assert m["entity_recall"] == pytest.approx(0.5)
    assert m["token_accuracy"] == pytest.approx(0.75)
    assert entity_metrics(gold, gold)["entity_f1"] == 1.0


def test_span_metrics():
    assert exact_match("The Eiffel Tower", "eiffel tower!") == 1.0
    assert token_f1("new york city", "york city hall") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("a b", "") == 0.0
    m = span_metrics(["paris", "new york"], ["Paris", "york"])
    assert m["exact_match"] == 0.5
    assert m["token_f1"] == pytest.approx((1 + 2 / 3) / 2)


def test_keyword_normalisation_and_f1():
    assert normalize_keyword("  Deep-Learning,  ") == "deep learning"
    assert keyword_set_f1(["Deep learning", "CNN"], ["deep-learning", "deep learning", "rnn"]) == (
        pytest.approx(0.5),
        pytest.approx(0.5),
        pytest.approx(0.5),
    )
    m = keyword_metrics([["a", "b"], ["c"]], [["A"], ["d"]])
    assert m["keyword_precision"] == pytest.approx(0.5)
    assert m["keyword_recall"] == pytest.approx(0.25)
    assert m["keyword_f1_micro"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
