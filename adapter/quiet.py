"""A run's log speaks of the run: optional dependencies load only when the recipe uses them, and a
dependency's warning that says nothing about the job is filtered where it arises.

transformers imports torchao whenever it is installed (its quantizers ask importlib for it), and
torchao then logs each of its prebuilt CUDA extensions that this build cannot load and registers
Enum constants that torch's _pytree warns about: eight lines in a CPU run that uses neither fp8
nor NF4. A run that needs torchao keeps it, with those two messages filtered (fp8's tensorwise
scaling and NF4 use none of those extensions). Torch-free: train.py calls this before torch loads.
"""
from __future__ import annotations

import logging
import sys

from adapter.trainconfig import TrainConfig

# Dependency messages that say nothing about the job: logger -> text of the message.
NOISE = {
    "torch.utils._pytree": "is an Enum subclass and is now natively supported",
    "torchao": "Failed to load",
}


def uses_torchao(cfg: TrainConfig) -> bool:
    """fp8 training (parallel.apply_fp8) and QLoRA's NF4 base weights (qlora.py) are torchao's."""
    return cfg.parallel.fp8 is not None or (cfg.lora is not None and cfg.lora.quantize_base)


class _Drop(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def filter_noise() -> None:
    """Install the NOISE filters on their loggers (once; loggers exist before their modules load)."""
    for name, text in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) and f.text == text for f in logger.filters):
            logger.addFilter(_Drop(text))


def load_only_what_runs(cfg: TrainConfig) -> None:
    """Before torch and transformers load: keep torchao out of a run that does not use it (None in
    sys.modules makes a package absent to importlib.util.find_spec and to import), and filter the
    noise of what does load."""
    if not uses_torchao(cfg):
        sys.modules.setdefault("torchao", None)
    filter_noise()
