"""The hand-written PyTorch loops the adapter is measured against: the floor a trainer adds to.

    python -m bench.plain_loop --data D --steps N --out F                      # one process
    torchrun --nproc_per_node 2 -m bench.plain_loop --fsdp2 --data D ...     # FSDP2, two processes

Same model, data, global batch, AdamW and clipping as every other contender; no data loader,
no logging, nothing but forward, backward, clip and step. Rank 0 writes the wall-clock time of
each optimizer step (end to end, as a user sees it) to --out as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench import tinyllama as tl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--fsdp2", action="store_true", help="shard with fully_shard (run under torchrun)")
    args = ap.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    torch.manual_seed(0)
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM(tl.llama_config())
    if args.fsdp2:
        from torch.distributed.fsdp import fully_shard
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    elif world > 1:
        raise SystemExit("plain_loop: more than one process needs --fsdp2")
    opt = torch.optim.AdamW(model.parameters(), lr=tl.LR, betas=tl.BETAS, weight_decay=tl.WEIGHT_DECAY)

    accum = tl.GLOBAL_BATCH // (tl.MICRO_BATCH * world)
    data = tl.read_dataset(args.data)
    times = [time.perf_counter()]
    for step in range(args.steps):
        for micro in range(accum):
            start = step * tl.GLOBAL_BATCH + (rank * accum + micro) * tl.MICRO_BATCH
            x = data[start:start + tl.MICRO_BATCH]
            loss = model(input_ids=x, labels=x).loss / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tl.GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    if rank == 0:
        steps = [b - a for a, b in zip(times, times[1:])]
        args.out.write_text(json.dumps({"step_time_s": steps, "world_size": world,
                                        "last_loss": loss.item() * accum}))
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
