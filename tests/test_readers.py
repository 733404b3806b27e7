"""Readers: every format reads back what was written; bad records are named by file, line and field."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lmadapt.cli import app
from lmadapt.data import (
    SHAPES,
    guess_shape,
    load_split,
    read_records,
    shape_fields,
    subset,
    validate_records,
)
from lmadapt.errors import DataError
from lmadapt.utils.io import write_jsonl

FIELDS = {
    "text": "str",
    "label": "label",
    "tokens": "str_list",
    "tags": "tags",
    "answer": "span",
    "note": "str?",
}


def make_records(n: int = 5) -> list[dict]:
    return [
        {
            "id": i,
            "text": f'record {i}, with a comma and "quotes"' + ("\nand a second line" if i == 2 else ""),
            "label": "pos" if i % 2 else "neg",
            "tokens": ["record", str(i)],
            "tags": ["O", "B-num"],
            "answer": {"text": "record", "start": 0},
        }
        for i in range(n)
    ]


def expected(records: list[dict]) -> list[dict]:
    return [r | {"note": ""} for r in records]


def check_cli(*args):
    """`lmadapt data check ARGS` with a wide terminal, so rich does not wrap paths; output on one line."""
    result = CliRunner().invoke(app, ["data", "check", *args], env={"COLUMNS": "1000"})
    return result.exit_code, " ".join(result.output.split())


def write_table(path, records, delimiter):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(list(records[0]))
        for r in records:
            writer.writerow([json.dumps(v) if isinstance(v, list | dict) else v for v in r.values()])


def write_any(path, records):
    suffix = path.suffix
    if suffix == ".jsonl":
        write_jsonl(path, records)
    elif suffix == ".json":
        path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    elif suffix in (".csv", ".tsv"):
        write_table(path, records, "," if suffix == ".csv" else "\t")
    else:
        pq.write_table(pa.Table.from_pylist(records), path)


# --------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_each_format_round_trips(tmp_path, suffix):
    records = make_records()
    path = tmp_path / f"train{suffix}"
    write_any(path, records)
    got = load_split(None, str(path), FIELDS)
    if suffix in (".csv", ".tsv"):  # every cell is text: the id comes back as a string
        got = [r | {"id": int(r["id"])} for r in got]
    assert got == expected(records)
    assert all(type(r) is dict for r in got)  # plain dicts, whatever the reader used inside


def test_records_remember_their_line(tmp_path):
    records = make_records(4)
    for suffix, lines in [(".jsonl", [1, 2, 3, 4]), (".csv", [2, 3, 4, 6]), (".parquet", [0, 1, 2, 3])]:
        path = tmp_path / f"x{suffix}"
        write_any(path, records)
        assert [r.line for r in read_records(path)] == lines, suffix  # csv: record 2 spans lines 4-5
    path = tmp_path / "x.json"
    write_any(path, records)
    text = path.read_text().splitlines()
    got = read_records(path)
    assert all(text[r.line - 1].strip() == "{" for r in got)
    assert [r.where for r in got][:2] == [f"{path}:2", f"{path}:{got[1].line}"]


def test_labels_become_strings_and_csv_lists_parse(tmp_path):
    path = tmp_path / "x.jsonl"
    write_jsonl(path, [{"text": "a", "label": 1}, {"text": "b", "label": True}, {"text": "c", "label": 2.0}])
    assert [r["label"] for r in load_split(None, str(path), {"text": "str", "label": "label"})] == [
        "1",
        "true",
        "2",
    ]
    path = tmp_path / "x.csv"
    path.write_text('text,label,labels\nhello, pos ,"[""a"", 3]"\n', encoding="utf-8")
    (r,) = load_split(None, str(path), {"text": "str", "label": "label", "labels": "labels"})
    assert r["label"] == "pos" and r["labels"] == ["a", "3"]


def test_json_lines_in_a_json_file_and_a_lone_object(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    assert [r["text"] for r in read_records(path)] == ["a", "b"]
    path.write_text('{"data": [{"text": "a"}]}', encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.json:1: expected a JSON list of records.*'data'"):
        read_records(path)


# --------------------------------------------------------------------------------------- errors
BAD = [
    ("text", "str", 5, "a non-empty string, got int 5"),
    ("text", "str", "  ", "a non-empty string, got a blank string"),
    ("label", "label", [1], "a label (string, integer or boolean), got list of 1"),
    ("labels", "labels", "pos", "a list of labels, got string 'pos'"),
    ("tokens", "str_list", ["a", 1], "a list of non-empty strings, got list of 2 (item 1 is int 1)"),
    (
        "tags",
        "tags",
        ["O", ""],
        "a list of tags (non-empty strings), got list of 2 (item 1 is an empty string)",
    ),
    ("messages", "messages", [{"role": "human", "content": "hi"}], "role 'human' is not one of system"),
    (
        "answer",
        "span",
        {"text": "a"},
        "an answer span {text: str, start: int}, got object {text} (start is null)",
    ),
    (
        "history",
        "history",
        [["hi"]],
        "a list of [user, assistant] string pairs, got list of 1 (item 0: got list",
    ),
    ("prompt", "chat", 3, "a non-empty string or a list of {role, content} messages, got int 3"),
    (
        "responses",
        "responses",
        ["only one"],
        "at least 2 non-empty response strings, best first, got list of 1",
    ),
    ("scores", "scores", ["high", 1], "a list of numbers (one score per response), got list of 2 (item 0"),
]


@pytest.mark.parametrize(
    ("field", "kind", "value", "message"), BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)]
)
def test_bad_value_names_file_line_field_and_types(tmp_path, field, kind, value, message):
    path = tmp_path / "train.jsonl"
    good = {
        "text": "ok",
        "label": "x",
        "labels": [],
        "tokens": ["a"],
        "tags": ["O"],
        "answer": {"text": "a", "start": 0},
    }
    good |= {"messages": [{"role": "user", "content": "hi"}], "history": [], "prompt": "p"}
    good |= {"responses": ["a", "b"], "scores": [1, 2]}
    write_jsonl(path, [good, good, good | {field: value}])
    with pytest.raises(DataError) as info:
        load_split(None, str(path), {field: kind})
    assert str(info.value).startswith(f"{path}:3: field '{field}': expected ")
    assert message in str(info.value)


def test_missing_field_names_the_close_one(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,labels\nhello,pos\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"train\.csv:2: field 'label': missing \(record has text, labels; did you"
    ):
        load_split(None, str(path), {"text": "str", "label": "label"})


def test_csv_errors_name_the_physical_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"two\nlines",a\nfine,b\n"also\n\nmultiline",\n', encoding="utf-8")
    with pytest.raises(
        DataError, match=r"train\.csv:5: field 'label': expected a label .*, got an empty string"
    ):
        load_split(None, str(path), {"text": "str", "label": "label"})
    path.write_text("text,label\na,b\nc,d,e\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv:3: 3 cells, but the header has 2 columns"):
        read_records(path)


def test_cross_field_checks_name_the_line(tmp_path):
    path = tmp_path / "ner.jsonl"
    write_jsonl(path, [{"tokens": ["a", "b"], "tags": ["O", "O"]}, {"tokens": ["a", "b"], "tags": ["O"]}])
    with pytest.raises(DataError, match=r"ner\.jsonl:2: field 'tags': 1 tags for 2 'tokens'"):
        load_split(None, str(path), shape_fields("tag"))
    path = tmp_path / "rm.jsonl"
    write_jsonl(path, [{"prompt": "p", "responses": ["meh", "best", "worst"], "scores": [1, 3, 0]}])
    (r,) = load_split(None, str(path), shape_fields("ranked"))
    assert r["responses"] == ["best", "meh", "worst"] and r["scores"] == [3.0, 1.0, 0.0]


def test_broken_json_line_7_fails_naming_file_and_line_and_writes_nothing(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps({"text": f"t{i}", "label": "a"}) for i in range(10)]
    lines[6] = '{"text": "t6" "label": "a"}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_split(None, str(path), shape_fields("classify"))
    assert str(info.value) == f"{path}:7: not valid JSON: Expecting ',' delimiter (col 15)"
    before = sorted(tmp_path.rglob("*"))
    code, output = check_cli(str(path))
    assert code == 2 and f"error: {path}:7: not valid JSON" in output
    assert sorted(tmp_path.rglob("*")) == before


def test_data_check_prints_count_and_fields(tmp_path):
    path = tmp_path / "sft.jsonl"
    write_jsonl(path, [{"instruction": "say hi", "input": "", "output": "hi"}] * 3)
    code, output = check_cli(str(path), "--shape", "alpaca")
    assert code == 0, output
    assert f"{path}: 3 records" in output and "instruction: in 3/3 (string 3)" in output
    code, output = check_cli(str(path), "--shape", "messages")
    assert code == 2 and f"{path}:1: field 'messages': missing" in output


# --------------------------------------------------------------------------------------- splits
def test_limit_draws_a_seeded_subset_in_order(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"text": f"t{i}"} for i in range(50)])
    a = load_split(None, str(path), {"text": "str"}, limit=10, seed=1)
    assert a == load_split(None, str(path), {"text": "str"}, limit=10, seed=1)
    ids = [int(r["text"][1:]) for r in a]
    assert len(ids) == 10 and ids == sorted(ids)
    assert a != load_split(None, str(path), {"text": "str"}, limit=10, seed=2)
    assert len(load_split(None, str(path), {"text": "str"}, limit=99)) == 50
    assert subset(list(range(5)), None) == [0, 1, 2, 3, 4]


def test_split_lookup_in_a_folder_and_missing_split_lists_available(tmp_path):
    records = make_records(3)
    for name, suffix in [("train", ".jsonl"), ("validation", ".csv"), ("test", ".parquet")]:
        write_any(tmp_path / f"{name}{suffix}", records)
    (tmp_path / "manifest.json").write_text("{}")  # not a split: the manifest of a pulled dataset
    fields = shape_fields("classify")
    for split in ("train", "validation", "test"):
        assert [r["label"] for r in load_split(str(tmp_path), split, fields)] == ["neg", "pos", "neg"]
    assert load_split(str(tmp_path), None, fields) == []
    with pytest.raises(DataError, match=r"no split 'dev'; available splits: test, train, validation"):
        load_split(str(tmp_path), "dev", fields)
    # a file path as the split wins over the source
    assert len(load_split("no-such-source", str(tmp_path / "train.jsonl"), fields)) == 3


def test_unreachable_hub_id_is_a_clear_source_error():
    from lmadapt.errors import SourceError

    with pytest.raises(
        SourceError,
        match=r"dataset 'nobody-lmadapt/no-such-dataset' is not in the catalog .* "
        r"could not be fetched from the Hugging Face Hub",
    ):
        load_split("nobody-lmadapt/no-such-dataset", "train", {"text": "str"})


def test_no_source_and_not_a_file(tmp_path):
    with pytest.raises(DataError, match="is not a file, and data.source is empty"):
        load_split(None, "train", {"text": "str"})
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        load_split(None, str(tmp_path / "nope.jsonl"), {"text": "str"})


# --------------------------------------------------------------------------------------- shapes
def test_shape_fields_and_guess():
    assert shape_fields("classify", text=["title", "abstract"], label="label") == {
        "title": "str",
        "abstract": "str?",
        "label": "label",
    }
    assert shape_fields("alpaca", history=None, id="id") == {
        "instruction": "str",
        "input": "str?",
        "output": "str",
        "system": "str?",
        "id": "label",
    }
    with pytest.raises(ValueError, match="roles: text, label"):
        shape_fields("classify", txt="x")
    examples = {
        "classify": {"text": "a", "label": 1},
        "multi_label": {"text": "a", "label": ["x", "y"]},
        "pair": {"text_a": "a", "text_b": "b", "label": "same"},
        "tag": {"tokens": ["a"], "tags": ["O"]},
        "span": {"context": "abc", "question": "q", "answer": {"text": "b", "start": 1}},
        "alpaca": {"instruction": "i", "input": "", "output": "o"},
        "messages": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        "preference": {"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"},
        "ranked": {"prompt": "q", "responses": ["a", "b", "c"]},
        "text": {"text": "just text"},
        "keywords": {"text": "a b", "keywords": ["a"]},
    }
    assert set(examples) == set(SHAPES)
    for shape, record in examples.items():
        assert guess_shape(record) == shape
        assert validate_records([record], SHAPES[shape], "x")
