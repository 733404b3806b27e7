"""The Hugging Face `Trainer`, thinly subclassed: a resumable data order, and the causal-LM loss of `loss.py`."""

from __future__ import annotations

from torch.utils.data import SequentialSampler
from transformers import Trainer

from .loss import causal_lm_loss_sum
from .sampling import EpochSeededSampler


class ResumableTrainer(Trainer):
    """`Trainer` whose training order depends only on (seed, epoch), so `--resume` replays it exactly."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        strategy = self.args.train_sampling_strategy
        if dataset is None or strategy == "sequential":
            return SequentialSampler(dataset) if dataset is not None else None
        lengths = None
        if strategy == "group_by_length":
            lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
        return EpochSeededSampler(
            len(dataset),
            self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            lambda: self.state.epoch or 0,
            lengths,
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
        )


def causal_lm_of(model):
    """The *ForCausalLM module inside a PEFT wrapper (its LoRA/IA3 layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class CausalLMTrainer(ResumableTrainer):
    """`Trainer` whose training loss runs the decoder, then the chunked loss over target positions only.

    Evaluation (`return_outputs=True`) keeps the model's own forward and loss, so eval numbers are the
    reference the chunked training loss is checked against.
    """

    def __init__(self, *args, loss_chunk: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_chunk = loss_chunk

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_chunk is None or return_outputs or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        unwrapped = self.accelerator.unwrap_model(model)
        lm = causal_lm_of(unwrapped)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        # accelerate puts autocast around the wrapped model's forward; the decoder called directly needs it here
        with self.accelerator.autocast():
            if model is unwrapped:
                hidden = lm.get_decoder()(**inputs, use_cache=False).last_hidden_state
            else:
                hidden = decoder_output_through(model, lm.get_decoder(), inputs)
            total, n = causal_lm_loss_sum(hidden, lm.get_output_embeddings().weight, labels, self.loss_chunk)
        if num_items_in_batch is None:
            return total / max(n, 1)
        # normalised like transformers' loss: by the target count of the whole accumulated batch, which under
        # data parallelism counts every process's targets; DDP then averages gradients over the processes,
        # so each process's share is scaled back up by their number (the Trainer does the same)
        scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        return total * scale / num_items_in_batch


def evaluate_before_training(trainer) -> dict:
    """`trainer.evaluate()` before `trainer.train()`, without losing data parallelism.

    accelerate marks a model it prepared for evaluation (left unwrapped) as prepared, and the `train()` after
    it then skips wrapping it in DDP: every process would train on its own shard alone (measured: two
    processes parted from one process at the second step). Clearing the mark lets `train()` wrap it.
    """
    metrics = trainer.evaluate()
    trainer.model.__dict__.pop("_is_accelerate_prepared", None)
    return metrics


def decoder_output_through(wrapped, decoder, inputs: dict):
    """The decoder's last hidden state from a forward of the whole `wrapped` model (DDP).

    DDP synchronises gradients only for a forward that goes through its wrapper, so the decoder cannot be
    called on its own there. The wrapper's forward runs with `logits_to_keep=1` (one position's logits, not
    [tokens x vocab]) and a forward hook keeps the decoder's output for the chunked loss.
    """
    kept = {}

    def keep(module, args, output):
        kept["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    handle = decoder.register_forward_hook(keep)
    try:
        wrapped(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return kept["hidden"]


def match_accelerator_precision(bf16: bool) -> None:
    """Forget accelerate's process-wide mixed-precision setting when it differs from this run's.

    accelerate keeps one `AcceleratorState` per process: after a bf16 run, a later fp32 `Trainer` in the same
    process (a notebook, a test session) would silently train under bf16 autocast. The process group
    (`PartialState`) is kept, so this is safe under torchrun too.
    """
    from accelerate.state import AcceleratorState

    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is not None and current != ("bf16" if bf16 else "no"):
        AcceleratorState._reset_state(reset_partial_state=False)
