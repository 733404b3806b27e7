"""The decode loop's KV cache: transformers' DynamicCache with preallocated room, so a step writes its token's
keys and values in place instead of copying the whole cache.

transformers' `DynamicLayer.update` appends with `torch.cat`: every decode step copies every layer's keys and
values, rows x heads x length x head_dim each. At 8 rows and 300 cached tokens that is tens of MB per step for
SmolLM2-135M, a cost that grows with the batch and the length while the matmuls it sits beside do not. Here the
cached keys and values are views of buffers with `ROOM` spare positions; only when the room runs out (every
`ROOM` steps) or rows join or leave the batch (`DecodeBatch`) is the cache copied.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

__all__ = ["RoomyCache", "RoomyLayer", "set_layer"]

ROOM = 128  # spare positions allocated ahead; one copy per ROOM steps instead of one per step


class RoomyLayer(DynamicLayer):
    """A DynamicLayer whose `keys` / `values` are the filled front of larger buffers."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        have, add = self.get_seq_length(), key_states.shape[-2]
        if self._k is None or have + add > self._k.shape[-2]:
            self._reserve(key_states, value_states, have + add)
        self._k[:, :, have : have + add].copy_(key_states)
        self._v[:, :, have : have + add].copy_(value_states)
        self.keys, self.values = self._k[:, :, : have + add], self._v[:, :, : have + add]
        return self.keys, self.values

    def _reserve(self, like_k: torch.Tensor, like_v: torch.Tensor, length: int) -> None:
        """New buffers for `length` + ROOM positions, holding what is cached now."""
        have = self.get_seq_length()
        k = like_k.new_empty((*like_k.shape[:2], length + ROOM, like_k.shape[-1]))
        v = like_v.new_empty((*like_v.shape[:2], length + ROOM, like_v.shape[-1]))
        if have:
            k[:, :, :have].copy_(self.keys)
            v[:, :, :have].copy_(self.values)
        self._k, self._v = k, v

    def replace(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Hold exactly `keys` / `values` (rows changed: some left the batch or joined it), with room again."""
        self._k = self._v = None
        self.keys, self.values = keys, values
        self._reserve(keys, values, keys.shape[-2])
        n = keys.shape[-2]
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]


class RoomyCache(DynamicCache):
    """A DynamicCache (models treat it as one) whose layers are RoomyLayers."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=RoomyLayer)


def set_layer(layer, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Make a cache layer hold `keys` / `values` (any DynamicLayer; RoomyLayers keep their room)."""
    if isinstance(layer, RoomyLayer):
        layer.replace(keys, values)
    else:
        layer.keys, layer.values = keys, values
