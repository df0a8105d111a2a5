"""A custom training script that uses hpctl's adapter as a library.

Run by hpctl in place of the built-in trainer (`git.entry_script`), under torchrun like it, with
the same one argument, the resolved spec that `hpctl plan` showed:

    hpctl apply tiny_llama --cluster local git.entry_script=$PWD/examples/train_tiny.py

It takes the adapter's pieces (the spec reader, model builder, parallel layout, data, optimizer,
checkpoints, metrics) and writes its own loop around them: here, plain next-token training with
a z-loss (PaLM's log(Z)^2 penalty, which keeps the softmax normaliser near 1) added to the
objective and logged as its own metric. Sharded checkpoints and resume work as in adapter.train.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from adapter import checkpoint, config, data, mesh, metrics, models, optim, parallel

Z_LOSS = 1e-4  # weight of the z-loss term


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the resolved job spec hpctl wrote")
    cfg = config.load(parser.parse_args().config)  # the trainer's own reader: same fields, same refusals

    cuda = cfg.accelerator != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(cfg.seed)

    # Model: the recipe's architecture on the meta device, sharded by the recipe's layout, then filled.
    layout = parallel.build_layout(parallel.mesh_shape(cfg.parallel, world), device.type)
    hf_config = models.hf_config(cfg)
    model = models.build_empty(hf_config)
    parallel.parallelize(model, layout, cfg.parallel, hf_config)
    models.materialize(model, device, cfg.seed, getattr(hf_config, "initializer_range", 0.02), None)
    optimizer, scheduler = optim.build(model.parameters(), cfg.optim)

    # Data: the recipe's dataset, this rank's share of each global batch.
    accum = mesh.grad_accumulation(cfg, layout.shape.dp)
    train_set, _ = data.build_datasets(cfg.data, hf_config.vocab_size, cfg.seed)
    loader = data.TrainData(train_set, cfg.data, cfg.micro_batch, accum, layout.dp_rank, layout.shape.dp, cfg.seed)

    # Resume from the newest committed checkpoint of this job, exactly where it stopped.
    ckpt = checkpoint.Checkpointer(cfg.checkpoint, rank)
    found = [checkpoint.find_resume(cfg.checkpoint) if rank == 0 else None]
    dist.broadcast_object_list(found, src=0)
    step = checkpoint.restore(found[0], model, optimizer, scheduler, loader, rank, layout.dp_rank) if found[0] else 0
    log = metrics.MetricsLog(cfg.results_dir, rank, None, step)
    tokens_per_step = cfg.micro_batch * layout.shape.dp * accum * cfg.data.seq_len

    while step < cfg.max_steps:
        step += 1
        start = time.perf_counter()
        totals = torch.zeros(2, device=device)  # cross-entropy, z-loss (means over this rank's tokens)
        for _ in range(accum):
            batch = loader.next()
            ids = batch["input_ids"].to(device)
            labels = F.pad(batch["labels"][:, 1:], (0, 1), value=-100).to(device)
            logits = model(input_ids=ids, use_cache=False).logits.float()
            ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
            z = torch.logsumexp(logits, dim=-1).pow(2).mean()
            ((ce + Z_LOSS * z) / accum).backward()  # FSDP averages the gradients over data-parallel ranks
            totals += torch.stack([ce.detach(), z.detach()]) / accum
        grad_norm = parallel.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        dist.all_reduce(totals, group=layout.dp_group)
        totals /= layout.shape.dp
        seconds = time.perf_counter() - start
        log.log({"step": step, "max_steps": cfg.max_steps, "loss": totals[0].item(), "z_loss": totals[1].item(),
                 "grad_norm": grad_norm.item(), "lr": lr,
                 **metrics.throughput(tokens_per_step, seconds, world, 0.0, None),
                 "memory_gb": metrics.memory_gb(device), "step_time_s": seconds, "data_wait_s": 0.0})
        if cfg.checkpoint.enabled and cfg.checkpoint.every_n_steps and step % cfg.checkpoint.every_n_steps == 0:
            ckpt.save(step, checkpoint.training_state(model, optimizer, scheduler, loader, step, rank, layout.dp_rank))

    if cfg.checkpoint.enabled and cfg.checkpoint.save_last:
        ckpt.save(step, checkpoint.training_state(model, optimizer, scheduler, loader, step, rank, layout.dp_rank))
    ckpt.wait()
    log.close()
    if rank == 0:
        print(f"train_tiny: finished at step {step}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
