"""`model: path/to/file.gguf`: a local GGUF file is dequantized once into the cache, keyed by its sha256.

The GGUF files are written here with the `gguf` package from a tiny random Llama (tests/tiny_lm.py), laid
out as llama.cpp's converter lays one out (q/k rows permuted for its rotary layout), so transformers' real
GGUF loader reads them and the converted folder must reproduce the original model's logits. No network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lmadapt.errors import SourceError
from lmadapt.sources import convert_model, gguf_file, read_manifest, resolve_model
from lmadapt.utils.io import sha256_file
from tiny_lm import CHATML, tiny_llama, tiny_tokenizer

PROMPT = "the cat sat on the mat"


def _llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute`: HF q/k rows -> GGUF's rotary layout."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_tiny_gguf(path: Path, seed: int = 0, architecture: str = "llama"):
    """Write a tiny random Llama and its byte-level BPE tokenizer (with a chat template) as a GGUF file.

    Returns the HF model it was made from. `architecture` other than llama writes the same tensors under
    another architecture name (one transformers' GGUF loader does not read).
    """
    import gguf

    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer, seed)
    cfg = model.config
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    specials = set(tokenizer.all_special_tokens)

    writer = gguf.GGUFWriter(path, architecture)
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t in specials else 1 for t, _ in vocab])  # 3: control, 1: normal
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(CHATML)

    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        layer = f"model.layers.{i}."
        tensors = {
            "attn_norm": state[layer + "input_layernorm.weight"],
            "attn_q": _llama_cpp_permute(state[layer + "self_attn.q_proj.weight"], heads),
            "attn_k": _llama_cpp_permute(state[layer + "self_attn.k_proj.weight"], kv_heads),
            "attn_v": state[layer + "self_attn.v_proj.weight"],
            "attn_output": state[layer + "self_attn.o_proj.weight"],
            "ffn_norm": state[layer + "post_attention_layernorm.weight"],
            "ffn_gate": state[layer + "mlp.gate_proj.weight"],
            "ffn_up": state[layer + "mlp.up_proj.weight"],
            "ffn_down": state[layer + "mlp.down_proj.weight"],
        }
        for name, tensor in tensors.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", tensor)
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, tokenizer


@pytest.fixture()
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("LMADAPT_HOME", str(path))
    return path


@pytest.fixture()
def conversions(monkeypatch):
    """Counts real conversions (the real converter still runs)."""
    calls: list[Path] = []
    real = convert_model.gguf_to_safetensors

    def counting(gguf: Path, out: Path) -> dict:
        calls.append(gguf)
        return real(gguf, out)

    monkeypatch.setattr(convert_model, "gguf_to_safetensors", counting)
    return calls


def _logits(folder: str | Path, text: str = PROMPT) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_a_gguf_path_converts_once_into_the_cache_keyed_by_its_sha256(home, tmp_path, conversions):
    gguf = tmp_path / "models" / "tiny.gguf"
    gguf.parent.mkdir()
    original, tokenizer = write_tiny_gguf(gguf)
    digest = sha256_file(gguf)

    folder = Path(resolve_model(str(gguf)))
    assert folder == home / "models" / f"gguf-{digest}"
    assert len(conversions) == 1
    manifest = read_manifest(folder)
    assert manifest["source"] == {"file": str(gguf.resolve()), "sha256": digest, "bytes": gguf.stat().st_size}
    assert manifest["gguf_architecture"] == "llama" and manifest["architecture"] == "LlamaForCausalLM"
    assert manifest["greedy_check"]["same_tokens"] is True  # the catalog's check against the GGUF load ran
    assert manifest["files"]["model.safetensors"] == sha256_file(folder / "model.safetensors")
    assert not list(folder.rglob("*.gguf"))  # the converted folder does not keep the model twice
    # the converted folder is the model the GGUF was written from: same tokens, same logits
    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        want = original(**ids).logits
    assert torch.allclose(_logits(folder), want, atol=1e-5)

    # the same file again, and a copy of it elsewhere under another name: no second conversion
    assert resolve_model(str(gguf)) == str(folder)
    copy = tmp_path / "elsewhere" / "renamed.GGUF"
    copy.parent.mkdir()
    copy.write_bytes(gguf.read_bytes())
    gguf_file._digests.clear()  # a new process: the digest is computed again from the file
    assert resolve_model(str(copy)) == str(folder)
    assert len(conversions) == 1


def test_an_edited_file_is_converted_again(home, tmp_path, conversions):
    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf, seed=0)
    first = Path(resolve_model(str(gguf)))
    write_tiny_gguf(gguf, seed=1)  # edited in place: same path, other weights
    second = Path(resolve_model(str(gguf)))
    assert second != first and second.name == f"gguf-{sha256_file(gguf)}"
    assert len(conversions) == 2
    assert first.is_dir() and second.is_dir()
    assert not torch.allclose(_logits(first), _logits(second))


def test_a_killed_conversion_leaves_nothing_that_is_reused(home, tmp_path, monkeypatch, conversions):
    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf)

    def killed(gguf: Path, out: Path) -> dict:
        (out / "config.json").write_text("{}")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_model, "gguf_to_safetensors", killed)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(str(gguf))
    assert not (home / "models" / f"gguf-{sha256_file(gguf)}").exists()
    assert not [p for p in (home / "models").iterdir() if not p.name.startswith(".")]

    # what a SIGKILL mid-conversion can leave: a hidden temporary folder, and (copied by hand, say) a
    # folder under the final name without a manifest; neither is taken for a conversion
    name = f"gguf-{sha256_file(gguf)}"
    stale = home / "models" / f".{name}.x1y2.tmp" / name
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    (home / "models" / name).mkdir()
    (home / "models" / name / "config.json").write_text("{}")
    monkeypatch.undo()  # the real converter again
    monkeypatch.setenv("LMADAPT_HOME", str(home))
    folder = Path(resolve_model(str(gguf)))
    assert folder.name == name and read_manifest(folder) is not None
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
    assert not stale.parent.exists()


def test_a_gguf_model_generates_like_its_converted_folder(home, tmp_path):
    from lmadapt.infer.engine import load_engine

    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf)
    prompts = [[{"role": "user", "content": "hello how are you"}]]
    by_file = load_engine(str(gguf), dtype="float32").generate(prompts, max_new_tokens=6)
    by_folder = load_engine(resolve_model(str(gguf)), dtype="float32").generate(prompts, max_new_tokens=6)
    assert by_file == by_folder and by_file[0]


# ---------------------------------------------------------------- clear errors, exit code 2


def _cli(*args: str):
    from lmadapt.cli import app

    return CliRunner().invoke(app, list(args))


def _generate(model: str, tmp_path: Path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hello"}) + "\n")
    return _cli("generate", model, "--input", str(prompts), "--output", str(tmp_path / "out.jsonl"))


def _one_line(output: str) -> str:
    return " ".join(output.split())  # rich wraps long messages


def test_a_missing_gguf_file_is_a_clear_error(home, tmp_path):
    missing = tmp_path / "no" / "such.gguf"
    with pytest.raises(SourceError, match=r"model file '.*no/such\.gguf' does not exist"):
        resolve_model(str(missing))
    result = _generate(str(missing), tmp_path)
    assert result.exit_code == 2, result.output
    assert "such.gguf' does not exist" in _one_line(result.output)
    assert "Traceback" not in result.output


def test_a_file_that_is_not_gguf_is_a_clear_error(home, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf at all")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\x80\x02}q\x00.")
    for path in (fake, other):
        with pytest.raises(SourceError, match=rf"{path.name}: not a GGUF file"):
            resolve_model(str(path))
    result = _generate(str(fake), tmp_path)
    assert result.exit_code == 2, result.output
    assert f"{fake}: not a GGUF file" in _one_line(result.output)
    assert not (home / "models").exists() or not any((home / "models").iterdir())


def test_an_architecture_transformers_cannot_read_is_a_clear_error(home, tmp_path, conversions):
    gguf = tmp_path / "rwkv.gguf"
    write_tiny_gguf(gguf, architecture="rwkv6")
    with pytest.raises(SourceError) as err:
        resolve_model(str(gguf))
    assert str(err.value).startswith(f"{gguf}: GGUF architecture 'rwkv6' is not one transformers ")
    assert "(it reads " in str(err.value) and "llama" in str(err.value)
    assert conversions == []
    assert not (home / "models" / f"gguf-{sha256_file(gguf)}").exists()
    result = _generate(str(gguf), tmp_path)
    assert result.exit_code == 2, result.output
    assert "GGUF architecture 'rwkv6' is not one transformers" in _one_line(result.output)
    assert "rwkv.gguf" in result.output and "Traceback" not in result.output


def test_a_truncated_gguf_file_is_a_clear_error_and_nothing_is_cached(home, tmp_path):
    whole = tmp_path / "whole.gguf"
    write_tiny_gguf(whole)
    data = whole.read_bytes()
    header_cut, tensors_cut = tmp_path / "header-cut.gguf", tmp_path / "tensors-cut.gguf"
    header_cut.write_bytes(data[:200])
    tensors_cut.write_bytes(data[:-5000])  # an interrupted download
    with pytest.raises(SourceError, match=r"header-cut\.gguf: the GGUF header cannot be read"):
        resolve_model(str(header_cut))
    with pytest.raises(SourceError, match=r"tensors-cut\.gguf: transformers .* cannot read this llama file"):
        resolve_model(str(tensors_cut))
    assert not [p for p in (home / "models").iterdir() if p.name.startswith("gguf-")]


def test_a_gguf_file_as_recipe_model_trains_like_the_folder_it_was_written_from(home, tmp_path, conversions):
    import yaml

    from tiny_lm import save_tiny

    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf)
    folder = save_tiny(tmp_path / "tiny-hf")  # the same model (seed 0) as a plain Hugging Face folder
    pairs = [("what is the capital of france?", "paris"), ("hello how are you today?", "fine, thank you")]
    train = tmp_path / "train.jsonl"
    train.write_text(
        "".join(json.dumps({"instruction": i, "input": "", "output": o}) + "\n" for i, o in pairs)
    )
    metrics = {}
    for name, model in (("gguf", gguf), ("folder", folder)):
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(
            yaml.safe_dump(
                {
                    "model": str(model),
                    "task": {"type": "sft"},
                    "data": {"train": str(train), "eval": str(train), "test": None},
                    "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target": "all-linear"},
                    "stage": "sft",
                    "train": {
                        "max_steps": 3,
                        "lr": 1e-2,
                        "batch_size": 2,
                        "max_length": 48,
                        "num_threads": 1,
                    },
                    "eval": {"every": "no"},
                    "output": str(tmp_path / f"run-{name}"),
                }
            )
        )
        result = _cli("train", str(recipe))
        assert result.exit_code == 0, result.output
        metrics[name] = json.loads((tmp_path / f"run-{name}" / "metrics.json").read_text())["final"]["eval"]
    assert metrics["gguf"]["loss"] < metrics["gguf"]["loss_before"]
    assert metrics["gguf"]["loss_before"] == pytest.approx(metrics["folder"]["loss_before"], abs=1e-5)
    assert metrics["gguf"]["loss"] == pytest.approx(metrics["folder"]["loss"], abs=1e-4)
    # the run folder names the .gguf file; generating from it finds the cached conversion
    assert yaml.safe_load((tmp_path / "run-gguf" / "config.yaml").read_text())["model"]["name"] == str(gguf)
    assert _generate(str(tmp_path / "run-gguf"), tmp_path).exit_code == 0
    assert len(conversions) == 1


def test_a_gguf_file_as_finetune_model_trains_a_classifier_and_predicts(home, tmp_path, conversions):
    import yaml

    records = [
        {"id": str(i), "text": text, "label": label}
        for i, (text, label) in enumerate(
            [("the cat sat on the mat", "animal"), ("one two three four", "number"),
             ("the dog sat on the log", "animal"), ("five six seven eight", "number")] * 2
        )
    ]  # fmt: skip
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf)
    recipe = tmp_path / "finetune.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": str(gguf),
                "task": {"type": "classify", "text": ["text"], "label": "label"},
                "data": {"train": str(data), "eval": str(data), "test": None},
                "method": {"type": "full"},
                "stage": "finetune",
                "train": {"max_steps": 3, "lr": 1e-3, "batch_size": 4, "max_length": 16, "num_threads": 1},
                "eval": {"every": "no"},
                "output": str(tmp_path / "run"),
            }
        )
    )
    trained = _cli("train", str(recipe))
    assert trained.exit_code == 0, trained.output
    predicted = _cli(
        "predict", str(tmp_path / "run"), "--input", str(data), "--output", str(tmp_path / "p.jsonl")
    )
    assert predicted.exit_code == 0, predicted.output
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == len(records) and {r["prediction"] for r in rows} <= {"animal", "number"}
    assert len(conversions) == 1  # train and predict share the one conversion
