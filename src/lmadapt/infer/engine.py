"""The one inference engine: every command that generates text (generate, chat, prompt stage, synth) uses it.

    engine = load_engine("smollm2-135m-instruct")     # catalog name, model folder, Hub id or run folder
    engine.generate(["Once upon a time"], max_new_tokens=20)               # strings are used verbatim
    engine.generate([[{"role": "user", "content": "Hi"}]], do_sample=True)  # messages get the chat template

Greedy, sampling (temperature, top-p, top-k), beam search, repetition penalty, stop strings, batched generation
with left padding (prompts sorted by length so batches pad little; results come back in input order).
Encoder-decoder models (T5 family) take the same options: the prompt goes to the encoder and transformers'
`generate` decodes (seq2seq.py); the continuous-batching loop of decode.py is for decoder-only models.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence as Seq
from pathlib import Path

from ..errors import LmadaptError
from ..templates import encode_text, render_prompt, resolve_template
from .decode import Decoding, Sequence, run_sequences
from .loading import (
    GENERATE_DTYPE,
    inference_dtype,
    is_encoder_decoder,
    lm_task_type,
    load_causal_lm,  # noqa: F401  (re-exported: the stages load through here)
    load_lm,
)
from .precision import for_generation
from .seq2seq import generate_seq2seq

__all__ = ["Engine", "load_engine", "load_causal_lm", "cut_at_stop"]


def cut_at_stop(text: str, stop: Seq[str] | None) -> str:
    """`text` up to (not including) the earliest stop string."""
    end = len(text)
    for s in stop or ():
        i = text.find(s)
        if s and i >= 0:
            end = min(end, i)
    return text[:end]


class Engine:
    """A generative LM (decoder-only or encoder-decoder), its tokenizer and the template for chat messages."""

    def __init__(self, model, tokenizer, template: str = "auto"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # batching needs a pad id; attention masks hide it
        self.template = resolve_template(tokenizer, template)

    @property
    def context_length(self) -> int:
        """Most tokens the model attends to (prompt + new tokens)."""
        found = (getattr(self.model.config, "max_position_embeddings", None), self.tokenizer.model_max_length)
        limits = [x for x in found if isinstance(x, int) and 0 < x < 10**7]  # tokenizers use 1e30 for "none"
        return min(limits) if limits else 2048

    @property
    def is_seq2seq(self) -> bool:
        """An encoder-decoder model (T5 family): prompts are encoder inputs, decoded by `generate`."""
        return is_encoder_decoder(self.model)

    def prompt_text(self, prompt: str | Seq[dict]) -> str:
        """The text the model continues: a string verbatim, messages through the template."""
        return prompt if isinstance(prompt, str) else render_prompt(self.tokenizer, prompt, self.template)

    def encode(self, prompt: str | Seq[dict]) -> list[int]:
        """Prompt token ids; an encoder's input as its tokenizer encodes a source text (T5's end with </s>)."""
        if self.is_seq2seq:
            return self.tokenizer(self.prompt_text(prompt))["input_ids"]
        return encode_text(self.tokenizer, self.prompt_text(prompt))

    def generate(
        self,
        prompts: Seq[str] | Seq[Seq[dict]],
        *,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        stop: list[str] | None = None,
        batch_size: int = 8,
        seed: int = 0,
    ) -> list[str]:
        """Generate a continuation for each prompt; returns only the new text (cut at the first stop string).

        Sampling draws prompt i's tokens from its own generator seeded `seed + i`, so an output does not
        depend on which other prompts share its batch. Beam search goes through transformers' `generate`.
        """
        if do_sample and temperature <= 0:
            raise LmadaptError("temperature must be > 0 when sampling (use do_sample=False for greedy)")
        encoded = [self.encode(p) for p in prompts]
        stop = [s for s in stop or () if s]
        if self.is_seq2seq:
            return generate_seq2seq(
                self.model, self.tokenizer, encoded, self.eos_ids, max_new_tokens=max_new_tokens,
                do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k, num_beams=num_beams,
                repetition_penalty=repetition_penalty, stop=stop, batch_size=batch_size, seed=seed,
                stopping=_stop_criteria(self.tokenizer, stop) if stop else None,
            )  # fmt: skip
        if num_beams > 1:
            return self._beam_search(encoded, max_new_tokens, num_beams, repetition_penalty, stop, batch_size)
        decodings = [
            self.decoding(
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=repetition_penalty,
                stop=stop,
                seed=seed + i,
            )  # fmt: skip
            for i in range(len(encoded))
        ]
        seqs = [self.sequence(ids, d) for ids, d in zip(encoded, decodings, strict=True)]
        run_sequences(self.model, self.tokenizer.pad_token_id, seqs, batch_size)
        return [s.text for s in seqs]

    @staticmethod
    def decoding(**options) -> Decoding:
        options["stop"] = tuple(options.get("stop") or ())
        return Decoding(**options)

    def sequence(self, prompt_ids: list[int], decoding: Decoding) -> Sequence:
        """A Sequence for this engine's model: its EOS ids (the chat template's end-of-turn included).

        An empty prompt (a tokenizer without BOS given "") starts from the BOS/EOS token: the model needs one.
        Decoder-only: an encoder-decoder model decodes through `generate` only."""
        if self.is_seq2seq:
            raise LmadaptError(
                f"an encoder-decoder ({self.model.config.model_type}) model cannot join the decoder-only "
                "continuous batch; use Engine.generate"
            )
        if not prompt_ids:
            start = self.tokenizer.bos_token_id
            prompt_ids = [start if start is not None else self.tokenizer.eos_token_id]
        return Sequence(prompt_ids, decoding, self.eos_ids, self.tokenizer)

    @functools.cached_property
    def eos_ids(self) -> list[int]:
        return self._eos_ids()

    def _beam_search(self, encoded, max_new_tokens, num_beams, repetition_penalty, stop, batch_size):
        import torch
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
            repetition_penalty=repetition_penalty, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self._eos_ids(),
        )  # fmt: skip
        stopping = _stop_criteria(self.tokenizer, stop) if stop else None
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        outputs: list[str] = [""] * len(encoded)
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: every prompt ends where generation starts
                n = len(encoded[i])
                ids[row, width - n :] = torch.tensor(encoded[i], dtype=torch.long)
                mask[row, width - n :] = 1
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    generation_config=config,
                    stopping_criteria=stopping,
                )
            # generation ends just after a stop string: cut it (and anything after it) off the text
            for row, i in enumerate(batch):
                text = self.tokenizer.decode(out[row, width:], skip_special_tokens=True)
                outputs[i] = cut_at_stop(text, stop)
        return outputs

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        generation_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids |= set(generation_eos) if isinstance(generation_eos, list) else {generation_eos}
        if self.template == "model":  # chat templates end a turn with their own marker (e.g. <|im_end|>)
            for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
                tid = self.tokenizer.convert_tokens_to_ids(token)
                if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                    ids.add(tid)
        return sorted(i for i in ids if i is not None)


def _stop_criteria(tokenizer, stop: list[str]):
    """transformers' StopStringCriteria: a row ends once its tokens' text (the prompt's tail and special
    tokens included) ends with a stop string.

    None for a vocabulary it cannot index (e.g. a word-level tokenizer): generation then runs to
    `max_new_tokens`, and the text is cut at the stop string all the same."""
    from transformers import StoppingCriteriaList, StopStringCriteria

    try:
        return StoppingCriteriaList([StopStringCriteria(tokenizer=tokenizer, stop_strings=stop)])
    except ValueError:
        return None


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.yaml").is_file() and not (p / "config.json").is_file()


def load_run(run_dir: str | Path, trust_remote_code: bool = False):
    """(model, tokenizer, template) of a complete sft run (base model + its trained weights) or ppo / dpo /
    grpo run (its start policy + what the run trained).

    `trust_remote_code` is the caller's (a flag), never the run folder's own config.yaml."""
    from ..methods import load_trained
    from ..runs import RunDir

    run_dir = Path(run_dir)
    recipe = RunDir.open_complete(run_dir, "generation").read_config(trust_remote_code)
    if recipe.stage in ("ppo", "dpo", "grpo"):  # start policy (an sft run, merged) + what alignment trained
        from ..alignment.policy import load_aligned

        return load_aligned(run_dir, trust_remote_code)
    if recipe.stage != "sft":
        raise LmadaptError(
            f"{run_dir}: a {recipe.stage} run; generation needs an sft, ppo, dpo or grpo run (or a model folder)"
        )
    model, tokenizer = load_lm(recipe.model.name, recipe.model.dtype, recipe.model.trust_remote_code)
    if (run_dir / "model").is_dir() or (run_dir / "adapter").is_dir():  # else a zero-shot run: base model
        model = load_trained(model, recipe.method, run_dir, lm_task_type(model))
    return model, tokenizer, getattr(recipe.task, "template", "auto")


def load_engine(
    model_or_run: str,
    template: str | None = None,
    trust_remote_code: bool = False,
    dtype: str = GENERATE_DTYPE,
) -> Engine:
    """An Engine for a catalog name, model folder, Hub id, or sft run folder (base model + trained weights);
    decoder-only or encoder-decoder as the model's config says. `dtype`: float32, bfloat16 (bf16 matmuls,
    float32 activations: precision.py) or auto (`loading.inference_dtype`)."""
    from ..runs import staging_path

    dtype = inference_dtype(dtype)
    if is_run_dir(model_or_run) or staging_path(model_or_run).is_dir():
        model, tokenizer, run_template = load_run(model_or_run, trust_remote_code)
        return Engine(for_generation(model, dtype), tokenizer, template or run_template)
    model, tokenizer = load_lm(str(model_or_run), "float32", trust_remote_code=trust_remote_code)
    model = for_generation(model, dtype)
    saved = (
        Path(str(model_or_run)) / "lmadapt_template.txt"
    )  # written by `lmadapt export` for named templates
    if template is None and saved.is_file():
        template = saved.read_text(encoding="utf-8").strip()
    return Engine(model, tokenizer, template or "auto")
