"""Training data order as a pure function of (seed, epoch), so a resumed run sees exactly the same batches.

The Trainer resumes mid-epoch by skipping the batches already trained. With accelerate's seedable sampler the
skipping loader does not carry the epoch through (measured with accelerate 1.15: after a resume in epoch 1 or
later the remaining batches came in another order), so a resumed run trained on different batches than an
uninterrupted one. This sampler reads the epoch from the Trainer's own state when an epoch starts (the state
is restored from the checkpoint before that), draws its permutation from a generator seeded with
seed + epoch, and never touches the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class EpochSeededSampler(Sampler[int]):
    """Shuffled (or length-grouped, like `group_by_length`) indices for the epoch `epoch_of()` returns."""

    def __init__(
        self,
        size: int,
        seed: int,
        epoch_of: Callable[[], float],
        lengths: list[int] | None = None,
        group_size: int | None = None,
    ):
        self.size, self.seed, self.epoch_of = size, seed, epoch_of
        self.lengths, self.group_size = lengths, group_size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + int(self.epoch_of()))
        if self.lengths is not None:
            return iter(get_length_grouped_indices(self.lengths, self.group_size, generator=generator))
        return iter(torch.randperm(self.size, generator=generator).tolist())
