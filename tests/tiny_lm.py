"""A tiny byte-level BPE tokenizer (trained on a few sentences, with a ChatML template) and tiny random Llamas,
shared by the sft / engine / template tests. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SENTENCES = [
    "the cat sat on the mat and the dog sat on the log",
    "hello how are you today? I am fine, thank you very much",
    "what is the capital of france? the capital of france is paris",
    "please extract keywords: cancer, protein, cell, mouse, human",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction: ### Response: User: Assistant: answer question system you are a helpful bot",
    "one two three four five six seven eight nine ten 1 0 yes no",
]
SPECIALS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(chat_template: str | None = CHATML):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(SENTENCES * 3, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )  # fmt: skip
    if chat_template:
        tok.chat_template = chat_template
    return tok


def tiny_llama(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False, initializer_range=0.2,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def save_tiny(folder: Path, chat_template: str | None = CHATML, seed: int = 0) -> Path:
    """Write a tiny model + tokenizer folder that `from_pretrained` (and lmadapt) can load."""
    tok = tiny_tokenizer(chat_template)
    model = tiny_llama(tok, seed)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_tiny_gemma3(folder: Path, padding_side: str | None = None, seed: int = 0) -> Path:
    """A tiny random Gemma 3 text model + the tiny tokenizer (transformers has no token-classification or QA
    class for it); `padding_side` as the saved tokenizer should have it (the catalog's gemma3 pads left)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = tiny_tokenizer()
    if padding_side:
        tok.padding_side = padding_side
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
        sliding_window=64, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
