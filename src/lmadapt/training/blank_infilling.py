"""GLM's autoregressive blank infilling (Du et al. 2022) for decoder-only causal LMs (`objective:
blank_infilling` of stage pretrain).

From each block of text, spans are sampled (lengths from Poisson(`mean_span_length`), at least 1, until
`noise_density` of the block's tokens are covered; the spans lie in random places, never adjacent) and each
is replaced by one [MASK] in Part A. Part B holds the spans in random order, each as [START] + its tokens;
the target of each Part B token is the next token of its span, then [END]:

    x1 x2 x3 x4 x5 x6   ->  Part A  x1 [M] x4 [M]        Part B  [S] x5 x6 [S] x2 x3
                             targets  -   -  -   -                 x5  x6 [E] x2  x3 [E]
    position 1 (RoPE)         0   1  2   3                          3   3  3   1   1  1
    position 2 (learned)      0   0  0   0                          1   2  3   1   2  3

Part A attends to all of Part A (bidirectional); a Part B token attends to Part A and to the Part B tokens
before it (causal); padding is never attended to. The mask goes to the model as a custom 4-D mask (boolean
for SDPA, additive for eager attention): transformers' masking utilities pass a 4-D mask through as it is.
Position 1 goes in as `position_ids`; position 2 through a small learned embedding, `blank_block_positions`,
added to the token embeddings (`inputs_embeds`). The loss is on Part B only.

Why the position-2 embedding is kept beside the model, not in it: the saved `model/` must stay a plain
causal LM that transformers loads (a finetune, sft or chat recipe starts from it, with ordinary positions).
So the embedding is an extra submodule while training (zero-initialised, so the pretrained model starts
unchanged; it trains whatever the method, like a fresh head; Trainer checkpoints hold it), and at save time
it is taken out of the model and written beside it as `model/block_positions.safetensors`, which a later
blank_infilling run starting from that folder reloads. The special tokens [MASK], [START] and [END] are
added to the tokenizer when missing and the embeddings resized; they are part of the saved model.

Training corrupts each batch afresh in the training step (torch's global RNG, restored on --resume);
held-out blocks are corrupted once, from a seed, so the loss before and after training uses the same spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RecipeError

IGNORE = -100
MASK, START, END = "[MASK]", "[START]", "[END]"
BLOCK_POSITIONS = "blank_block_positions"  # the training-time submodule of the causal LM
SIDECAR = "block_positions.safetensors"  # where save_model writes it, beside model.safetensors
MASKABLE_ATTENTION = ("eager", "sdpa")  # attention implementations that take an arbitrary 4-D mask


# --- spans and examples -----------------------------------------------------------------------------------
def masked_count(length: int, noise_density: float) -> int:
    """Tokens to mask in a block of `length` (at least 1, and at least 1 left unmasked)."""
    return min(max(int(round(length * noise_density)), 1), length - 1)


def block_width(max_length: int, noise_density: float) -> int:
    """The longest block whose example (Part A + Part B: the block + 2 tokens per span) fits max_length
    whatever the span lengths (at worst every span is 1 token long)."""
    width = max_length
    while width > 2 and width + 2 * masked_count(width, noise_density) > max_length:
        width -= 1
    return width


def sample_spans(length: int, noise_density: float, mean_span_length: float, generator=None):
    """Sorted (start, length) spans of a block: Poisson lengths (at least 1) until the masked count is
    reached (the last one cut to fit), placed at random with at least one unmasked token between spans."""
    if length < 2:
        raise ValueError("blank infilling needs blocks of at least 2 tokens")
    budget = masked_count(length, noise_density)
    lengths: list[int] = []
    while sum(lengths) < budget:
        drawn = torch.poisson(torch.tensor([float(mean_span_length)]), generator=generator)
        lengths.append(min(max(int(drawn.item()), 1), budget - sum(lengths)))
    while len(lengths) - 1 > length - budget:  # too many spans to keep apart: merge the last two
        lengths[-2] += lengths.pop()
    free = length - budget - (len(lengths) - 1)  # unmasked tokens beyond the one between each pair
    # gaps (before the first span, between spans, after the last): 1 + a share of `free` between spans
    cuts = sorted(torch.randperm(free + len(lengths), generator=generator)[: len(lengths)].tolist())
    extra = [b - a - 1 for a, b in zip([-1, *cuts[:-1]], cuts, strict=True)]
    spans, at = [], 0
    for k, (gap, size) in enumerate(zip(extra, lengths, strict=True)):
        at += gap + (k > 0)
        spans.append((at, size))
        at += size
    return spans


def infill_example(ids: Sequence[int], spans, order, mask_id: int, start_id: int, end_id: int) -> dict:
    """The GLM example of `ids` with `spans` (sorted (start, length)) blanked, Part B in `order` (a
    permutation of the span indexes): input_ids, labels (the target at each position, -100 in Part A),
    position_ids (position 1), block_position_ids (position 2), part_a_length."""
    part_a, mask_at, cursor = [], [], 0
    for start, size in spans:
        part_a += ids[cursor:start]
        mask_at.append(len(part_a))
        part_a.append(mask_id)
        cursor = start + size
    part_a += ids[cursor:]
    inputs, labels = list(part_a), [IGNORE] * len(part_a)
    pos1, pos2 = list(range(len(part_a))), [0] * len(part_a)
    for k in order:
        start, size = spans[k]
        span = list(ids[start : start + size])
        inputs += [start_id, *span]
        labels += [*span, end_id]
        pos1 += [mask_at[k]] * (size + 1)
        pos2 += list(range(1, size + 2))
    return {
        "input_ids": inputs,
        "labels": labels,
        "position_ids": pos1,
        "block_position_ids": pos2,
        "part_a_length": len(part_a),
    }


class BlankInfiller:
    """Corrupt blocks of token ids: `infiller.feature(ids)` -> one example (see `infill_example`);
    `infiller.batch(input_ids, attention_mask)` -> a padded batch of them. `seed` gives it its own generator,
    else torch's global RNG (saved in checkpoints)."""

    def __init__(self, token_ids: dict, pad_id: int, noise_density=0.15, mean_span_length=3.0, seed=None):
        self.mask_id, self.start_id, self.end_id = token_ids[MASK], token_ids[START], token_ids[END]
        self.pad_id = pad_id
        self.noise_density, self.mean_span_length = noise_density, mean_span_length
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def feature(self, ids: Sequence[int]) -> dict:
        spans = sample_spans(len(ids), self.noise_density, self.mean_span_length, self.generator)
        order = torch.randperm(len(spans), generator=self.generator).tolist()
        return infill_example(list(ids), spans, order, self.mask_id, self.start_id, self.end_id)

    def batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids.cpu(), attention_mask.cpu(), strict=True)]
        return {
            k: v.to(input_ids.device)
            for k, v in pad_examples([self.feature(r) for r in rows], self.pad_id).items()
        }


def infill_once(features: list[dict], infiller: BlankInfiller) -> list[dict]:
    """Held-out blocks corrupted once (with a seeded infiller)."""
    return [infiller.feature(f["input_ids"]) for f in features]


def pad_examples(features: list[dict], pad_id: int) -> dict:
    """A batch: input_ids (pad), attention_mask (1 on real tokens), labels (-100), position ids (0), and
    part_a_length; uncorrupted blocks (input_ids only) get input_ids and attention_mask."""
    width = max(len(f["input_ids"]) for f in features)
    out = {
        "input_ids": [f["input_ids"] + [pad_id] * (width - len(f["input_ids"])) for f in features],
        "attention_mask": [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features],
    }
    for key, value in (("labels", IGNORE), ("position_ids", 0), ("block_position_ids", 0)):
        if key in features[0]:
            out[key] = [f[key] + [value] * (width - len(f[key])) for f in features]
    if "part_a_length" in features[0]:
        out["part_a_length"] = [f["part_a_length"] for f in features]
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


class BlankCollator:
    """Pads blank-infilling examples (or plain blocks, corrupted later in the training step)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        return pad_examples(features, self.pad_id)


# --- the mask and the forward -----------------------------------------------------------------------------
def allowed_keys(part_a_length: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, 1, query, key] booleans: query i may attend to key j. Keys in Part A are seen by every query,
    Part B keys by themselves and the Part B queries after them; padding keys by none. (A Part A query
    never sees Part B: j <= i < part_a_length puts j in Part A.)"""
    width = attention_mask.shape[1]
    index = torch.arange(width, device=attention_mask.device)
    in_a = index[None, :] < part_a_length[:, None]  # [batch, key]
    causal = index[None, :] <= index[:, None]  # [query, key]
    allowed = (in_a[:, None, :] | causal[None]) & attention_mask.bool()[:, None, :]
    return allowed[:, None]


def model_mask(model, part_a_length, attention_mask, dtype):
    """The 4-D mask as the model's attention takes it (boolean for SDPA, 0 / -inf-like for eager); a dict
    per layer type for models with sliding-window layers (Gemma 3), their window applied."""
    config = model.config
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    allowed = allowed_keys(part_a_length, attention_mask)

    def encode(mask):
        if implementation == "sdpa":
            return mask
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )

    if "sliding_attention" not in (getattr(config, "layer_types", None) or []):
        return encode(allowed)
    index = torch.arange(allowed.shape[-1], device=allowed.device)
    near = (index[None, :] - index[:, None]).abs() < config.sliding_window
    return {"full_attention": encode(allowed), "sliding_attention": encode(allowed & near)}


def causal_lm_of(model):
    """The *ForCausalLM inside a PEFT or DDP wrapper (PEFT injects its layers in place)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def blank_logits(model, batch: dict) -> torch.Tensor:
    """Logits of a blank-infilling batch: token + block-position embeddings, position 1 as position_ids,
    the GLM mask. `model` may be wrapped (PEFT, DDP): the wrapper's forward runs."""
    lm = causal_lm_of(model)
    embeds = lm.get_input_embeddings()(batch["input_ids"])
    embeds = embeds + getattr(lm, BLOCK_POSITIONS)(batch["block_position_ids"]).to(embeds.dtype)
    mask = model_mask(lm, batch["part_a_length"], batch["attention_mask"], embeds.dtype)
    return model(inputs_embeds=embeds, attention_mask=mask, position_ids=batch["position_ids"]).logits


def blank_loss(model, batch: dict, return_outputs: bool = False):
    """Mean cross-entropy over Part B targets (the training and eval loss)."""
    logits = blank_logits(model, batch)
    labels = batch["labels"]
    keep = labels != IGNORE
    loss = F.cross_entropy(logits[keep].float(), labels[keep])
    return (loss, {"logits": logits}) if return_outputs else loss


# --- the model: tokens, the block-position embedding, the mask check, saving -------------------------------
def special_token_ids(tokenizer) -> dict:
    """{[MASK], [START], [END]: id} (the tokenizer's own mask token stands for [MASK])."""
    mask = tokenizer.mask_token or MASK
    return {MASK: tokenizer.convert_tokens_to_ids(mask)} | {
        t: tokenizer.convert_tokens_to_ids(t) for t in (START, END)
    }


def prepare_model(
    model, tokenizer, max_length: int, folder: Path | None, name: str
) -> tuple[list[str], list[str]]:
    """Add [MASK] / [START] / [END] to the tokenizer where missing (embeddings resized), attach the
    block-position embedding (from folder's sidecar when it has one, else zeros), check the model takes the
    GLM mask. Returns (names of the parameters that are new: they train whatever the method, log lines)."""
    notes, new = [], []
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK})
        new.append(MASK)
    missing = [t for t in (START, END) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        new += missing
    if new:
        old = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > old:
            model.resize_token_embeddings(len(tokenizer))
        notes.append(
            f"blank_infilling: added {', '.join(new)} to the tokenizer of {name!r}; token embeddings "
            f"{old} -> {model.get_input_embeddings().weight.shape[0]} rows (new rows: transformers' mean init)"
        )
    check_mask_support(model, special_token_ids(tokenizer), name)
    weight = model.get_input_embeddings().weight
    positions = nn.Embedding(max_length + 1, weight.shape[1], dtype=weight.dtype, device=weight.device)
    nn.init.zeros_(positions.weight)  # the pretrained model starts unchanged
    sidecar = folder / SIDECAR if folder is not None and folder.is_dir() else None
    if sidecar is not None and sidecar.is_file():  # a blank_infilling run goes on from an earlier one
        from safetensors.torch import load_file

        saved = load_file(str(sidecar))["weight"]
        rows = min(saved.shape[0], positions.weight.shape[0])
        with torch.no_grad():
            positions.weight[:rows] = saved[:rows].to(positions.weight.dtype)
        notes.append(f"blank_infilling: block-position embedding loaded from {sidecar} ({rows} rows)")
    setattr(model, BLOCK_POSITIONS, positions)
    return [f"{BLOCK_POSITIONS}.weight"], notes


def check_mask_support(model, token_ids: dict, name: str) -> None:
    """RecipeError unless the model honours a custom 4-D mask with inputs_embeds and position_ids: a probe
    of 4 tokens (Part A: 2, Part B: 2) where a Part A token must see the later Part A token, and no Part A
    token the Part B ones (a model that ignored the mask would fail one or the other)."""
    model_type = getattr(model.config, "model_type", type(model).__name__)
    implementation = getattr(model.config, "_attn_implementation", None)
    advice = "use a Llama-, Gemma 3- or SmolLM2-style decoder, or objective clm"
    if implementation not in MASKABLE_ATTENTION:
        raise RecipeError(
            f"task.objective blank_infilling: {name!r} ({model_type}) uses attention {implementation!r}, "
            f"which cannot take GLM's custom attention mask; it needs one of {', '.join(MASKABLE_ATTENTION)}"
        )
    ids = torch.tensor([[token_ids[START], token_ids[END], token_ids[START], token_ids[END]]])
    device = model.get_input_embeddings().weight.device
    batch = {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "position_ids": torch.tensor([[0, 1, 1, 1]]).to(device),
        "block_position_ids": torch.tensor([[0, 0, 1, 2]]).to(device),
        "part_a_length": torch.tensor([2]).to(device),
    }
    probe = nn.Embedding(3, model.get_input_embeddings().weight.shape[1]).to(device)
    nn.init.zeros_(probe.weight)
    setattr(model, BLOCK_POSITIONS, probe)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            base = blank_logits(model, batch).float()
            changed_a = blank_logits(model, _swap(batch, 1, token_ids[MASK])).float()
            changed_b = blank_logits(model, _swap(batch, 2, token_ids[MASK])).float()
    except Exception as exc:  # noqa: BLE001 (any failure means: this model type cannot take it)
        raise RecipeError(
            f"task.objective blank_infilling: {name!r} ({model_type}) does not take a custom 4-D attention mask "
            f"with inputs_embeds and position_ids ({type(exc).__name__}: {exc}); {advice}"
        ) from None
    finally:
        delattr(model, BLOCK_POSITIONS)
        model.train(training)
    scale = base.abs().max().item() or 1.0
    sees_later_a = (changed_a[0, 0] - base[0, 0]).abs().max().item() > 1e-4 * scale
    blind_to_b = (changed_b[0, :2] - base[0, :2]).abs().max().item() <= 1e-3 * scale
    if not (sees_later_a and blind_to_b):
        raise RecipeError(
            f"task.objective blank_infilling: {name!r} ({model_type}) does not honour a custom 4-D attention "
            f"mask (Part A sees all of Part A: {sees_later_a}; Part A is blind to Part B: {blind_to_b}); {advice}"
        )


def _swap(batch: dict, position: int, token: int) -> dict:
    ids = batch["input_ids"].clone()
    ids[0, position] = token
    return batch | {"input_ids": ids}


def pop_block_positions(model) -> torch.Tensor | None:
    """Take the block-position embedding out of the (unwrapped) model: its weight, or None without one."""
    lm = causal_lm_of(model)
    module = getattr(lm, BLOCK_POSITIONS, None)
    if module is None:
        return None
    delattr(lm, BLOCK_POSITIONS)
    return module.weight.detach().cpu().contiguous()


def save_block_positions(weight: torch.Tensor, folder: Path) -> Path:
    """Write the block-position embedding beside the saved model (see the module docstring)."""
    from safetensors.torch import save_file

    save_file({"weight": weight}, str(folder / SIDECAR), metadata={"format": "pt"})
    return folder / SIDECAR
