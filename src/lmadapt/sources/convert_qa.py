"""Extractive question answering built from ACLSum's labelled abstract sentences (`aclsum-qa`).

ACLSum (the `aclsum` wheel, MIT) has 250 ACL papers whose abstract, introduction and conclusion sentences are
labelled by hand as stating the paper's *challenge*, *approach* or *outcome*. A QA record asks one fixed
question per aspect of the paper's abstract; the answer is the first abstract sentence labelled with that
aspect, as {text, start} in the context (the `span` task's format). Other sentences labelled with the same
aspect are kept in `other_answers` for reference: the span metrics score one gold answer.

One record per paper (its aspect chosen so the three are about equally common), so the catalog's
record-level split is a paper-level split: no abstract is seen in two splits. The files are read as text
out of the archive; nothing in the package is imported or run.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

from ..errors import SourceError

ACLSUM_FILES = {"train": "train.jsonl", "val": "val.jsonl", "test": "test.jsonl"}
QUESTIONS = {
    "challenge": "What problem does the paper address?",
    "approach": "What approach does the paper take?",
    "outcome": "What is the outcome?",
}
ASPECT_SEED = 0  # the order in which papers are given their aspect

# ACLSum's sentences are tokenized ("results ( Table 1 ) , 20 % ."): glue punctuation back to its word.
_DETOK = [
    (re.compile(r" ([.,;:!?%)\]}])"), r"\1"),
    (re.compile(r"([(\[{]) "), r"\1"),
    (re.compile(r" (n't|'s|'re|'ve|'m|'ll|'d)\b"), r"\1"),
    (re.compile(r"`` ?| ?''"), '"'),
]


def detokenize(sentence: str) -> str:
    """Undo ACLSum's tokenization: 'results ( Table 1 ) , 20 % .' -> 'results (Table 1), 20%.'"""
    text = " ".join(sentence.split())
    for pattern, repl in _DETOK:
        text = pattern.sub(repl, text)
    return text.strip()


def _papers(folder: Path) -> list[tuple[str, dict]]:
    """(source split, paper) for every line of ACLSum's train/val/test files, in file order."""
    papers = []
    for split, name in ACLSUM_FILES.items():
        path = folder / name
        if not path.is_file():
            raise SourceError(f"{folder}: no {name}")
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                paper = json.loads(line)
                ok = isinstance(paper["sentences"]["abstract"], list) and isinstance(
                    paper["highlights"], dict
                )
            except (json.JSONDecodeError, KeyError, TypeError):
                ok = False
            if not ok:
                raise SourceError(
                    f"{name}:{line_no}: not an ACLSum paper (id, sentences.abstract, highlights)"
                )
            papers.append((split, paper))
    return papers


def abstract_context(sentences: list[str]) -> tuple[str, list[tuple[int, str]]]:
    """The abstract as one paragraph (sentences detokenized, joined by a space) and (start, text) of each."""
    spans, parts, pos = [], [], 0
    for sentence in sentences:
        text = detokenize(sentence)
        if not text:
            spans.append((-1, ""))
            continue
        if parts:
            pos += 1  # the joining space
        spans.append((pos, text))
        parts.append(text)
        pos += len(text)
    return " ".join(parts), spans


def _choose_aspects(candidates: dict[str, list[str]], seed: int) -> dict[str, str]:
    """paper id -> aspect: papers in a seeded order each take the aspect it has that is rarest so far."""
    order = sorted(candidates)
    random.Random(seed).shuffle(order)
    taken: Counter = Counter()
    chosen = {}
    for pid in order:
        aspect = min(candidates[pid], key=lambda a: (taken[a], list(QUESTIONS).index(a)))
        taken[aspect] += 1
        chosen[pid] = aspect
    return chosen


def aclsum_qa(folder: Path) -> tuple[list[dict], dict]:
    """ACLSum's `{train,val,test}.jsonl` -> one QA record per paper.

    {id, title, aspect, question, context, answer: {text, start}, other_answers: [{text, start}], source_split}

    `context` is the abstract; the answer is its first sentence labelled with the record's aspect. The three
    source files are pooled and split again by the catalog's seed (`source_split` keeps ACLSum's own).
    """
    notes: Counter = Counter()
    built: dict[str, dict] = {}
    candidates: dict[str, list[str]] = {}
    for split, paper in _papers(folder):
        pid = str(paper["id"])
        notes[f"papers_{split}"] += 1
        if pid in built:
            notes["dropped_duplicate_paper"] += 1
            continue
        sentences = paper["sentences"]["abstract"]
        context, spans = abstract_context(sentences)
        answers = {}
        for aspect in QUESTIONS:
            labels = paper["highlights"][aspect]["abstract"]
            if len(labels) != len(sentences):
                raise SourceError(
                    f"paper {pid}: {len(labels)} {aspect} labels for {len(sentences)} sentences"
                )
            found = [{"text": t, "start": s} for (s, t), on in zip(spans, labels, strict=True) if on and t]
            if found:
                answers[aspect] = found
            else:
                notes[f"no_{aspect}_in_abstract"] += 1
        if not answers:
            notes["dropped_no_labelled_abstract_sentence"] += 1
            continue
        built[pid] = {"id": pid, "title": paper.get("title", ""), "context": context, "answers": answers,
                      "source_split": split}  # fmt: skip
        candidates[pid] = list(answers)
    records = []
    for pid, aspect in sorted(_choose_aspects(candidates, ASPECT_SEED).items()):
        paper = built[pid]
        first, *others = paper["answers"][aspect]
        records.append(
            {"id": f"aclsum-{pid}-{aspect}", "title": paper["title"], "aspect": aspect,
             "question": QUESTIONS[aspect], "context": paper["context"], "answer": first,
             "other_answers": others, "source_split": paper["source_split"]}
        )  # fmt: skip
    return records, dict(notes)


def qa_stats(records: list[dict]) -> dict:
    """Context and answer lengths in words (mean, longest), and how many records have other answers."""
    contexts = [len(r["context"].split()) for r in records]
    answers = [len(r["answer"]["text"].split()) for r in records]
    n = max(len(records), 1)
    return {
        "context_words_mean": round(sum(contexts) / n, 1),
        "context_words_max": max(contexts, default=0),
        "answer_words_mean": round(sum(answers) / n, 1),
        "answer_words_max": max(answers, default=0),
        "records_with_other_answers": sum(bool(r["other_answers"]) for r in records),
    }
