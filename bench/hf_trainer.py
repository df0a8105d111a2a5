"""The Hugging Face `Trainer` baseline: what a user who does not pick hpctl would most likely run.

    python -m bench.hf_trainer --data D --steps N --out F                       # one process
    torchrun --nproc_per_node 2 -m bench.hf_trainer --data D --steps N --out F  # DDP over gloo

Configured for its fastest CPU run: no evaluation, saving, reporting or progress bar, logging
only at the end, its default (fused) AdamW, the same learning rate, betas, weight decay and
clipping as the other contenders, and the same global batch (gradient accumulation of 2 in one
process). The Trainer has no FSDP on CPU (it falls back to DDP), so DDP is its multi-process
mode. A callback stamps the wall clock at the end of each optimizer step; rank 0 writes the
step times to --out as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from bench import tinyllama as tl


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    world = int(os.environ.get("WORLD_SIZE", "1"))
    times: list[float] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, *a, **k):
            times.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    torch.manual_seed(0)
    model = LlamaForCausalLM(tl.llama_config())
    with tempfile.TemporaryDirectory() as out_dir:
        targs = TrainingArguments(
            output_dir=out_dir, use_cpu=True, max_steps=args.steps,
            per_device_train_batch_size=tl.MICRO_BATCH,
            gradient_accumulation_steps=tl.GLOBAL_BATCH // (tl.MICRO_BATCH * world),
            learning_rate=tl.LR, adam_beta1=tl.BETAS[0], adam_beta2=tl.BETAS[1],
            weight_decay=tl.WEIGHT_DECAY, max_grad_norm=tl.GRAD_CLIP, lr_scheduler_type="constant",
            logging_steps=args.steps, save_strategy="no", eval_strategy="no", report_to=[],
            disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False,
            ddp_backend="gloo" if world > 1 else None, seed=0)
        trainer = Trainer(model=model, args=targs, train_dataset=_Tokens(tl.read_dataset(args.data)),
                          callbacks=[Stamp()])
        trainer.train()
        optimizer = type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer")
                         else trainer.optimizer).__name__
    if int(os.environ.get("RANK", "0")) == 0:
        steps = [b - a for a, b in zip(times, times[1:])]
        args.out.write_text(json.dumps({"step_time_s": steps, "world_size": world,
                                        "optimizer": optimizer, "optim_arg": str(targs.optim)}))


if __name__ == "__main__":
    main()
