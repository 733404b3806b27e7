"""`train:` optimisation settings, and `eval:` what to measure and when."""

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Section


class DistributedConfig(Section):
    """How several processes share the training (`lmadapt train --nproc N`, or torchrun on several machines)."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp",
        description=(
            "ddp: every process holds the whole model and trains on its shard of each batch (CPU gloo or "
            "GPU NCCL); fsdp / deepspeed shard the model too (CUDA only)."
        ),
    )
    config: str | None = Field(
        None,
        description="fsdp: an FSDP config file (JSON) for the Trainer; deepspeed: the ZeRO config file (JSON).",
    )

    @model_validator(mode="after")
    def _config_for_deepspeed(self):
        if self.strategy == "deepspeed" and not self.config:
            raise ValueError("strategy deepspeed needs config: a DeepSpeed ZeRO JSON file")
        return self


class TrainConfig(Section):
    epochs: float = Field(3.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    lr: float = Field(2.0e-5, gt=0, description="Peak learning rate.")
    batch_size: int = Field(
        16, ge=1, description="Examples per step and process (a step of --nproc N trains N x batch_size)."
    )
    eval_batch_size: int | None = Field(None, ge=1, description="Defaults to 2 x batch_size.")
    grad_accum: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    max_length: int = Field(256, ge=8, description="Truncate inputs to this many tokens.")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="LR schedule after warmup."
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    group_by_length: bool = Field(True, description="Batch examples of similar length to cut padding.")
    shuffle: bool = Field(
        True, description="Shuffle training examples each epoch (false: file order, e.g. to compare runs)."
    )
    packing: Literal["off", "rows", "batch"] = Field(
        "batch",
        description=(
            "sft: pack examples into rows with position ids restarting per example (no cross-attention). "
            "rows: fill max_length-wide rows from the whole set (fewest rows, changes which examples share "
            "a step); batch: pack each batch's own examples (same data order and loss as unpacked). "
            "true means rows."
        ),
    )
    bf16: bool = Field(
        False, description="bf16 autocast with fp32 master weights (CPU with AVX512_BF16 or GPU)."
    )
    bf16_frozen: bool = Field(
        True,
        description="With bf16: keep frozen linear weights in bf16 while training (restored exactly after).",
    )
    chunked_loss: bool = Field(
        True,
        description=(
            "sft: causal-LM loss computed in chunks over target positions only, never the full "
            "[tokens x vocab] logits (not for prefix/prompt/ptuning, which inject past key values)."
        ),
    )
    loss_chunk: int = Field(1024, ge=16, description="Target positions per chunk of the chunked loss.")
    compile: bool = Field(
        False,
        description=(
            "torch.compile each transformer layer (dynamic shapes) while training: less peak memory and "
            "fused elementwise work, after a one-off compile (about 1.5 minutes on 2 CPU cores)."
        ),
    )
    save_every: int | None = Field(
        None,
        ge=1,
        description=(
            "Write a resumable checkpoint every N optimizer steps (weights or adapter, optimizer, scheduler, "
            "RNG states, data position); `lmadapt train RECIPE --resume` continues from the last one. "
            "Checkpoints are kept after the run when this is set. finetune also saves at each evaluation."
        ),
    )
    keep_checkpoints: int = Field(
        1,
        ge=1,
        description=(
            "How many checkpoints to keep (plus the best one). Old ones are deleted only after a new one "
            "is verified on disk, so 1 is safe against a kill mid-save."
        ),
    )
    seed: int = Field(0)
    logging_steps: int = Field(10, ge=1)
    num_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per process; default: the cores / processes."
    )
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="How --nproc / torchrun processes share the training."
    )

    @field_validator("packing", mode="before")
    @classmethod
    def _packing_bool(cls, v):
        return {True: "rows", False: "off"}.get(v, v) if isinstance(v, bool) else v


class EvalConfig(Section):
    metrics: list[str] | None = Field(None, description="Metrics to report; default: the task's own.")
    every: Literal["epoch", "no"] | int = Field(
        "epoch", description="Evaluate each epoch, every N steps, or no."
    )
    best_metric: str | None = Field(
        None, description="Keep the checkpoint best on this metric (default: task's)."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after N evals without improving."
    )
