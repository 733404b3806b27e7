"""Adaptation methods on tiny random models: what trains, what stays frozen, save/reload, bad combinations."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    GPT2Config,
    LlamaConfig,
)

from lmadapt.errors import RecipeError
from lmadapt.methods import (
    METHODS,
    apply_method,
    check_method,
    count_parameters,
    load_trained,
    merge_and_export,
    save_trained,
)
from lmadapt.methods.adapter import AdapterMethod
from lmadapt.methods.freeze import FreezeMethod
from lmadapt.methods.full import FullMethod
from lmadapt.methods.ia3 import Ia3Method
from lmadapt.methods.lora import LoraMethod
from lmadapt.methods.prefix import PrefixMethod
from lmadapt.methods.prompt import PromptMethod
from lmadapt.methods.ptuning import PtuningMethod
from lmadapt.methods.tfidf import TfidfMethod

NUM_LABELS = 3
SEQ = 8
AUTO = {
    "seq_cls": AutoModelForSequenceClassification,
    "token_cls": AutoModelForTokenClassification,
    "span": AutoModelForQuestionAnswering,
    "causal_lm": AutoModelForCausalLM,
    "masked_lm": AutoModelForMaskedLM,
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and the CPU is shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(arch: str):
    if arch == "bert":
        return BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=NUM_LABELS,
        )
    return LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
        num_labels=NUM_LABELS,
    )


def build(arch: str, task_type: str, seed: int = 0):
    config = tiny_config(arch)
    if task_type == "span":
        config.num_labels = 2  # start and end logits
    torch.manual_seed(seed)
    return AUTO[task_type].from_config(config)


def batch(task_type: str) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 100, (2, SEQ), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if task_type == "seq_cls":
        out["labels"] = torch.tensor([0, 2])
    elif task_type == "token_cls":
        out["labels"] = torch.randint(0, NUM_LABELS, (2, SEQ), generator=g)
    elif task_type == "span":
        out["start_positions"], out["end_positions"] = torch.tensor([1, 2]), torch.tensor([3, 5])
    else:
        out["labels"] = ids
    return out


def logits(model, task_type: str) -> torch.Tensor:
    inputs = {k: v for k, v in batch(task_type).items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        out = model(**inputs)
    return torch.cat([out.start_logits, out.end_logits]) if task_type == "span" else out.logits


def train_steps(model, task_type: str, steps: int = 3) -> None:
    # Adam without weight decay: a parameter with no gradient stays bit-identical.
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    for _ in range(steps):  # >1 step: zero-initialised LoRA B / adapter up-projections block grads at first
        opt.zero_grad()
        model(**batch(task_type)).loss.backward()
        opt.step()


HEAD = {"seq_cls": "classifier", "token_cls": "classifier", "span": "qa_outputs"}

METHOD_CFGS = {
    "full": FullMethod(),
    "freeze": FreezeMethod(head_hidden=16),
    "lora": LoraMethod(r=2),
    "adapter": AdapterMethod(bottleneck=4),
    "prefix": PrefixMethod(num_virtual_tokens=3),
    "prompt": PromptMethod(num_virtual_tokens=3),
    "ptuning": PtuningMethod(num_virtual_tokens=3, encoder_hidden_size=8),
    "ia3": Ia3Method(),
}
LM_CFGS = METHOD_CFGS | {"freeze": FreezeMethod(unfreeze_top=1)}

# name fragments of the parameters each method adds or trains (besides the task head)
TRAINS = {
    "lora": ("lora_",),
    "adapter": (".adapter.",),
    "prefix": ("prompt_encoder",),
    "prompt": ("prompt_encoder",),
    "ptuning": ("prompt_encoder",),
    "ia3": ("ia3_",),
}

CASES = [("bert", t, m) for t in ("seq_cls", "token_cls", "span") for m in METHOD_CFGS] + [
    ("llama", t, m) for t in ("causal_lm", "seq_cls") for m in METHOD_CFGS
]


def supported(task_type: str, method: str) -> bool:
    return task_type in METHODS[method].tasks


def test_registry_has_every_method():
    assert set(METHODS) == {"full", "freeze", "lora", "adapter", "prefix", "prompt", "ptuning", "ia3"}


@pytest.mark.parametrize(("arch", "task_type", "method"), [c for c in CASES if supported(c[1], c[2])])
def test_trains_exactly_what_it_should_and_reloads(arch, task_type, method, tmp_path):
    cfg = (LM_CFGS if task_type == "causal_lm" else METHOD_CFGS)[method]
    model = apply_method(build(arch, task_type), cfg, task_type)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"

    # the right parameters are the trainable ones
    head = HEAD.get(task_type if arch == "bert" else "", "score" if task_type == "seq_cls" else None)
    if method == "full":
        assert trainable == set(before)
    elif method == "freeze" and task_type == "causal_lm":
        assert all(".layers.1." in n or n.startswith("model.norm.") for n in trainable), trainable
        assert any(n.startswith("model.norm.") for n in trainable)
    elif method == "freeze":
        assert all(n.startswith(f"{head}.") for n in trainable), trainable
        n_head = count_parameters(getattr(model, head))[0]
        hidden = 32
        out = 2 if task_type == "span" else NUM_LABELS
        assert n_head == hidden * 16 + 16 + 16 * out + out  # the MLP head hidden -> 16 -> labels
        assert count_parameters(model)[0] == n_head
    else:
        extra = () if not head else (f"{head}.",) if method == "adapter" else ("modules_to_save",)
        assert all(any(f in n for f in TRAINS[method] + extra) for n in trainable), trainable
        if head:  # the task head trains (a saved copy for PEFT methods)
            assert any(head in n and ("modules_to_save" in n or method == "adapter") for n in trainable)

    train_steps(model, task_type)
    for name, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        assert changed == (name in trainable), f"{name}: trainable={name in trainable}, changed={changed}"

    # reload on a fresh base model gives the same outputs
    model.eval()
    expected = logits(model, task_type)
    out_dir = save_trained(model, cfg, tmp_path)
    assert out_dir.name == (
        "adapter" if method in ("lora", "prefix", "prompt", "ptuning", "ia3") else "model"
    )
    assert list(out_dir.glob("*.safetensors")) and not list(out_dir.glob("*.bin"))
    reloaded = load_trained(build(arch, task_type), cfg, tmp_path, task_type)
    torch.testing.assert_close(logits(reloaded, task_type), expected)


@pytest.mark.parametrize(
    ("arch", "task_type", "method"),
    [c for c in CASES if not supported(c[1], c[2])] + [("bert", "masked_lm", "prefix")],
)
def test_unsupported_task_is_a_recipe_error(arch, task_type, method):
    with pytest.raises(RecipeError, match=f"method '{method}'.*{task_type}"):
        apply_method(build(arch, task_type), METHOD_CFGS[method], task_type)


@pytest.mark.parametrize(
    ("arch", "task_type", "cfg", "pattern"),
    [
        ("llama", "causal_lm", FreezeMethod(unfreeze_top=0), "method 'freeze'.*unfreeze_top must be >= 1"),
        ("bert", "seq_cls", FreezeMethod(unfreeze_top=3), "method 'freeze'.*only 2 layers"),
        ("bert", "seq_cls", Ia3Method(target=["nonexistent"]), "method 'ia3'.*nonexistent"),
        ("bert", "seq_cls", Ia3Method(target=["key"], feedforward=["value"]), "method 'ia3'.*value"),
        ("bert", "seq_cls", LoraMethod(target=["q_proj"]), "method 'lora'.*q_proj"),
        ("bert", "seq_cls", PromptMethod(init_text="hello"), "method 'prompt'.*tokenizer"),
        ("bert", "seq_cls", TfidfMethod(), "method 'tfidf'"),
    ],
)
def test_bad_combination_is_a_recipe_error(arch, task_type, cfg, pattern):
    with pytest.raises(RecipeError, match=pattern):
        apply_method(build(arch, task_type), cfg, task_type)


def test_adapter_on_unknown_architecture_is_a_recipe_error():
    torch.manual_seed(0)
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2))
    with pytest.raises(RecipeError, match="method 'adapter'.*no known layout"):
        apply_method(gpt2, AdapterMethod(), "causal_lm")


def test_check_method_needs_no_model():
    assert check_method(LoraMethod(), "causal_lm").name == "lora"
    with pytest.raises(RecipeError, match="method 'ptuning' cannot be used for span"):
        check_method(PtuningMethod(), "span")


def test_freeze_unfreeze_top_adds_the_top_layer_only():
    model = apply_method(build("bert", "seq_cls"), FreezeMethod(unfreeze_top=1, head_hidden=16), "seq_cls")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("bert.encoder.layer.1.") for n in trainable)
    assert not any(n.startswith(("bert.encoder.layer.0.", "bert.embeddings.")) for n in trainable)


def test_adapter_starts_as_identity():
    base = build("llama", "causal_lm")
    expected = logits(base, "causal_lm")
    adapted = apply_method(base, AdapterMethod(bottleneck=4), "causal_lm")
    torch.testing.assert_close(logits(adapted, "causal_lm"), expected)
    sites = [n for n, m in adapted.named_modules() if n.endswith((".o_proj", ".down_proj"))]
    assert len(sites) == 4 and all(hasattr(adapted.get_submodule(n), "adapter") for n in sites)


def test_lora_merge_and_export_matches_adapter_model(tmp_path):
    model = apply_method(build("llama", "causal_lm"), LoraMethod(r=2), "causal_lm")
    train_steps(model, "causal_lm")
    model.eval()
    expected = logits(model, "causal_lm")
    out = merge_and_export(model, tmp_path / "merged")
    assert (out / "model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(logits(merged, "causal_lm"), expected, atol=1e-5, rtol=1e-4)


def test_prompt_cannot_be_merged(tmp_path):
    model = apply_method(build("llama", "causal_lm"), PromptMethod(num_virtual_tokens=2), "causal_lm")
    with pytest.raises(RecipeError, match="cannot be merged"):
        merge_and_export(model, tmp_path / "merged")


def test_prompt_init_text_uses_the_model_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        tmp_path
    )
    build("llama", "causal_lm").save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    embed = model.get_input_embeddings().weight.detach().clone()
    peft_model = apply_method(model, PromptMethod(num_virtual_tokens=2, init_text="hello world"), "causal_lm")
    prompt = peft_model.prompt_encoder["default"].embedding.weight.detach()
    torch.testing.assert_close(prompt, embed[[2, 3]])


def test_count_parameters_counts_tied_weights_once():
    config = tiny_config("llama")
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    trainable, total = count_parameters(model)
    assert trainable == total == sum(p.numel() for p in model.parameters())
    assert total < sum(p.numel() for p in model.state_dict().values())


# --- the real encoder ------------------------------------------------------------------------------------
# trainable parameters of each method on minilm-l6 (22.7M) for 2 labels, measured by count_parameters
MINILM_TRAINABLE = {
    "full": 22_713_986,
    "freeze": 198_146,  # MLP head only: 384*512+512 + 512*2+2
    "lora": 74_498,
    "adapter": 595_970,
    "prefix": 92_930,
    "prompt": 8_450,
    "ptuning": 123_778,
    "ia3": 16_898,
}


@pytest.mark.integration
def test_minilm_trainable_counts_and_prompt_init_reload(tmp_path):
    from transformers import AutoTokenizer

    from lmadapt.sources import resolve_model

    folder = resolve_model("minilm-l6")
    defaults = {name: type(cfg)() for name, cfg in METHOD_CFGS.items()}
    for name, cfg in defaults.items():
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        trainable, _ = count_parameters(apply_method(model, cfg, "seq_cls"))
        assert trainable == MINILM_TRAINABLE[name], name

    # a soft prompt initialised from real text trains, saves and reloads to the same logits
    cfg = PromptMethod(num_virtual_tokens=8, init_text="Is this paper about humans or animals?")
    enc = AutoTokenizer.from_pretrained(folder)(
        ["Aspirin in elderly patients.", "Dopamine release in the rat striatum."],
        padding=True,
        return_tensors="pt",
    )
    model = apply_method(
        AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2), cfg, "seq_cls"
    )
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        model(**enc, labels=torch.tensor([0, 1])).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        expected = model(**enc).logits
    save_trained(model, cfg, tmp_path)
    base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    reloaded = load_trained(base, cfg, tmp_path, "seq_cls")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**enc).logits, expected)


def test_freeze_mean_pooling_ignores_padding_and_differs_from_cls():
    """The freeze head reads the masked mean of token states: padding must not change a prediction."""
    from lmadapt.methods.freeze import FreezeMethod

    model = apply_method(build("bert", "seq_cls"), FreezeMethod(), "seq_cls").eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[5, 6, 7, 8, 0, 0]])
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        with_pad = model(input_ids=padded, attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]])).logits
    torch.testing.assert_close(plain, with_pad, rtol=1e-5, atol=1e-5)

    cls_model = apply_method(build("bert", "seq_cls"), FreezeMethod(pooling="cls"), "seq_cls").eval()
    assert type(cls_model.base_model.pooler).__name__ == "BertPooler"
    assert type(model.base_model.pooler).__name__ == "MeanPooler"
    # Numerically: the same backbone (same seed), but the head reads the mean of the 4 real token states
    # (by hand), not BERT's pooler over [CLS]; the two pooled vectors, and so the logits, differ.
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        mean_out = model.base_model(input_ids=padded, attention_mask=mask)
        cls_out = cls_model.base_model(input_ids=padded, attention_mask=mask)
        cls_logits = cls_model(input_ids=padded, attention_mask=mask).logits
        states = mean_out.last_hidden_state[0, :4]
        bert_pooler = cls_model.base_model.pooler
        by_hand_cls = bert_pooler.activation(bert_pooler.dense(cls_out.last_hidden_state[:, 0]))
        by_hand_logits = model.classifier(states.mean(0, keepdim=True))
    torch.testing.assert_close(cls_out.last_hidden_state, mean_out.last_hidden_state)
    torch.testing.assert_close(mean_out.pooler_output[0], states.mean(0))
    torch.testing.assert_close(cls_out.pooler_output, by_hand_cls)
    torch.testing.assert_close(with_pad, by_hand_logits)
    assert (mean_out.pooler_output - cls_out.pooler_output).abs().max() > 0.1
    assert (with_pad - cls_logits).abs().max() > 1e-2
