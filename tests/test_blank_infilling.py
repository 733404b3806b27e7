"""GLM blank infilling (task.objective blank_infilling): the corrupter's examples, the attention mask as the
model sees it (checked by perturbing tokens), and a short pretrain run on a tiny random Llama."""

from __future__ import annotations

import json
import random

import pytest
import torch

from lmadapt.config import parse_recipe
from lmadapt.errors import RecipeError
from lmadapt.training.blank_infilling import (
    BLOCK_POSITIONS,
    END,
    IGNORE,
    MASK,
    SIDECAR,
    START,
    BlankInfiller,
    blank_logits,
    block_width,
    pad_examples,
    prepare_model,
    special_token_ids,
)
from lmadapt.utils.io import write_jsonl
from tiny_lm import SENTENCES, save_tiny, tiny_llama, tiny_tokenizer

IDS = {MASK: 1000, START: 1001, END: 1002}


def infiller(seed=0, density=0.15, lam=3.0):
    return BlankInfiller(IDS, 0, density, lam, seed)


def spans_of(feature):
    """Part B's spans, in order: (position of their [MASK], tokens)."""
    a = feature["part_a_length"]
    ids, pos1 = feature["input_ids"][a:], feature["position_ids"][a:]
    out, k = [], 0
    while k < len(ids):
        assert ids[k] == IDS[START]
        end = k + 1
        while end < len(ids) and ids[end] != IDS[START]:
            end += 1
        out.append((pos1[k], ids[k + 1 : end]))
        k = end
    return out


# --- the corrupter ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [2, 7, 24, 60, 200])
def test_every_span_appears_once_in_part_b_and_the_block_is_recovered(length):
    rng = random.Random(length)
    corrupter = infiller(seed=length)
    masked = total = 0
    for _ in range(50):
        block = [rng.randrange(10, 900) for _ in range(length)]
        f = corrupter.feature(block)
        a = f["part_a_length"]
        n = len(f["input_ids"])
        assert all(len(f[k]) == n for k in ("labels", "position_ids", "block_position_ids"))
        spans = spans_of(f)
        part_a = f["input_ids"][:a]
        # one [MASK] per span, each span once in Part B, pointing at its own [MASK]
        assert part_a.count(IDS[MASK]) == len(spans) >= 1
        assert sorted(p for p, _ in spans) == [i for i, t in enumerate(part_a) if t == IDS[MASK]]
        assert n == length + 2 * len(spans)
        # filling each [MASK] with its span gives back the block
        filled = {p: toks for p, toks in spans}
        rebuilt = [t for i, t in enumerate(part_a) for t in (filled[i] if t == IDS[MASK] else [t])]
        assert rebuilt == block
        assert all(len(toks) >= 1 for _, toks in spans)
        assert all(part_a[i + 1] != IDS[MASK] for i in filled if i + 1 < a)  # spans never adjacent
        # labels: none on Part A; on Part B the next token of the span, then [END]
        assert f["labels"][:a] == [IGNORE] * a
        expected = [t for _, toks in spans for t in (*toks, IDS[END])]
        assert f["labels"][a:] == expected
        # positions: Part A 0.., position 2 zero; Part B position 2 counts 1..len+1 within each span
        assert f["position_ids"][:a] == list(range(a)) and f["block_position_ids"][:a] == [0] * a
        assert f["block_position_ids"][a:] == [k for _, toks in spans for k in range(1, len(toks) + 2)]
        masked += sum(len(toks) for _, toks in spans)
        total += length
    assert masked / total == pytest.approx(0.15, abs=0.05 if length >= 24 else 0.4)


def test_span_lengths_follow_poisson_and_order_is_random():
    corrupter = infiller(seed=1, density=0.3, lam=3.0)
    lengths, firsts_in_order = [], 0
    for _ in range(200):
        spans = spans_of(corrupter.feature(list(range(10, 410))))
        lengths += [len(t) for _, t in spans]
        firsts_in_order += [p for p, _ in spans] == sorted(p for p, _ in spans)
    assert 2.6 < sum(lengths) / len(lengths) < 3.6  # Poisson(3) clipped to >= 1 (the last one cut)
    assert firsts_in_order == 0  # 30+ spans a block: never all in text order


def test_blocks_fit_max_length_and_seeded_corruption_repeats():
    for max_length in (16, 32, 100, 512):
        width = block_width(max_length, 0.15)
        corrupter = infiller(seed=max_length)
        assert all(len(corrupter.feature(list(range(width)))["input_ids"]) <= max_length for _ in range(30))
    block = list(range(40))
    assert infiller(seed=3).feature(block) == infiller(seed=3).feature(block)


# --- the mask, as the model sees it -------------------------------------------------------------------------
def prepared(kind: str, attention: str):
    tok = tiny_tokenizer()
    if kind == "llama":
        model = tiny_llama(tok)
    else:
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        torch.manual_seed(0)
        config = Gemma3TextConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=64,
            pad_token_id=tok.pad_token_id, initializer_range=0.2,
        )  # fmt: skip
        model = Gemma3ForCausalLM(config).eval()
    model.set_attn_implementation(attention)
    prepare_model(model, tok, 64, None, kind)
    with torch.no_grad():  # a non-zero block-position embedding, so it takes part in what is checked
        getattr(model, BLOCK_POSITIONS).weight.normal_(0, 0.5)
    return model.eval(), tok


@pytest.mark.parametrize(("kind", "attention"), [("llama", "sdpa"), ("llama", "eager"), ("gemma3", "sdpa")])
def test_part_a_is_bidirectional_part_b_causal_and_padding_unseen(kind, attention):
    model, tok = prepared(kind, attention)
    corrupter = BlankInfiller(special_token_ids(tok), tok.pad_token_id, 0.3, 2.0, seed=0)
    long, short = corrupter.feature(list(range(10, 40))), corrupter.feature(list(range(50, 62)))
    batch = pad_examples([long, short], tok.pad_token_id)
    a, n = long["part_a_length"], len(long["input_ids"])

    def changed_by(row: int, position: int) -> torch.Tensor:
        """Which positions' logits of `row` change when the token at `position` does."""
        with torch.no_grad():
            base = blank_logits(model, batch)[row]
            ids = batch["input_ids"].clone()
            ids[row, position] = (ids[row, position] + 7) % 300 + 10
            other = blank_logits(model, batch | {"input_ids": ids})[row]
        return (other - base).abs().amax(-1) > 1e-5

    # a Part A token: every position sees it (Part A both ways, Part B too)
    assert changed_by(0, 0)[:n].all() and changed_by(0, a - 1)[:n].all()
    # a Part B token: Part A and the Part B tokens before it do not see it; it and those after it do
    for b in (a, a + 2, n - 1):
        seen = changed_by(0, b)
        assert not seen[:b].any(), (b, seen)
        assert seen[b:n].all(), (b, seen)
    # padding (the short row's tail) is seen by none of its real tokens
    short_n = len(short["input_ids"])
    assert short_n < n and not changed_by(1, n - 1)[:short_n].any()


def test_zero_block_positions_leave_the_model_unchanged():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    prepare_model(model, tok, 16, None, "tiny")
    assert not getattr(model, BLOCK_POSITIONS).weight.any()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        batch = {
            "input_ids": ids, "attention_mask": torch.ones_like(ids), "position_ids": torch.arange(4)[None],
            "block_position_ids": torch.tensor([[0, 0, 1, 2]]), "part_a_length": torch.tensor([0]),
        }  # fmt: skip
        assert torch.allclose(blank_logits(model, batch), plain, atol=1e-5)  # Part A empty: plain causal


def test_a_model_that_ignores_the_mask_is_a_recipe_error_naming_its_type():
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2)).eval()
    model.set_attn_implementation("sdpa")  # GPT-2's SDPA path keeps its own causal mask
    with pytest.raises(RecipeError, match=r"gpt2.*custom 4-D attention mask"):
        prepare_model(model, tok, 16, None, "tiny-gpt2")


# --- the stage --------------------------------------------------------------------------------------------
def corpus_files(tmp_path) -> dict:
    rng = random.Random(0)
    out = {}
    for name, n in (("train", 80), ("eval", 12)):
        docs = [" ".join(SENTENCES[(k + s) % len(SENTENCES)] for s in range(2)) for k in range(n)]
        rng.shuffle(docs)
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": d} for d in docs])
        out[name] = str(tmp_path / f"{name}.jsonl")
    return out


def recipe(tmp_path, model: str, method=None, output="run", **train):
    return {
        "model": model,
        "task": {"type": "lm", "objective": "blank_infilling"},
        "data": corpus_files(tmp_path) | {"test": None},
        "method": method or {"type": "full"},
        "stage": "pretrain",
        "train": {"max_steps": 40, "lr": 1e-2, "batch_size": 8, "max_length": 48, "seed": 0}
        | {"num_threads": 1, "logging_steps": 10}
        | train,
        "eval": {"every": "no"},
        "output": str(tmp_path / output),
    }


def test_pretrain_lowers_the_blank_loss_and_saves_a_causal_lm_that_reloads(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmadapt.stages import run_stage
    from lmadapt.stages.pretrain import load_model

    base = str(save_tiny(tmp_path / "tiny"))
    run = run_stage(parse_recipe(recipe(tmp_path, base)))
    final = json.loads((run / "metrics.json").read_text())["final"]["eval"]
    assert final["blank_loss"] < 0.7 * final["blank_loss_before"]
    assert final["blank_accuracy"] > final["blank_accuracy_before"]
    log = (run / "log.txt").read_text()
    assert "added [MASK], [START], [END]" in log and "blank_block_positions.weight" in log

    tok = AutoTokenizer.from_pretrained(run / "model")
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in (MASK, START, END))
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == 403
    assert not hasattr(model, BLOCK_POSITIONS)
    assert not any(BLOCK_POSITIONS in k for k in load_file(str(run / "model" / "model.safetensors")))
    trained = load_file(str(run / "model" / SIDECAR))["weight"]
    assert trained.shape == (49, 32) and trained.abs().sum() > 0  # it trained (it starts at zero)

    # a later blank_infilling run from the saved model reloads the embedding, adds no tokens
    task = parse_recipe(recipe(tmp_path, str(run / "model"))).task
    again, tok2, fresh, _, notes = load_model(
        parse_recipe(recipe(tmp_path, str(run / "model"))).model, task, 0, 48
    )
    assert len(tok2) == 403 and not any("added" in n for n in notes)
    assert torch.equal(getattr(again, BLOCK_POSITIONS).weight.detach(), trained)


def test_lora_trains_the_block_positions_and_merges(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lmadapt.stages import run_stage

    base = str(save_tiny(tmp_path / "tiny"))
    method = {"type": "lora", "r": 4, "alpha": 8, "target": "all-linear"}
    run = run_stage(parse_recipe(recipe(tmp_path, base, method, max_steps=6)))
    assert not (run / "model" / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(run / "model")
    assert load_file(str(run / "model" / SIDECAR))["weight"].abs().sum() > 0


def test_an_unsupported_model_type_exits_2_with_a_clear_message(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    from typer.testing import CliRunner

    from lmadapt.cli import app

    tok = tiny_tokenizer()
    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2)).save_pretrained(folder)
    tok.save_pretrained(folder)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe(tmp_path, str(folder))))
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "(gpt2)" in result.output and "4-D attention mask" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_resume_after_a_crash_equals_an_uninterrupted_run_and_eval_every_runs(tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from lmadapt.stages import run_stage
    from lmadapt.stages.pretrain import run as pretrain

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise RuntimeError("killed")

    base = str(save_tiny(tmp_path / "tiny"))

    def parsed(output):
        raw = recipe(tmp_path, base, output=output, max_steps=10, save_every=4)
        return parse_recipe(raw | {"eval": {"every": 5}})

    whole = run_stage(parsed("whole"))
    history = json.loads((whole / "metrics.json").read_text())["history"]
    assert any(h["split"] == "eval" and h["loss"] > 0 for h in history)  # eval.every: the blank loss
    with pytest.raises(RuntimeError, match="killed"):
        pretrain(parsed("resumed"), callbacks=[Crash()])
    resumed = run_stage(parsed("resumed"), resume=True)
    assert "resuming from checkpoint-4" in (resumed / "log.txt").read_text()
    for name in ("model.safetensors", SIDECAR):
        a, b = load_file(str(whole / "model" / name)), load_file(str(resumed / "model" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
