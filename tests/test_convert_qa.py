"""`aclsum-qa`: the ACLSum -> extractive QA converter on hand-made papers in the wheel's format, and a pull of
a wheel laid out like aclsum's from a fake index (one record per paper, so the split is by paper)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import fake_index
from fake_index import use_only_index
from lmadapt.errors import SourceError
from lmadapt.sources import DATASETS, pull_dataset, read_manifest
from lmadapt.sources.catalog import Artifact, DatasetEntry, dataset_entry
from lmadapt.sources.convert_qa import ACLSUM_FILES, QUESTIONS, aclsum_qa, detokenize

ABSTRACT = [
    "Parsing ( of tweets ) is hard , and costs 20 % more .",
    "We propose a parser that does n't need tags .",
    "We also release `` TweetBank '' .",
    "Results show gains of 3 points .",
]


def _paper(pid: str, challenge=(1, 0, 0, 0), approach=(0, 1, 1, 0), outcome=(0, 0, 0, 1)) -> dict:
    """One paper line as ACLSum writes it: tokenized sentences, 0/1 labels per aspect, section and sentence."""
    labels = {"challenge": challenge, "approach": approach, "outcome": outcome}
    return {
        "id": pid,
        "title": f"Paper {pid}",
        "summary": {a: "..." for a in labels},
        "sentences": {"abstract": ABSTRACT, "introduction": ["Intro ."], "conclusion": []},
        "highlights": {
            a: {"abstract": list(v), "introduction": [1], "conclusion": []} for a, v in labels.items()
        },
    }


def _write(folder, papers: dict[str, list[dict]]):
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in ACLSUM_FILES.items():
        lines = [json.dumps(p) for p in papers.get(split, [])]
        (folder / name).write_text("\n".join(lines), encoding="utf-8")  # the wheel's last line has no newline
    return folder


def test_detokenize_glues_punctuation_back():
    assert detokenize("results ( Table 1 ) , 20 % .") == "results (Table 1), 20%."
    assert detokenize("it does n't , the `` best '' one 's") == "it doesn't, the \"best\" one's"


def test_answers_are_sentences_of_the_abstract_at_their_offsets(tmp_path):
    folder = _write(tmp_path / "d", {"train": [_paper("A")], "val": [_paper("B")], "test": [_paper("C")]})
    records, notes = aclsum_qa(folder)
    assert notes == {"papers_train": 1, "papers_val": 1, "papers_test": 1}
    assert [r["id"].rsplit("-", 1)[0] for r in records] == ["aclsum-A", "aclsum-B", "aclsum-C"]
    assert sorted(r["aspect"] for r in records) == ["approach", "challenge", "outcome"]  # one of each
    context = records[0]["context"]
    assert context == (
        "Parsing (of tweets) is hard, and costs 20% more. We propose a parser that doesn't need tags. "
        'We also release "TweetBank". Results show gains of 3 points.'
    )
    expected = {
        "challenge": ("Parsing (of tweets) is hard, and costs 20% more.", []),
        "approach": ("We propose a parser that doesn't need tags.", ['We also release "TweetBank".']),
        "outcome": ("Results show gains of 3 points.", []),
    }
    for r in records:
        assert r["question"] == QUESTIONS[r["aspect"]] and r["context"] == context
        for answer in [r["answer"], *r["other_answers"]]:
            assert r["context"][answer["start"] : answer["start"] + len(answer["text"])] == answer["text"]
        text, others = expected[r["aspect"]]
        assert r["answer"]["text"] == text and [a["text"] for a in r["other_answers"]] == others
    assert {r["source_split"] for r in records} == {"train", "val", "test"}


def test_papers_without_a_labelled_abstract_sentence_are_left_out(tmp_path):
    none = (0, 0, 0, 0)
    papers = [
        _paper("A", challenge=none),
        _paper("B", none, none, none),
        _paper("C", none, none, (0, 1, 0, 0)),
    ]
    records, notes = aclsum_qa(_write(tmp_path / "d", {"train": papers}))
    assert notes["dropped_no_labelled_abstract_sentence"] == 1 and notes["no_challenge_in_abstract"] == 3
    by_id = {r["id"].rsplit("-", 1)[0]: r for r in records}
    assert set(by_id) == {"aclsum-A", "aclsum-C"}
    assert by_id["aclsum-C"]["aspect"] == "outcome"  # the only aspect it has
    assert by_id["aclsum-C"]["answer"]["text"] == "We propose a parser that doesn't need tags."


def test_bad_files_are_source_errors(tmp_path):
    folder = _write(tmp_path / "d", {"train": [_paper("A")]})
    (folder / "val.jsonl").write_text('{"id": "x"}', encoding="utf-8")
    with pytest.raises(SourceError, match=r"val.jsonl:1: not an ACLSum paper"):
        aclsum_qa(folder)
    (folder / "val.jsonl").unlink()
    with pytest.raises(SourceError, match="no val.jsonl"):
        aclsum_qa(folder)


def test_catalog_pins_the_aclsum_wheel():
    entry = dataset_entry("aclsum-qa")
    assert entry.artifact == Artifact(
        "aclsum", "0.1.2", "wheel", "c75ffc48d3eabc5f37c68ea087943780a85950087957759e89746f21111f2213"
    )
    assert entry.path == "aclsum/dataset" and entry.include == ("train.jsonl", "val.jsonl", "test.jsonl")
    assert entry.convert is aclsum_qa and entry.label == "aspect" and entry.license.startswith("MIT")


def test_pull_an_aclsum_like_wheel_splits_by_paper(tmp_path, monkeypatch):
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))
    root = tmp_path / "index"
    use_only_index(monkeypatch, (root / "simple").as_uri())
    papers = {"train": [_paper(f"P{i}") for i in range(40)], "val": [_paper(f"V{i}") for i in range(10)],
              "test": [_paper(f"T{i}") for i in range(10)]}  # fmt: skip
    files = {
        f"aclsum/dataset/{name}": "\n".join(json.dumps(p) for p in papers[split]).encode()
        for split, name in ACLSUM_FILES.items()
    }
    files["aclsum/dataset/paper_jsons/P0.json"] = b"{}"  # not read
    files["aclsum/aclsum.py"] = b"raise SystemExit('package code must never run')"
    digest = fake_index.publish(root, "aclsum-9.9-py3-none-any.whl", fake_index.archive_bytes(files, "wheel"))
    real = dataset_entry("aclsum-qa")
    entry = DatasetEntry(
        "fake-aclsum", Artifact("aclsum", "9.9", "wheel", digest), real.path, real.convert, "t",
        include=real.include, splits=real.splits, label=real.label, stats=real.stats, license=real.license,
    )  # fmt: skip
    monkeypatch.setitem(DATASETS, "fake-aclsum", entry)
    folder = pull_dataset("fake-aclsum")
    manifest = read_manifest(folder)
    assert manifest["records"] == 60 and manifest["splits"] == {"train": 36, "validation": 6, "test": 18}
    assert manifest["labels"]["test"] == {"challenge": 6, "approach": 6, "outcome": 6}
    rows = {
        s: [json.loads(x) for x in (folder / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()]
        for s in manifest["splits"]
    }
    paper_of = {s: Counter(r["id"].rsplit("-", 1)[0] for r in recs) for s, recs in rows.items()}
    assert all(n == 1 for c in paper_of.values() for n in c.values())  # one record per paper
    assert not (paper_of["train"].keys() & paper_of["test"].keys())
    assert not (paper_of["train"].keys() & paper_of["validation"].keys())
    assert not (paper_of["validation"].keys() & paper_of["test"].keys())
    for r in rows["test"]:
        assert r["context"][r["answer"]["start"] :].startswith(r["answer"]["text"])
