"""PET-style cloze classification: score label words where the answer goes, without training.

A prompt holds one `{mask}` slot. Masked LMs: the slot becomes as many [MASK] tokens as the word has tokens
and the word's log-probability is the sum over those positions (scored independently in one pass, the usual
approximation of PET's left-to-right filling). Causal LMs: the text before the slot is the prompt and the word
is its continuation, log p(w) = sum_j log p(w_j | prompt, w_<j); text after the slot is ignored.

Several words per label are combined by `aggregate`: "logsumexp" (the probability that the model says any of
them; default) or "mean" (mean log-probability, as PET does). Label probabilities are the softmax of those
scores over the labels. `calibrate` divides them by the probabilities on content-free inputs and renormalises
(contextual calibration, Zhao et al. 2021).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch

from ..errors import DataError, RecipeError
from .text import MASK

Kind = Literal["masked", "causal"]


def load_lm(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """Load a pretrained LM with its scoring head: (model, tokenizer, kind).

    Encoders with a masked-LM head are used as masked LMs; everything else as causal LMs.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    from ..sources import model_load_errors, resolve_model

    path = resolve_model(name_or_path)
    with model_load_errors(name_or_path):  # a folder that is not a model: a clear error, no traceback
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        if getattr(config, "is_encoder_decoder", False):
            raise RecipeError(
                f"prompt.mode verbalizer: {name_or_path!r} is an encoder-decoder ({config.model_type}) model, "
                "which has no next-token or [MASK] head to score; use mode zero_shot, few_shot or cot"
            )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        masked = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and tokenizer.mask_token is not None
        auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
        model = auto.from_pretrained(path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
    model.eval()
    return model, tokenizer, ("masked" if masked else "causal")


def aggregate_words(word_scores: torch.Tensor, how: str) -> torch.Tensor:
    """Combine the log-probabilities of one label's words (last dim) into one score."""
    if how == "logsumexp":
        return torch.logsumexp(word_scores, dim=-1)
    if how == "mean":
        return word_scores.mean(dim=-1)
    raise ValueError(f"unknown aggregate {how!r}; choose logsumexp or mean")


def calibrate(probs: torch.Tensor, content_free: torch.Tensor) -> torch.Tensor:
    """Contextual calibration: divide each label's probability by its content-free one, renormalise."""
    scaled = probs / content_free.clamp_min(1e-12)
    return scaled / scaled.sum(dim=-1, keepdim=True)


class Verbalizer:
    """Scores label words for prompts holding one `{mask}` slot.

    `words` maps each label to its words, e.g. {"pos": ["great", "good"], "neg": ["terrible", "bad"]}.
    """

    def __init__(
        self,
        model,
        tokenizer,
        words: Mapping[str, Sequence[str]],
        *,
        kind: Kind,
        aggregate: str = "logsumexp",
        chat: bool = False,
        max_length: int = 512,
        batch_size: int = 8,
    ):
        self.model, self.tokenizer, self.kind = model, tokenizer, kind
        self.labels = list(words)
        self.words = {label: list(ws) for label, ws in words.items()}
        self.aggregate, self.chat = aggregate, chat
        self.max_length, self.batch_size = max_length, batch_size
        if kind == "masked" and tokenizer.mask_token_id is None:
            raise RecipeError("prompt.mode verbalizer: a masked LM needs a tokenizer with a mask token")
        # Causal prompts ending in a space are cut there; the space joins the word (' good' is one BPE token).
        self._word_ids = {(label, w): self._tokenize_word(w, lead_space=False) for label, w in self._pairs()}
        self._word_ids_spaced = {
            (label, w): self._tokenize_word(w, lead_space=True) for label, w in self._pairs()
        }

    def _pairs(self):
        return [(label, w) for label in self.labels for w in self.words[label]]

    def _tokenize_word(self, word: str, lead_space: bool) -> list[int]:
        text = (" " + word) if lead_space and self.kind == "causal" else word
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise RecipeError(
                f"prompt.verbalizer: label word {word!r} has no tokens in this model's vocabulary"
            )
        return ids

    # ------------------------------------------------------------------ prompt -> token ids
    def _split(self, prompt: str) -> tuple[str, str]:
        if prompt.count(MASK) != 1:  # the template has one (checked with the recipe): a record brought more
            raise DataError(
                f"a record's text holds the literal {MASK}, which marks where the label word goes: "
                f"{prompt[:80]!r}"
            )
        prefix, suffix = prompt.split(MASK)
        return prefix, suffix

    def _masked_ids(self, prompt: str, n_masks: int) -> tuple[list[int], list[int]]:
        """[CLS] prefix [MASK]*n suffix [SEP], cut to max_length; returns ids and the mask positions."""
        tok = self.tokenizer
        prefix, suffix = self._split(prompt)
        pre = tok(prefix, add_special_tokens=False)["input_ids"]
        suf = tok(suffix, add_special_tokens=False)["input_ids"]
        room = self.max_length - n_masks - 2
        suf = suf[: max(room - len(pre), min(len(suf), 8))]
        pre = pre[max(len(pre) - (room - len(suf)), 0) :]  # keep the words nearest the slot
        cls = [tok.cls_token_id] if tok.cls_token_id is not None else []
        sep = [tok.sep_token_id] if tok.sep_token_id is not None else []
        ids = cls + pre + [tok.mask_token_id] * n_masks + suf + sep
        start = len(cls) + len(pre)
        return ids, list(range(start, start + n_masks))

    def _causal_prefix(self, prompt: str) -> tuple[list[int], bool]:
        """Token ids of the text before the slot; True when the label word takes a leading space."""
        prefix, _ = self._split(prompt)
        tok = self.tokenizer
        if self.chat:
            text = tok.apply_chat_template(
                [{"role": "user", "content": prefix.strip()}], tokenize=False, add_generation_prompt=True
            )
            ids, spaced = tok(text, add_special_tokens=False)["input_ids"], False
        else:
            spaced = prefix.endswith(" ")
            ids = tok(prefix.rstrip(" ") if spaced else prefix, add_special_tokens=True)["input_ids"]
        longest = max(len(v) for v in self._word_ids_spaced.values())
        return ids[max(len(ids) - (self.max_length - longest), 0) :], spaced

    # ------------------------------------------------------------------ forward passes
    @torch.no_grad()
    def _forward(self, rows: list[list[int]], keep: list[list[int]]) -> list[torch.Tensor]:
        """Log-softmax over the vocabulary at positions `keep[i]` of each row: [len(keep[i]), vocab] each.

        Causal rows are left-padded (explicit position ids) so the kept positions sit at the end and only
        those go through the LM head (`logits_to_keep`); masked rows are right-padded.
        """
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        left = self.kind == "causal"
        offsets = [width - len(r) if left else 0 for r in rows]
        for i, r in enumerate(rows):
            ids[i, offsets[i] : offsets[i] + len(r)] = torch.tensor(r)
            mask[i, offsets[i] : offsets[i] + len(r)] = 1
        kwargs = {}
        if left:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
            first = min(off + min(k) for off, k in zip(offsets, keep, strict=True))
            if "logits_to_keep" in inspect.signature(self.model.forward).parameters:
                kwargs["logits_to_keep"] = width - first
        logits = self.model(input_ids=ids, attention_mask=mask, **kwargs).logits
        shift = width - logits.shape[1]  # positions dropped in front by logits_to_keep
        return [
            torch.log_softmax(logits[i, [off + k - shift for k in ks]].float(), dim=-1)
            for i, (off, ks) in enumerate(zip(offsets, keep, strict=True))
        ]

    def word_log_probs(
        self, prompts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        """log p(word | prompt) for every (label, word) pair: [n_prompts, n_pairs] in `_pairs()` order.

        `progress(n)` is called after each batch of n prompts.
        """
        pairs = self._pairs()
        out = torch.empty(len(prompts), len(pairs))
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            scores = (
                self._masked_chunk(chunk, pairs)
                if self.kind == "masked"
                else self._causal_chunk(chunk, pairs)
            )
            out[start : start + len(chunk)] = scores
            if progress:
                progress(len(chunk))
        return out

    def _masked_chunk(self, prompts: Sequence[str], pairs) -> torch.Tensor:
        scores = torch.empty(len(prompts), len(pairs))
        lengths = sorted({len(self._word_ids[p]) for p in pairs})
        for n in lengths:  # one pass per distinct word length (usually just 1)
            built = [self._masked_ids(p, n) for p in prompts]
            logps = self._forward([ids for ids, _ in built], [positions for _, positions in built])
            for i in range(len(prompts)):
                for j, pair in enumerate(pairs):
                    word = self._word_ids[pair]
                    if len(word) == n:  # the k-th mask predicts the word's k-th token
                        scores[i, j] = sum(logps[i][k, t] for k, t in enumerate(word))
        return scores

    def _causal_chunk(self, prompts: Sequence[str], pairs) -> torch.Tensor:
        prefixes = [self._causal_prefix(p) for p in prompts]
        words = [
            [(self._word_ids_spaced if spaced else self._word_ids)[pair] for pair in pairs]
            for _, spaced in prefixes
        ]
        # One row per prompt: the prefix alone (first tokens of all words); one more per longer word.
        rows, where = [], {}
        for i, (prefix, _) in enumerate(prefixes):
            where[(i, ())] = len(rows)
            rows.append(prefix)
            for word in words[i]:
                key = (i, tuple(word[:-1]))
                if len(word) > 1 and key not in where:
                    where[key] = len(rows)
                    rows.append(prefix + word[:-1])
        # Keep the positions from the prefix's last token on: position len(prefix) - 1 + t predicts word[t].
        starts = [len(prefixes[i][0]) - 1 for i, _ in sorted(where, key=where.get)]
        logps = self._forward(rows, [list(range(s0, len(r))) for s0, r in zip(starts, rows, strict=True)])
        scores = torch.empty(len(prompts), len(pairs))
        for i in range(len(prompts)):
            for j, word in enumerate(words[i]):
                row = logps[where[(i, tuple(word[:-1]))]]
                scores[i, j] = sum(row[t, tid] for t, tid in enumerate(word))
        return scores

    # ------------------------------------------------------------------ labels
    def label_scores(
        self, prompts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        """Aggregated label-word log-probabilities: [n_prompts, n_labels]."""
        word_scores = self.word_log_probs(prompts, progress)
        cols, out = 0, []
        for label in self.labels:
            n = len(self.words[label])
            out.append(aggregate_words(word_scores[:, cols : cols + n], self.aggregate))
            cols += n
        return torch.stack(out, dim=-1)

    def label_probs(
        self, prompts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        """Label probabilities (softmax of the label scores over the labels): [n_prompts, n_labels]."""
        return torch.softmax(self.label_scores(prompts, progress), dim=-1)

    def content_free_probs(self, prompts: Sequence[str]) -> torch.Tensor:
        """Mean label probabilities over content-free prompts: [n_labels]."""
        return self.label_probs(prompts).mean(dim=0)

    def predict(self, prompts: Sequence[str], content_free: Sequence[str] | None = None) -> list[str]:
        """Predicted label per prompt, calibrated when content-free prompts are given."""
        probs = self.label_probs(prompts)
        if content_free:
            probs = calibrate(probs, self.content_free_probs(content_free))
        return [self.labels[i] for i in probs.argmax(dim=-1).tolist()]
