"""A short real LoRA SFT of SmolLM2-135M-Instruct exported to GGUF: llama.cpp loads it, tokenizes prompts as
lmadapt does, and its greedy answers to 8 prompts are lmadapt's, token for token (f16 and bf16).

llama.cpp's Python binding (`llama_cpp`, from the llama-cpp-python sdist, compiled) is not a dependency of
lmadapt: without it this test skips and says so.
"""

from __future__ import annotations

import json

import pytest

from lmadapt.config import parse_recipe

RECORDS = [
    ("Name a primary color.", "Red is a primary color."),
    ("What is 2 + 3?", "2 + 3 = 5."),
    ("Give a synonym of happy.", "A synonym of happy is joyful."),
    ("Translate 'bonjour' to English.", "'Bonjour' means 'hello' in English."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("Name a mammal that can fly.", "The bat is a mammal that can fly."),
    ("What is the opposite of cold?", "The opposite of cold is hot."),
    ("How many days are in a week?", "A week has seven days."),
]
NEW_TOKENS = 24
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm_run(tmp_path_factory, smollm_dir):
    from lmadapt.stages.sft import run

    tmp = tmp_path_factory.mktemp("gguf-sft")
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": i, "output": o}) + "\n" for i, o in RECORDS))
    recipe = parse_recipe(
        {
            "model": str(smollm_dir),
            "task": {"type": "sft"},
            "data": {"train": str(data), "eval": None, "test": None},
            "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target": "all-linear"},
            "stage": "sft",
            "train": {"max_steps": 2, "lr": 2e-3, "batch_size": 4, "max_length": 128},
            "eval": {"every": "no"},
            "output": str(tmp / "run"),
        }
    )
    return run(recipe)


def lmadapt_greedy(run_dir):
    """(prompt ids, new token ids, eos ids) of lmadapt's engine on the 8 prompts, greedy, as `generate` runs."""
    from lmadapt.infer.decode import run_sequences
    from lmadapt.infer.engine import load_engine

    engine = load_engine(str(run_dir), dtype="float32")
    prompts = [engine.encode([{"role": "user", "content": i}]) for i, _ in RECORDS]
    seqs = [engine.sequence(p, engine.decoding(max_new_tokens=NEW_TOKENS)) for p in prompts]
    run_sequences(engine.model, engine.tokenizer.pad_token_id, seqs)
    return engine, prompts, [s.new_ids for s in seqs]


@pytest.mark.parametrize("quant", ["bf16", "f16"])
def test_llama_cpp_answers_like_lmadapt(tmp_path, smollm_run, quant):
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama.cpp's Python binding is not installed (pip install llama-cpp-python)"
    )
    from lmadapt.export import export_gguf

    out = export_gguf(smollm_run, tmp_path / f"smollm-{quant}.gguf", quant=quant)
    engine, prompts, want = lmadapt_greedy(smollm_run)
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=512, n_threads=2, verbose=False)
    assert llm.metadata["tokenizer.chat_template"] == engine.tokenizer.chat_template
    got = []
    for (instruction, _), ids in zip(RECORDS, prompts, strict=True):
        text = engine.prompt_text([{"role": "user", "content": instruction}])
        assert llm.tokenize(text.encode(), special=True) == ids  # llama.cpp reads the prompt as lmadapt does
        answer = []
        for token in llm.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True):
            if token in engine.eos_ids or len(answer) == NEW_TOKENS:
                break
            answer.append(token)
        got.append(answer)
    for (instruction, _), a, b in zip(RECORDS, got, want, strict=True):
        print(
            f"{quant} {instruction!r}: llama.cpp {engine.tokenizer.decode(a)!r} | lmadapt {engine.tokenizer.decode(b)!r}"
        )
    assert got == want
