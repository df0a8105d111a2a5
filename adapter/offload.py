"""Activation offloading (model.offload_activations): the tensors a decoder layer saves for backward
go to pinned host memory during forward and come back for backward.

Each layer's forward runs under torch's saved-tensor hooks. On a GPU the device-to-host copies run on
a side stream (forward compute does not wait for them; the allocator keeps each source alive until
its copy is done), and in backward the first tensor unpacked from layer L starts the host-to-device
copies of layers L-1 .. L-horizon on another stream (`activation_loading_horizon`), so they overlap
with layer L's backward. With activation checkpointing inside, what a layer saves is its input, so
the checkpointed activations are what moves, as in HyperPod. Parameters and views of them, tensor
subclasses (DTensor, float8) and small tensors stay where they are.

parallel.py wraps the layers only on a CUDA mesh: on a CPU run the activations already live in host
memory. The hooks themselves work on any device, which is how the CPU tests check them.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import ActivationWrapper

MIN_BYTES = 1 << 14  # smaller saved tensors (scalars, masks of a few rows) are not worth a copy


class _Saved:
    """One offloaded tensor: its host copy, and the events and device copy that bring it back."""

    __slots__ = ("host", "offloaded", "device_copy", "fetched")

    def __init__(self, host: torch.Tensor, offloaded: Any) -> None:
        self.host, self.offloaded = host, offloaded
        self.device_copy: torch.Tensor | None = None
        self.fetched: Any = None


class ActivationOffloader:
    """The saved-tensor hooks of one model, shared by its layers (numbered in forward order)."""

    def __init__(self, device: torch.device, horizon: int, min_bytes: int = MIN_BYTES) -> None:
        self.device, self.horizon, self.min_bytes = device, horizon, min_bytes
        cuda = device.type == "cuda"
        self.d2h = torch.cuda.Stream(device) if cuda else None
        self.h2d = torch.cuda.Stream(device) if cuda else None
        self.pending: dict[int, list[_Saved]] = {}  # layer -> host copies not yet prefetched
        self.offloaded = 0  # tensors moved so far (for tests and logs)

    def hooks(self, layer: int) -> torch.autograd.graph.saved_tensors_hooks:
        if layer == 0:  # a new forward: whatever an earlier one left behind is no longer wanted
            self.pending.clear()
        return torch.autograd.graph.saved_tensors_hooks(lambda t: self._pack(layer, t), self._unpack)

    def _pack(self, layer: int, tensor: torch.Tensor) -> Any:
        # Parameters (and views of them, like a transposed weight) are not activations: FSDP2
        # all-gathers them again for backward.
        if (type(tensor) is not torch.Tensor or isinstance(tensor, nn.Parameter)
                or isinstance(tensor._base, nn.Parameter) or tensor.device.type != self.device.type
                or tensor.numel() * tensor.element_size() < self.min_bytes):
            return tensor
        host = torch.empty_like(tensor, device="cpu", pin_memory=self.d2h is not None)
        if self.d2h is None:
            host.copy_(tensor)
            offloaded = None
        else:
            self.d2h.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.d2h):
                host.copy_(tensor, non_blocking=True)
            tensor.record_stream(self.d2h)  # its memory is not reused before the copy is done
            offloaded = self.d2h.record_event()
        saved = _Saved(host, offloaded)
        self.pending.setdefault(layer, []).append(saved)
        self.offloaded += 1
        return (layer, saved)

    def _unpack(self, packed: Any) -> torch.Tensor:
        if isinstance(packed, torch.Tensor):
            return packed
        layer, saved = packed
        for earlier in range(layer - 1, max(layer - 1 - self.horizon, -1), -1):
            for entry in self.pending.pop(earlier, []):
                self._fetch(entry)
        self.pending.pop(layer, None)
        if saved.device_copy is None:
            self._fetch(saved)
        tensor = saved.device_copy
        if saved.fetched is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(saved.fetched)
            tensor.record_stream(current)  # used on the compute stream, allocated on the copy stream
        return tensor

    def _fetch(self, saved: _Saved) -> None:
        """Start bringing a host copy back to the device (on the copy stream where there is one)."""
        if saved.device_copy is not None:
            return
        if self.h2d is None:
            saved.device_copy = saved.host.to(self.device, copy=True)
            return
        self.h2d.wait_event(saved.offloaded)
        with torch.cuda.stream(self.h2d):
            saved.device_copy = saved.host.to(self.device, non_blocking=True)
        saved.fetched = self.h2d.record_event()


class OffloadActivations(ActivationWrapper):
    """A decoder layer whose forward runs under the offloader's hooks. ActivationWrapper (the base of
    torch's checkpoint_wrapper) keeps parameter and state-dict names those of the bare layer."""

    def __init__(self, module: nn.Module, offloader: ActivationOffloader, index: int) -> None:
        super().__init__(module)
        self._offloader, self._index = offloader, index

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self._offloader.hooks(self._index):
            return self._checkpoint_wrapped_module(*args, **kwargs)
