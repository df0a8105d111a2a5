"""Peak live tensor bytes of a training process on CPU, where torch keeps no allocator statistics.

    torchrun ... -m bench.memtrack --out DIR -- adapter.train --config SPEC

runs `adapter.train` unchanged inside a TorchDispatchMode that sees every tensor an operator
returns, counts each storage once (by its C++ identity) until it is freed (a weakref finalizer on
the storage), and keeps the running maximum. That is the CPU equivalent of
`torch.cuda.max_memory_allocated()` without the allocator's rounding: the quantity
`hpctl.memory.estimate(...).tensors_gb` predicts. Two details make it exact for FSDP2:
- FSDP2 frees and re-allocates gathered parameters with `UntypedStorage.resize_`, which is not an
  operator, so `resize_` is wrapped to account the size change of storages being tracked;
- DTensors (FSDP2 shards, tensor-parallel weights) are wrapper tensors without storage of their
  own: their local tensors are what is counted.
Temporaries that live only inside a DTensor operator (tensor parallel's redistribution buffers)
are not seen. Each rank writes DIR/rank<N>.json with its peak, and also its peak RSS growth
(ru_maxrss minus the RSS when tracking started) as a coarse cross-check.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves


class LiveTensorBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}  # storage identity -> bytes
        self.current = 0
        self.peak = 0
        self.peak_op = ""  # the operator (or resize_) that set the peak: where to look when it surprises
        self._op = "resize_"
        self._resize = None

    def __enter__(self):
        self._patch_resize()
        return super().__enter__()

    def __exit__(self, *exc):
        torch.UntypedStorage.resize_ = self._resize
        return super().__exit__(*exc)

    def _patch_resize(self) -> None:
        original = self._resize = torch.UntypedStorage.resize_
        tracker = self

        def resize_(storage, size):
            out = original(storage, size)
            key = storage._cdata
            if key in tracker.live:
                tracker._op = "resize_"
                tracker._set(key, storage.nbytes())
            return out

        torch.UntypedStorage.resize_ = resize_

    def _set(self, key: int, nbytes: int) -> None:
        self.current += nbytes - self.live.get(key, 0)
        self.live[key] = nbytes
        if self.current > self.peak:
            self.peak, self.peak_op = self.current, self._op

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def _track(self, t: torch.Tensor) -> None:
        if is_traceable_wrapper_subclass(t):
            for attr in t.__tensor_flatten__()[0]:
                inner = getattr(t, attr)
                if isinstance(inner, torch.Tensor):
                    self._track(inner)
            return
        if t.is_meta:
            return
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key = storage._cdata
        if key not in self.live:
            self._set(key, storage.nbytes())
            weakref.finalize(storage, self._free, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._op = str(func)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser(usage="python -m bench.memtrack --out DIR -- MODULE [ARGS...]")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("target", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    target = args.target[1:] if args.target[:1] == ["--"] else args.target
    module, *module_args = target
    rank = int(os.environ.get("RANK", "0"))
    rss_start = _rss_bytes()
    tracker = LiveTensorBytes()
    sys.argv = [module, *module_args]
    code = 0
    with tracker:
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "peak_tensor_bytes": tracker.peak, "peak_op": tracker.peak_op,
        "end_tensor_bytes": tracker.current,
        "rss_start_bytes": rss_start, "rss_peak_bytes": rss_peak, "exit_code": code}))
    sys.exit(code)


if __name__ == "__main__":
    main()
