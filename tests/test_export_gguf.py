"""`lmadapt export --format gguf|ollama`: a tiny random Llama sft run through llama.cpp's own converter.

Two kinds of test:
- The converter plumbing (fetch, sha256 check before extraction, digest check before each run, how a refusal
  is reported) runs against a fake package index and fake converter scripts: offline and instant.
- What a GGUF file holds (all tensors equal to the merged weights within the dtype's precision, vocabulary,
  special tokens, chat template) and the Ollama Modelfile need the real converter: the pinned llama-cpp-python
  sdist (76 MB) is fetched once into a cache that outlives the test session (`$LMADAPT_HOME` when set, as CI
  sets it, else pytest's cache folder), so only the first run anywhere downloads it. Without a package index
  these tests skip, saying so, except in CI (`CI` set), where the missing index is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fake_index import archive_bytes, publish, use_only_index
from lmadapt.cli import app
from lmadapt.errors import LmadaptError, SourceError
from lmadapt.export.chat import chat_template_for
from lmadapt.export.converter import CONVERTER, convert_hf_to_gguf, llama_converter
from lmadapt.export.ollama import chat_pieces, go_template
from lmadapt.sources.catalog import Artifact
from lmadapt.templates import render
from tiny_lm import CHATML, SENTENCES

PAIRS = [("count to three", "one two three"), ("greet me", "hello how are you today?")]


# ---------------------------------------------------------------- a tiny Llama the converter accepts
def llama_style_tokenizer(chat_template: str | None = CHATML):
    """A tiny Llama-2-style tokenizer (BPE with byte fallback, "▁" for spaces), trained on a few sentences.

    llama.cpp's converter reads it as a "llama" (SentencePiece-like) vocabulary; a byte-level BPE would need
    its pre-tokenizer listed in the converter, which a made-up one is not."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    backend.train_from_iterator(
        SENTENCES * 3, trainers.BpeTrainer(vocab_size=560, special_tokens=specials + byte_tokens)
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )  # fmt: skip
    tok.chat_template = chat_template
    return tok


def save_tiny_llama(folder: Path, chat_template: str | None = CHATML, arch: str = "llama") -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    tok = llama_style_tokenizer(chat_template)
    torch.manual_seed(0)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
            initializer_range=0.2,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    else:  # an architecture llama.cpp's converter has no class for
        config = OPTConfig(
            vocab_size=len(tok), hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=64, word_embed_proj_dim=16,
        )  # fmt: skip
        model = OPTForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def sft_run(tmp: Path, model: Path, method: str = "lora", template: str = "auto") -> Path:
    from lmadapt.config import parse_recipe
    from lmadapt.stages.sft import run

    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": i, "output": o}) + "\n" for i, o in PAIRS))
    method_cfg = {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target": "all-linear"}
    recipe = parse_recipe(
        {
            "model": str(model),
            "task": {"type": "sft", "template": template},
            "data": {"train": str(data), "eval": None, "test": None},
            "method": method_cfg if method == "lora" else {"type": method},
            "stage": "sft",
            "train": {"max_steps": 2, "lr": 5e-2, "batch_size": 2, "max_length": 64, "num_threads": 1},
            "eval": {"every": "no"},
            "output": str(tmp / "run"),
        }
    )
    return run(recipe)


@pytest.fixture(scope="module")
def converter_home(request, tmp_path_factory):
    """`LMADAPT_HOME` for this module with the real pinned converter in it (fetched on the first run only)."""
    preset = os.environ.get("LMADAPT_HOME")
    cache = getattr(request.config, "cache", None)  # None under `-p no:cacheprovider`
    kept = cache.mkdir("lmadapt-home") if cache else tmp_path_factory.mktemp("lmadapt-home")
    home = Path(preset) if preset else kept
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMADAPT_HOME", str(home))
        try:
            llama_converter()
        except SourceError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"needs {CONVERTER} from a package index once (then cached in {home}): {exc}")
        yield home


@pytest.fixture(scope="module")
def lora_run(converter_home, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("gguf-lora")
    return sft_run(tmp, save_tiny_llama(tmp / "base"))


def merged_weights(run_dir: Path) -> tuple[dict[str, torch.Tensor], object]:
    """The run's weights as lmadapt's engine uses them (adapter merged), and its tokenizer."""
    from lmadapt.infer.engine import load_run

    model, tokenizer, _ = load_run(run_dir)
    model = model.merge_and_unload()
    return {k: v.detach().float() for k, v in model.state_dict().items()}, tokenizer


def gguf_name(hf_name: str, n_layers: int) -> str:
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    return names.get_name(hf_name, try_suffixes=(".weight", ".bias"))


def rotary_layout(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """q/k rows as llama.cpp stores them: each head's two rotary halves interleaved (HF keeps them apart)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def field(reader, key):
    import gguf

    f = reader.fields[key]
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        return [f.contents(i) for i in range(len(f.data))]
    return f.contents()


# ---------------------------------------------------------------- the real converter on a tiny Llama
@pytest.mark.parametrize("quant", ["f16", "bf16", "q8_0"])
def test_gguf_holds_every_merged_tensor_the_tokenizer_and_the_chat_template(tmp_path, lora_run, quant):
    import gguf

    out = tmp_path / f"model-{quant}.gguf"
    result = CliRunner().invoke(
        app, ["export", str(lora_run), "--format", "gguf", "--quant", quant, "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and [p.name for p in tmp_path.iterdir()] == [out.name]  # no scratch files left

    reader = gguf.GGUFReader(out)
    weights, tok = merged_weights(lora_run)
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "tokenizer.chat_template") == CHATML
    assert field(reader, "tokenizer.ggml.tokens") == tok.convert_ids_to_tokens(list(range(len(tok))))
    assert field(reader, "tokenizer.ggml.bos_token_id") == tok.bos_token_id
    assert field(reader, "tokenizer.ggml.eos_token_id") == tok.eos_token_id

    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == len(weights)  # every weight, nothing else
    precision = {"f16": 2.0**-11, "bf16": 2.0**-8}
    for hf_name, w in weights.items():
        t = tensors[gguf_name(hf_name, 2)]
        got = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).copy())
        want = w.reshape(got.shape) if w.ndim == 1 else w
        if ".q_proj." in hf_name or ".k_proj." in hf_name:
            want = rotary_layout(want, 4 if ".q_proj." in hf_name else 2)
        if w.ndim == 1:  # norms stay float32 whatever the quant
            assert torch.equal(got, want), hf_name
        elif quant == "q8_0":
            # blocks of 32 share one scale d = max|x| / 127, stored as f16: an error of at most d / 2
            # from rounding to a step, plus up to 127 steps times the scale's own f16 rounding (d * 2**-11)
            blocks = want.reshape(-1, 32)
            d = blocks.abs().amax(dim=1, keepdim=True) / 127
            assert ((got.reshape(-1, 32) - blocks).abs() <= d * (0.5 + 127 * 2.0**-11) + 1e-7).all(), hf_name
        else:
            torch.testing.assert_close(got, want, rtol=precision[quant], atol=1e-7, msg=hf_name)


def test_ollama_folder_has_the_gguf_and_a_modelfile_that_matches_lmadapt(tmp_path, lora_run):
    out = tmp_path / "ollama"
    result = CliRunner().invoke(app, ["export", str(lora_run), "--format", "ollama", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model.gguf"]
    text = (out / "Modelfile").read_text()
    template = (
        '{{ range $i, $m := .Messages }}{{ if eq $m.Role "system" }}<|im_start|>system\n{{ $m.Content }}'
        '<|im_end|>\n{{ else if eq $m.Role "user" }}<|im_start|>user\n{{ $m.Content }}<|im_end|>\n'
        '{{ else if eq $m.Role "assistant" }}<|im_start|>assistant\n{{ $m.Content }}<|im_end|>\n'
        "{{ end }}{{ end }}<|im_start|>assistant\n"
    )
    assert text.splitlines()[2:] == [
        "FROM ./model.gguf",
        *f'TEMPLATE """{template}"""'.splitlines(),
        'PARAMETER stop "</s>"',
        'PARAMETER stop "<|im_end|>"',
        "# The defaults of `lmadapt generate`: greedy decoding, 128 new tokens, no repetition penalty.",
        "PARAMETER temperature 0",
        "PARAMETER repeat_penalty 1",
        "PARAMETER num_predict 128",
        "PARAMETER num_ctx 256",
    ]


def test_a_named_template_run_exports_a_jinja_template_that_renders_like_lmadapt(tmp_path, converter_home):
    import gguf

    run_dir = sft_run(tmp_path, save_tiny_llama(tmp_path / "base", chat_template=None), method="full")
    out = tmp_path / "alpaca.gguf"
    result = CliRunner().invoke(
        app, ["export", str(run_dir), "--format", "gguf", "--quant", "bf16", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    jinja = field(gguf.GGUFReader(out), "tokenizer.chat_template")
    tok = llama_style_tokenizer(chat_template=None)
    messages = [{"role": "user", "content": "count to three"}]
    assert tok.apply_chat_template(
        messages, chat_template=jinja, tokenize=False, add_generation_prompt=True
    ) == (render(tok, messages, "alpaca", add_generation_prompt=True))


def test_an_architecture_the_converter_refuses_exits_2_and_leaves_nothing(tmp_path, converter_home):
    run_dir = sft_run(tmp_path / "opt", save_tiny_llama(tmp_path / "opt-base", arch="opt"), method="full")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = CliRunner().invoke(
        app, ["export", str(run_dir), "--format", "gguf", "--output", str(out_dir / "m.gguf")]
    )
    assert result.exit_code == 2
    assert "Model OPTForCausalLM is not supported" in result.output
    assert list(out_dir.iterdir()) == []  # no half-written file, no scratch folder


def test_q4_k_m_converts_to_f32_then_runs_llama_quantize(tmp_path, lora_run):
    import gguf

    fake = tmp_path / "bin" / "llama-quantize"  # records its arguments, and copies the f32 file through
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncp "$1" "$2"\n')
    fake.chmod(0o755)
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    args = ["export", str(lora_run), "--format", "gguf", "--quant", "q4_k_m", "--output", str(out)]
    result = CliRunner().invoke(app, [*args, "--llama-quantize", str(fake)])
    assert result.exit_code == 0, result.output
    src, dst, kind = (tmp_path / "args").read_text().split()
    assert (Path(src).name, Path(dst).name, kind) == ("model-f32.gguf", "m.gguf", "Q4_K_M")
    assert field(gguf.GGUFReader(out), "general.file_type") == gguf.LlamaFileType.ALL_F32
    assert [p.name for p in out.parent.iterdir()] == ["m.gguf"]


@pytest.mark.skipif(
    shutil.which("llama-quantize") is None,
    reason="llama.cpp's llama-quantize is not on PATH (`lmadapt export --quant q4_k_m` says how to build it)",
)
def test_q4_k_m_with_the_real_llama_quantize(tmp_path, lora_run):
    import gguf

    out = tmp_path / "m.gguf"
    args = ["export", str(lora_run), "--format", "gguf", "--quant", "q4_k_m", "--output", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    reader = gguf.GGUFReader(out)
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert field(reader, "tokenizer.chat_template") == CHATML and len(reader.tensors) == 21


# ---------------------------------------------------------------- bad input: exit 2, clear message
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onnx"], "choose one of safetensors, gguf, ollama"),
        (["--format", "gguf", "--quant", "q3"], "choose one of f16, bf16, q8_0, q4_k_m"),
        (["--quant", "q8_0"], "--quant and --llama-quantize are for --format gguf or ollama"),
        (
            ["--format", "gguf", "--quant", "f16", "--llama-quantize", "/bin/true"],
            "only used with --quant q4_k_m",
        ),
    ],
)
def test_bad_options_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--output", str(tmp_path / "x.gguf"), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_not_a_run_or_an_incomplete_run_exits_2(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("model: x\n")
    for run_dir, message in [
        (tmp_path / "nope", "no such run folder"),
        (tmp_path / "half", "not a complete run"),
    ]:
        result = CliRunner().invoke(
            app, ["export", str(run_dir), "--format", "gguf", "--output", str(tmp_path / "m.gguf")]
        )
        assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not (tmp_path / "m.gguf").exists()


def test_q4_k_m_without_llama_quantize_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-quantize anywhere
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(tmp_path),
            "--format",
            "gguf",
            "--quant",
            "q4_k_m",
            "--output",
            str(tmp_path / "m.gguf"),
        ],
    )
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "llama-quantize" in said and "cmake --build build --target llama-quantize" in said
    assert "--quant q8_0, f16 or bf16" in said


def test_existing_output_is_never_overwritten(tmp_path):
    (tmp_path / "m.gguf").write_text("keep")
    result = CliRunner().invoke(
        app, ["export", str(tmp_path), "--format", "gguf", "--output", str(tmp_path / "m.gguf")]
    )
    assert result.exit_code == 2 and "exists" in result.output
    assert (tmp_path / "m.gguf").read_text() == "keep"


# ---------------------------------------------------------------- chat templates (no converter needed)
SMOL_LIKE = (  # a default system prompt when there is none, BOS first (as SmolLM2's and Qwen's templates do)
    "{{ bos_token }}{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize("template", ["alpaca", "plain"])
def test_named_templates_have_jinja_twins(template):
    tok = llama_style_tokenizer(chat_template=None)
    jinja = chat_template_for(tok, template)  # checks itself against lmadapt on the probe conversations
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}]
    assert tok.apply_chat_template(messages, chat_template=jinja, tokenize=False) == render(
        tok, messages, template, False
    )


def test_ollama_template_keeps_a_default_system_prompt_and_drops_the_bos_llama_cpp_adds():
    from tokenizers import processors

    tok = llama_style_tokenizer(SMOL_LIKE)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)]
    )
    pieces = chat_pieces(tok, "model")
    assert pieces.head == "<|im_start|>system\nYou are helpful.<|im_end|>\n"
    assert pieces.system == ("<|im_start|>system\n", "<|im_end|>\n")
    assert pieces.generation == "<|im_start|>assistant\n"
    assert "{{ if eq $i 0 }}<|im_start|>system\nYou are helpful.<|im_end|>\n{{ end }}" in go_template(pieces)
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "?"},
    ]
    assert "<s>" + pieces.render(conversation) == render(tok, conversation, "model", True)


def test_a_template_ollama_cannot_express_is_a_clear_error():
    turn_numbers = (
        "{% for message in messages %}{{ loop.index ~ ' ' + message['role'] + ': ' + message['content'] + '\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    with pytest.raises(LmadaptError, match="cannot be written as an Ollama TEMPLATE"):
        chat_pieces(llama_style_tokenizer(turn_numbers), "model")


# ---------------------------------------------------------------- converter plumbing (fake index, offline)
FAKE_SCRIPT = """
import json, os, sys
import gguf  # must be the archive's own gguf-py
out = sys.argv[sys.argv.index("--outfile") + 1]
if "refuse" in sys.argv[1]:
    print("INFO:hf-to-gguf:Loading model", file=sys.stderr)
    print("ERROR:hf-to-gguf:Model FooForCausalLM is not supported", file=sys.stderr)
    sys.exit(1)
open(out, "w").write(json.dumps({"gguf": gguf.__file__, "args": sys.argv[1:]}))
"""


def fake_sdist(version: str = "9.9.9") -> tuple[str, bytes]:
    root = f"llama_cpp_python-{version}/vendor/llama.cpp"
    files = {
        f"{root}/convert_hf_to_gguf.py": FAKE_SCRIPT.encode(),
        f"{root}/conversion/__init__.py": b"",
        f"{root}/gguf-py/gguf/__init__.py": b"VENDORED = True\n",
        f"{root}/LICENSE": b"MIT\n",
        f"{root}/ggml/src/ggml.c": b"/* not needed by the converter */\n",
        f"llama_cpp_python-{version}/setup.py": b"raise SystemExit('package code must never run')\n",
    }
    return f"llama_cpp_python-{version}.tar.gz", archive_bytes(files, "sdist")


def test_converter_is_hash_checked_extracted_once_and_run_with_its_own_gguf_py(tmp_path, monkeypatch):
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))
    filename, data = fake_sdist()
    digest = publish(tmp_path / "index", filename, data)
    use_only_index(monkeypatch, (tmp_path / "index" / "simple").as_uri())
    artifact = Artifact("llama-cpp-python", "9.9.9", "sdist", digest)

    folder = llama_converter(artifact)
    extracted = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert extracted == [
        "LICENSE",
        "conversion/__init__.py",
        "convert_hf_to_gguf.py",
        "gguf-py/gguf/__init__.py",
    ]
    manifest = json.loads((folder.parent / "manifest.json").read_text())
    assert manifest["artifact"]["sha256"] == digest and manifest["source"]["files"] == 4

    use_only_index(monkeypatch, (tmp_path / "nowhere").as_uri())  # the second use needs no index
    assert llama_converter(artifact) == folder
    (tmp_path / "model").mkdir()
    convert_hf_to_gguf(folder, tmp_path / "model", tmp_path / "out.gguf", "bf16")
    ran = json.loads((tmp_path / "out.gguf").read_text())
    assert ran["gguf"] == str(folder / "gguf-py" / "gguf" / "__init__.py")
    assert ran["args"][-2:] == ["--outtype", "bf16"]
    assert llama_converter(artifact) == folder  # running it wrote nothing beside the sources (no .pyc)


def test_converter_with_a_wrong_hash_is_refused_before_extraction(tmp_path, monkeypatch):
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))
    filename, data = fake_sdist()
    publish(tmp_path / "index", filename, data)
    use_only_index(monkeypatch, (tmp_path / "index" / "simple").as_uri())
    with pytest.raises(SourceError, match="sha256"):
        llama_converter(Artifact("llama-cpp-python", "9.9.9", "sdist", "0" * 64))
    assert not (tmp_path / "home" / "tools" / "llama-cpp-python-9.9.9").exists()
    assert not list((tmp_path / "home" / "archives").rglob("*.tar.gz"))


def test_a_changed_converter_file_is_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))
    filename, data = fake_sdist()
    digest = publish(tmp_path / "index", filename, data)
    use_only_index(monkeypatch, (tmp_path / "index" / "simple").as_uri())
    artifact = Artifact("llama-cpp-python", "9.9.9", "sdist", digest)
    folder = llama_converter(artifact)
    (folder / "convert_hf_to_gguf.py").write_text("print('changed')\n")
    with pytest.raises(SourceError, match="changed since they were extracted"):
        llama_converter(artifact)


def test_a_converter_refusal_is_reported_with_its_own_words(tmp_path, monkeypatch):
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))
    filename, data = fake_sdist()
    digest = publish(tmp_path / "index", filename, data)
    use_only_index(monkeypatch, (tmp_path / "index" / "simple").as_uri())
    folder = llama_converter(Artifact("llama-cpp-python", "9.9.9", "sdist", digest))
    (tmp_path / "refuse").mkdir()
    with pytest.raises(LmadaptError, match="Model FooForCausalLM is not supported") as info:
        convert_hf_to_gguf(folder, tmp_path / "refuse", tmp_path / "out.gguf", "f16")
    assert "INFO" not in str(info.value)
    assert not (tmp_path / "out.gguf").exists()
