"""`method: tfidf` on span tasks: sentence selection (each sentence of the context scored as the answer)."""

from __future__ import annotations

import random

import pytest

from lmadapt.baselines import tfidf
from lmadapt.methods.tfidf import TfidfMethod
from lmadapt.tasks import get_task
from lmadapt.tasks.span import SpanConfig

FILLER = [
    "The corpus has many documents from several sources.",
    "Prior work studied this setting in detail.",
    "Annotation took several months of careful effort.",
    "Many languages remain without resources.",
]
# The question decides which sentence answers: the method's cue words or the result's, wherever they sit.
ANSWERS = {
    "What approach does the paper take?": [
        "We propose a {} model trained end to end.",
        "Our method uses a {} encoder.",
    ],
    "What is the outcome?": [
        "Results show a {} gain over baselines.",
        "Experiments show that {} accuracy improves.",
    ],
}
WORDS = ["neural", "sparse", "graph", "lexical", "hybrid", "compact", "robust", "simple"]


def _records(n: int, seed: int) -> list[dict]:
    """Contexts of filler plus one approach and one result sentence; the question asks for one of them."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        picked = {q: rng.choice(options).format(rng.choice(WORDS)) for q, options in ANSWERS.items()}
        sentences = rng.sample(FILLER, 2) + list(picked.values())
        rng.shuffle(sentences)
        question = rng.choice(list(ANSWERS))
        context = " ".join(sentences)
        answer = picked[question]
        out.append({"id": f"r{i}", "question": question, "context": context,
                    "answer": {"text": answer, "start": context.index(answer)}})  # fmt: skip
    return out


def test_sentence_spans_cut_at_sentence_ends_only():
    text = "We use e.g. the BERT model. It works (mostly). Results: 3.5 points! 中文句子。第二句？"
    assert [text[a:b] for a, b in tfidf.sentence_spans(text)] == [
        "We use e.g. the BERT model.", "It works (mostly).", "Results: 3.5 points!", "中文句子。", "第二句？",
    ]  # fmt: skip
    assert tfidf.sentence_spans("  no end  ") == [(2, 8)] and tfidf.sentence_spans("   ") == []


def test_answer_sentence_is_the_one_the_answer_overlaps_most():
    context = "First one. Second one here. Third."
    assert tfidf.answer_sentence(context, {"text": "Second one here.", "start": 11}) == 1
    assert tfidf.answer_sentence(context, {"text": "one here", "start": 18}) == 1  # a part of a sentence


@pytest.mark.parametrize("C", [1.0, None])  # fixed, and chosen by cross-validation over whole records
def test_sentence_selection_finds_the_answer_the_question_asks_for(tmp_path, C):
    task = get_task(SpanConfig())
    train, test = _records(80, 0), _records(30, 1)
    model = tfidf.fit(task, train, TfidfMethod(C=C, ngram_max=1 if C else None, cv_folds=3), seed=0)
    assert model.mode == "span" and model.labels == tfidf.SPAN_LABELS
    predicted = model.predict(tfidf.inputs(task, test))
    assert predicted == [r["answer"]["text"] for r in test]
    assert "sentence" in tfidf.describe(model)

    model.save(tmp_path)
    again = tfidf.TfidfModel.load(tmp_path)
    assert again.predict(tfidf.inputs(task, test)) == predicted


def test_an_empty_context_predicts_an_empty_answer():
    task = get_task(SpanConfig())
    model = tfidf.fit(task, _records(40, 0), TfidfMethod(C=1.0, ngram_max=1), seed=0)
    assert model.predict([("What is the outcome?", "  "), ("What is the outcome?", "One. Two.")])[0] == ""
