"""Batching, masking, loss and held-out metrics of stage pretrain (clm, mlm, nsp, mlm+nsp, span_corruption,
blank_infilling: the span corruption itself lives in seq2seq.py, GLM's blank infilling in blank_infilling.py).

- `LmCollator` pads a batch (labels with -100); for masked LM, `Masker` chooses the positions to predict,
  per batch in the training step: token by token with transformers' `DataCollatorForLanguageModeling.torch_mask_tokens`
  (rate `probability`, of the chosen: `mask` -> [MASK], `random` -> a random token, the rest unchanged;
  special and padding tokens never chosen), or whole words with `mask_whole_words` (transformers' own
  whole-word mode replaces every chosen token by [MASK], dropping the random/unchanged split).
  Only chosen positions carry a label. Training draws from torch's global RNG, which checkpoints save
  and `--resume` restores (so a resumed run equals an uninterrupted one); `fix_masks` masks held-out
  examples once, from a seed, so the loss before and after training is measured on the same positions.
- `PretrainTrainer` adds the next-sentence loss (any number of classes) to the model's masked-LM loss.
- `lm_metrics` and `pseudo_perplexity` measure held-out loss, perplexity and accuracy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .trainer import ResumableTrainer

IGNORE = -100


class LmCollator:
    """Pad features ({input_ids, [token_type_ids], [labels], [word_start], [next_sentence_label]}) into a
    batch: labels with -100, word_start with 0 (it goes to the trainer's `Masker`, not to the model). Labels
    pad to their own width (an encoder-decoder's targets are not as long as its inputs)."""

    def __init__(self, tokenizer):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": _pad([f["input_ids"] for f in features], width, self.pad_id),
            "attention_mask": _pad([[1] * len(f["input_ids"]) for f in features], width, 0),
        }
        for key, value in (("token_type_ids", 0), ("labels", IGNORE), ("word_start", 0)):
            if key in features[0]:
                own = max(len(f[key]) for f in features) if key == "labels" else width
                batch[key] = _pad([f[key] for f in features], own, value)
        if "next_sentence_label" in features[0]:
            batch["next_sentence_label"] = torch.tensor([f["next_sentence_label"] for f in features])
        return batch


class Masker:
    """Choose the positions a masked-LM batch predicts (see the module docstring): `masker(input_ids,
    word_start)` -> (masked input_ids, labels). `seed` gives it its own generator, else torch's global RNG."""

    def __init__(self, tokenizer, probability=0.15, mask=0.8, random=0.1, whole_word=False, seed=None):
        from transformers import DataCollatorForLanguageModeling

        self.tokenizer = tokenizer
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.probability, self.mask, self.random, self.whole_word = probability, mask, random, whole_word
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.hf = DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=probability, mask_replace_prob=mask, random_replace_prob=random
        )
        self.hf.generator = self.generator  # None: torch's global RNG (saved in checkpoints)

    def __call__(self, input_ids: torch.Tensor, word_start: torch.Tensor | None = None):
        special = torch.isin(input_ids, self.special)
        if not self.whole_word:
            return self.hf.torch_mask_tokens(input_ids.clone(), special_tokens_mask=special)
        starts = word_start if word_start is not None else torch.ones_like(input_ids)
        return mask_whole_words(
            input_ids, starts, special, self.probability, self.mask, self.random,
            self.tokenizer.mask_token_id, len(self.tokenizer), self.generator,
        )  # fmt: skip


def mask_whole_words(
    input_ids, word_start, special, probability, mask, random, mask_id, vocab, generator=None
):
    """Choose each word (a word_start token and the tokens after it up to the next start) with
    `probability`; every token of a chosen word is then [MASK] (`mask`), random (`random`) or kept."""
    words = torch.cumsum(word_start * ~special, dim=1)  # word number of each token (0: before the first)
    draw = torch.rand(input_ids.shape, generator=generator) < probability
    chosen_start = draw & word_start.bool() & ~special
    chosen = torch.zeros_like(special)
    for row in range(input_ids.shape[0]):
        picked = words[row][chosen_start[row]]
        chosen[row] = torch.isin(words[row], picked) & ~special[row] & (words[row] > 0)
    return _replace(input_ids, chosen, mask, random, mask_id, vocab, generator)


def _replace(input_ids, chosen, mask, random, mask_id, vocab, generator):
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    roll = torch.rand(input_ids.shape, generator=generator)
    masked = chosen & (roll < mask)
    randomised = chosen & (roll >= mask) & (roll < mask + random)
    out = input_ids.clone()
    out[masked] = mask_id
    out[randomised] = torch.randint(vocab, input_ids.shape, generator=generator)[randomised]
    return out, labels


def fix_masks(features: list[dict], masker: Masker) -> list[dict]:
    """Each feature masked once (with a seeded `masker`): input_ids masked, labels set, word_start dropped."""
    out = []
    for f in features:
        ids = torch.tensor([f["input_ids"]])
        starts = torch.tensor([f.get("word_start", [1] * len(f["input_ids"]))])
        masked, labels = masker(ids, starts)
        kept = {k: v for k, v in f.items() if k != "word_start"}
        out.append(kept | {"input_ids": masked[0].tolist(), "labels": labels[0].tolist()})
    return out


def _pad(rows: list[list[int]], width: int, value: int) -> torch.Tensor:
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


# --- loss ---------------------------------------------------------------------------------------------------
def mlm_logits(outputs):
    """The masked-LM logits of *ForMaskedLM (`logits`) or *ForPreTraining (`prediction_logits`)."""
    found = getattr(outputs, "prediction_logits", None)
    return found if found is not None else outputs.logits


def nsp_logits(outputs):
    """The sentence-pair logits of *ForNextSentencePrediction (`logits`) or *ForPreTraining."""
    found = getattr(outputs, "seq_relationship_logits", None)
    return found if found is not None else outputs.logits


def pretraining_loss(outputs, labels, next_sentence_label):
    """Masked-LM cross-entropy over labelled positions (when `labels`) + next-sentence cross-entropy."""
    loss = 0.0
    if labels is not None:
        logits = mlm_logits(outputs)
        loss = F.cross_entropy(
            logits.view(-1, logits.shape[-1]).float(), labels.view(-1), ignore_index=IGNORE
        )
    pair = nsp_logits(outputs)
    return loss + F.cross_entropy(pair.view(-1, pair.shape[-1]).float(), next_sentence_label.view(-1))


def masked_head(model):
    """(encoder, MLM head) of a *ForMaskedLM whose only other child is its head (BERT: bert, cls; RoBERTa:
    roberta, lm_head), inside a PEFT wrapper too (its layers are injected in place); None otherwise."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = getattr(lm, "base_model_prefix", "")
    children = dict(lm.named_children())
    heads = [m for n, m in children.items() if n != prefix]
    if prefix not in children or len(heads) != 1 or not type(lm).__name__.endswith("ForMaskedLM"):
        return None
    return children[prefix], heads[0]


def selected_mlm_logits(parts, inputs: dict, keep: torch.Tensor) -> torch.Tensor:
    """MLM logits at the `keep` positions only: the same numbers as the model's, without building
    [batch x length x vocab] logits for the ~85% of positions that carry no label."""
    encoder, head = parts
    hidden = encoder(**inputs).last_hidden_state
    return head(hidden[keep])


class PretrainTrainer(ResumableTrainer):
    """`Trainer` that masks masked-LM training batches here, in the training step (after `--resume` has
    restored the RNG state: masks drawn in the collator would come before it), and whose loss is
    `pretraining_loss` when a batch has `next_sentence_label` (the model's own NSP loss assumes 2 classes),
    the masked-LM loss at labelled positions only for *ForMaskedLM models, the model's own loss otherwise."""

    def __init__(self, *args, masker: Masker | None = None, corrupter=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.masker = masker
        self.corrupter = corrupter  # a seq2seq.SpanCorrupter or a blank_infilling.BlankInfiller

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        word_start = inputs.pop("word_start", None)
        if self.masker is not None and "labels" not in inputs:  # held-out batches come masked already
            inputs["input_ids"], inputs["labels"] = self.masker(inputs["input_ids"], word_start)
        if self.corrupter is not None and "labels" not in inputs:  # held-out batches come corrupted already
            inputs = self.corrupter.batch(inputs["input_ids"], inputs["attention_mask"])
        if "part_a_length" in inputs:  # blank_infilling: its own forward (2-D positions, GLM's mask) and loss
            from .blank_infilling import blank_loss

            return blank_loss(model, inputs, return_outputs)
        parts = masked_head(self.accelerator.unwrap_model(model))
        if "next_sentence_label" not in inputs and (
            parts is None or return_outputs or "labels" not in inputs
        ):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if "next_sentence_label" not in inputs:
            labels = inputs.pop("labels")
            keep = labels != IGNORE
            with self.accelerator.autocast():  # accelerate autocasts the wrapped forward, not its parts
                logits = selected_mlm_logits(parts, inputs, keep)
            return F.cross_entropy(logits.float(), labels[keep])
        nsp, labels = inputs.pop("next_sentence_label"), inputs.pop("labels", None)
        outputs = model(**inputs)
        loss = pretraining_loss(outputs, labels, nsp)
        return (loss, outputs) if return_outputs else loss


# --- held-out metrics ---------------------------------------------------------------------------------------
def lm_metrics(model, features: list[dict], collator, objective: str, batch_size: int) -> dict[str, float]:
    """Held-out metrics of `objective` over `features` (already masked for mlm), token-weighted:
    clm: loss, perplexity, next_token_accuracy; mlm: mlm_loss, mlm_accuracy (top-1 at chosen positions);
    nsp: nsp_loss, nsp_accuracy; span_corruption: span_loss, span_accuracy (of the decoded targets);
    blank_infilling: blank_loss, blank_accuracy (of the Part B targets). The higher-is-better accuracy comes
    first (compare ranks by it)."""
    sums = {"lm_loss": 0.0, "lm_hits": 0, "lm_n": 0, "nsp_loss": 0.0, "nsp_hits": 0, "nsp_n": 0}
    model.eval()
    device = next(model.parameters()).device
    parts = masked_head(model) if objective == "mlm" else None
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            batch = {k: v.to(device) for k, v in collator(features[start : start + batch_size]).items()}
            labels, nsp = batch.pop("labels", None), batch.pop("next_sentence_label", None)
            batch.pop("word_start", None)
            if parts is not None:
                keep = labels != IGNORE
                _add_tokens(sums, selected_mlm_logits(parts, batch, keep), labels[keep])
                continue
            if objective == "span_corruption":  # the decoder reads the targets (shifted), scored at each
                _add_tokens(sums, model(**batch, labels=labels).logits, labels)
                continue
            if objective == "blank_infilling":  # labels are the target at each position (not shifted)
                from .blank_infilling import blank_logits

                _add_tokens(sums, blank_logits(model, batch), labels)
                continue
            outputs = model(**batch)
            if objective == "clm":
                _add_tokens(sums, outputs.logits[:, :-1], labels[:, 1:])
            elif objective == "mlm+nsp":
                _add_tokens(sums, mlm_logits(outputs), labels)
            if nsp is not None:
                logits = nsp_logits(outputs).float()
                sums["nsp_loss"] += F.cross_entropy(logits, nsp, reduction="sum").item()
                sums["nsp_hits"] += (logits.argmax(-1) == nsp).sum().item()
                sums["nsp_n"] += len(nsp)
    return _summarise(sums, objective)


def _add_tokens(sums: dict, logits, labels) -> None:
    keep = labels != IGNORE
    picked, gold = (logits[keep] if logits.dim() > 2 else logits).float(), labels[keep]
    sums["lm_loss"] += F.cross_entropy(picked, gold, reduction="sum").item()
    sums["lm_hits"] += (picked.argmax(-1) == gold).sum().item()
    sums["lm_n"] += int(keep.sum())


def _summarise(sums: dict, objective: str) -> dict[str, float]:
    out = {}
    n, m = max(sums["lm_n"], 1), max(sums["nsp_n"], 1)
    if objective == "clm":
        loss = sums["lm_loss"] / n
        out |= {"next_token_accuracy": sums["lm_hits"] / n, "loss": loss, "perplexity": math.exp(loss)}
    if objective in ("mlm", "mlm+nsp"):
        out |= {"mlm_accuracy": sums["lm_hits"] / n, "mlm_loss": sums["lm_loss"] / n}
    if objective == "span_corruption":
        out |= {"span_accuracy": sums["lm_hits"] / n, "span_loss": sums["lm_loss"] / n}
    if objective == "blank_infilling":
        out |= {"blank_accuracy": sums["lm_hits"] / n, "blank_loss": sums["lm_loss"] / n}
    if objective in ("nsp", "mlm+nsp"):
        out |= {"nsp_accuracy": sums["nsp_hits"] / m, "nsp_loss": sums["nsp_loss"] / m}
    return {k: round(v, 4) for k, v in out.items()}


def pseudo_perplexity(model, features: list[dict], mask_id: int, special_ids, batch_size: int) -> float:
    """exp(-mean log p(token | the rest)) over every non-special token of `features` (unmasked
    input_ids), each token masked in turn (Salazar et al. 2020): one forward per token."""
    model.eval()
    device = next(model.parameters()).device
    special = torch.tensor(sorted(set(special_ids)))
    total, count = 0.0, 0
    with torch.inference_mode():
        for f in features:
            ids = torch.tensor(f["input_ids"])
            positions = torch.nonzero(~torch.isin(ids, special)).flatten()
            for start in range(0, len(positions), batch_size):
                chunk = positions[start : start + batch_size]
                batch = ids.repeat(len(chunk), 1)
                batch[torch.arange(len(chunk)), chunk] = mask_id
                extra = (
                    {"token_type_ids": torch.tensor([f["token_type_ids"]] * len(chunk))}
                    if "token_type_ids" in f
                    else {}
                )
                logits = mlm_logits(
                    model(input_ids=batch.to(device), **{k: v.to(device) for k, v in extra.items()})
                )
                logp = torch.log_softmax(logits[torch.arange(len(chunk)), chunk].float(), dim=-1)
                total += logp[torch.arange(len(chunk)), ids[chunk].to(device)].sum().item()
                count += len(chunk)
    return round(math.exp(-total / max(count, 1)), 4)
