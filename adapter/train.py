"""The trainer: `python -m adapter.train --config SPEC`, under torchrun, srun or alone.

Reads the resolved spec (config.py), sets up the process group and mesh, builds the model
(models.py, lora.py, parallel.py), data (data.py) and optimizer (optim.py), resumes if a
checkpoint exists (checkpoint.py), then runs the loop; nothing else lives here.

Processes: torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; under srun
without torchrun, SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (MASTER_ADDR defaults to the first
node of the allocation); alone, one process.

Exit codes: 0 finished, or preempted (SIGTERM / SIGUSR1) with a checkpoint saved; 1 error, printed
as one line (set ADAPTER_DEBUG=1 for the traceback); 3 fault injection; 143 preempted while
checkpointing is disabled.

Fault injection (tests, hpctl's auto-resume): with HPCTL_FAIL_AT_STEP=k every rank exits with
code 3 right after step k completes (after any checkpoint due at step k), but only in a run that
started fresh: a resumed run (a requeued job) ignores it and proceeds.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import socket
import subprocess
import sys
import time
from typing import Any, Iterator

from adapter import quiet
from adapter.config import load
from adapter.devices import wants_accelerators
from adapter.mesh import grad_accumulation
from adapter.rank_prefix import TORCH_LOGS_FORMAT
from adapter.reader import ConfigError, resolve_local
from adapter.trainconfig import TrainConfig

FAIL_AT_STEP = "HPCTL_FAIL_AT_STEP"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapter.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the resolved job spec (JSON or YAML)")
    args = parser.parse_args(argv)
    _distributed_env()
    rank = int(os.environ["RANK"])
    try:
        return train(load(args.config))
    except ConfigError as exc:
        if rank == 0:  # every rank reads the same spec: say it once
            for error in exc.errors:
                print(f"adapter: error: {error}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into an exit code
        if os.environ.get("ADAPTER_DEBUG") == "1":
            raise
        message = " ".join(str(exc).split()) or "(no message)"
        print(f"adapter: error on rank {rank}: {type(exc).__name__}: {message}", file=sys.stderr, flush=True)
        return 1


def _distributed_env() -> None:
    """Fill torch.distributed's variables from srun's when torchrun did not set them."""
    env = os.environ
    if "RANK" not in env and "SLURM_PROCID" in env:
        env["RANK"], env["LOCAL_RANK"] = env["SLURM_PROCID"], env.get("SLURM_LOCALID", "0")
        env["WORLD_SIZE"] = env.get("SLURM_NTASKS", "1")
        if "MASTER_ADDR" not in env and env.get("SLURM_JOB_NODELIST") and env["WORLD_SIZE"] != "1":
            hosts = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]],
                                   capture_output=True, text=True, check=True).stdout.split()
            env["MASTER_ADDR"] = hosts[0]
    for key, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        env.setdefault(key, default)
    if "MASTER_PORT" not in env:
        env["MASTER_PORT"] = str(_free_port()) if env["WORLD_SIZE"] == "1" else "29500"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(cfg: TrainConfig) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TORCH_LOGS_FORMAT", TORCH_LOGS_FORMAT)  # one rank prefix per line: torchrun's
    quiet.load_only_what_runs(cfg)
    # A missing model or tokenizer is reported before torch loads.
    if cfg.hf_model:
        resolve_local(cfg.hf_model)
    if cfg.data.tokenizer:
        resolve_local(cfg.data.tokenizer, "model.data.tokenizer_name_or_path")
    from adapter import tracking
    tracking.check(cfg.tracking)  # a missing MLflow / W&B client, too
    import torch.distributed as dist

    from adapter import parallel
    world = int(os.environ["WORLD_SIZE"])
    shape = parallel.mesh_shape(cfg.parallel, world)
    accum = grad_accumulation(cfg, shape.dp)
    device = _device(cfg.accelerator, int(os.environ["LOCAL_RANK"]))
    parallel.check_device(shape, device.type)
    if device.type == "cuda":
        dist.init_process_group("cuda:nccl,cpu:gloo", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        return _run(cfg, parallel.build_layout(shape, device.type), accum, device)
    finally:
        dist.destroy_process_group()


def _device(accelerator: str, local_rank: int) -> Any:
    """This rank's device, as devices.wants_accelerators decides with the GPUs torch sees."""
    import torch
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator == "gpu" and not gpus:
        raise ConfigError("trainer.accelerator", "gpu was asked for but CUDA is not available", "use cpu or auto")
    if wants_accelerators(accelerator, gpus):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _run(cfg: TrainConfig, layout: Any, accum: int, device: Any) -> int:
    import random

    import torch
    import torch.distributed as dist

    from adapter import (checkpoint, data, dpo, faults, ft_config, lora, metrics, models, multimodal, optim,
                         parallel, qlora, tracking)
    from adapter.modelsize import flops_per_token

    rank, world = dist.get_rank(), dist.get_world_size()
    expected = ft_config.mesh_world(cfg.fault_tolerance, cfg.expected_world_size)  # one replica group's under FT
    if rank == 0 and world != expected:
        per = " per replica group" if cfg.fault_tolerance else ""
        print(f"adapter: note: running {world} processes; trainer.devices x num_nodes gives {expected}{per}", flush=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    config = models.hf_config(cfg)
    model = models.build_empty(config)
    if cfg.lora is not None:
        model = lora.apply(model, cfg.lora)
        if cfg.lora.quantize_base:
            dtype = torch.bfloat16 if cfg.parallel.precision == "bf16" else torch.float32
            count = qlora.quantize_base(model, parallel.decoder_layers(model), layout.shape.fsdp_shards, dtype)
            if rank == 0:
                print(f"adapter: QLoRA: {count} frozen linear weights held in 4-bit NF4 (torchao)", flush=True)
    notes = parallel.parallelize(model, layout, cfg.parallel, config)
    if rank == 0:
        for note in notes:
            print(f"adapter: {note}", flush=True)
    weights = resolve_local(cfg.hf_model) if cfg.do_finetune else None
    models.materialize(model, device, cfg.seed, getattr(config, "initializer_range", 0.02), weights,
                       offload=cfg.parallel.cpu_offload)
    model.train()
    optimizer, scheduler = optim.build(model.parameters(), cfg.optim)
    reference = dpo.reference_model(cfg, config, layout, device)

    datasets = dpo.build_datasets if cfg.dpo else multimodal.build_datasets if cfg.multi_modal else data.build_datasets
    train_set, val_set = datasets(cfg.data, config.get_text_config().vocab_size, cfg.seed)
    flops = flops_per_token(models.arch_fields(cfg, config), cfg.data.seq_len)
    peak = metrics.peak_tflops(device, cfg.peak_tflops)
    aux_coef = getattr(config, "router_aux_loss_coef", 0.0) if getattr(config, "output_router_logits", False) else 0.0
    export_dtype = torch.bfloat16 if cfg.parallel.precision == "bf16" else torch.float32
    if cfg.fault_tolerance is not None:  # one replica group of several under torchft: its own loop
        from adapter import fault_tolerance
        return fault_tolerance.run(
            cfg, layout, accum, device, model, optimizer, scheduler, train_set, val_set,
            lambda opt, batches, sync: train_step(model, opt, batches, layout, cfg.grad_clip, device, aux_coef, sync),
            _validate, lambda at: export_model(cfg, model, config, at, rank, export_dtype), flops, peak)
    train_data = data.TrainData(train_set, cfg.data, cfg.micro_batch, accum, layout.dp_rank, layout.shape.dp, cfg.seed)

    ckpt = checkpoint.Checkpointer(cfg.checkpoint, rank)
    found = [checkpoint.find_resume(cfg.checkpoint) if rank == 0 else None]
    dist.broadcast_object_list(found, src=0)
    resume = found[0]
    step = checkpoint.restore(resume, model, optimizer, scheduler, train_data, rank, layout.dp_rank) if resume else 0
    if rank == 0:
        print(f"adapter: {'resumed from ' + str(resume) if resume else 'starting fresh'} at step {step}; "
              f"mesh dp_replicate={layout.shape.replicate} dp_shard={layout.shape.shard} "
              f"{f'cp={layout.shape.cp} ' if layout.shape.cp > 1 else ''}tp={layout.shape.tp}, "
              f"{accum} micro-batch(es) per step", flush=True)

    preemption = checkpoint.Preemption()
    fail_at = int(os.environ.get(FAIL_AT_STEP) or 0) if resume is None else 0
    tokens_per_step = cfg.micro_batch * layout.shape.dp * accum * cfg.data.seq_len
    if cfg.dpo:  # two sequences per pair; the reference's forward adds a third of a training step
        tokens_per_step *= 2
        if reference is not None:
            flops *= 4 / 3

    def state() -> dict[str, Any]:
        return checkpoint.training_state(model, optimizer, scheduler, train_data, step, rank, layout.dp_rank)

    def export() -> None:
        export_model(cfg, model, config, step, rank, export_dtype)

    log = metrics.MetricsLog(cfg.results_dir, rank, cfg.tensorboard_dir, step,
                             tracking.start(cfg, rank, resumed=resume is not None))
    try:
        window = metrics.Window()  # steps since the last logged one: their time and data wait
        while step < cfg.max_steps:
            step += 1
            start = time.perf_counter()
            batches = [train_data.next() for _ in range(accum)]
            data_wait = time.perf_counter() - start
            if cfg.dpo:
                loss, grad_norm, extra = dpo.train_step(model, reference, optimizer, batches, layout, cfg.grad_clip,
                                                        device, cfg.dpo, aux_coef)
            else:
                loss, grad_norm = train_step(model, optimizer, batches, layout, cfg.grad_clip, device, aux_coef)
                extra = {}
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            validating = val_set is not None and cfg.val_batches != 0 and step % cfg.val_every == 0
            log_due = step % cfg.log_every == 0 or step == cfg.max_steps or validating
            # .item() waits for the device: only on steps that log, so the host runs ahead in between.
            values = (loss.item(), grad_norm.item()) if log_due else None
            window.add(time.perf_counter() - start, data_wait)
            record = {}
            if values is not None:
                step_time, data_wait = window.take()
                record = {"step": step, "max_steps": cfg.max_steps, "loss": values[0], "grad_norm": values[1],
                          "lr": lr, **metrics.throughput(tokens_per_step, step_time, world, flops, peak),
                          "memory_gb": metrics.memory_gb(device), "step_time_s": step_time,
                          "data_wait_s": data_wait, **extra}
            if validating:
                batches = data.val_batches(val_set, cfg.val_batch, cfg.val_batches, layout.dp_rank, layout.shape.dp)
                val_loss = (dpo.evaluate(model, reference, batches, layout, device, cfg.dpo) if cfg.dpo
                            else _validate(model, batches, layout, device))
                if val_loss is not None:
                    record["val_loss"] = val_loss
            if record:
                log.log(record)
            faults.crash_if("step", step)
            if cfg.checkpoint.enabled and cfg.checkpoint.every_n_steps and step % cfg.checkpoint.every_n_steps == 0:
                ckpt.save(step, state())
            if cfg.checkpoint.export_every_n_steps and step % cfg.checkpoint.export_every_n_steps == 0:
                export()
            if step == fail_at:
                ckpt.wait()
                log.close()
                if rank == 0:
                    print(f"adapter: {FAIL_AT_STEP}={fail_at} reached: exiting with code 3 (fault injection)", flush=True)
                sys.stderr.flush()
                os._exit(3)
            if preemption.requested():
                if not cfg.checkpoint.enabled:
                    if rank == 0:
                        print(f"adapter: preempted at step {step}; checkpointing is disabled, nothing saved", flush=True)
                    log.close()
                    return 143
                ckpt.save(step, state())
                ckpt.wait()
                log.close()
                if rank == 0:
                    print(f"adapter: preempted at step {step}: checkpoint saved, exiting", flush=True)
                return 0

        if cfg.checkpoint.enabled and cfg.checkpoint.save_last:
            ckpt.save(step, state())
        ckpt.wait()
        if cfg.checkpoint.export_last:
            export()
        log.close()
        if rank == 0:
            print(f"adapter: finished at step {step}", flush=True)
        return 0
    except BaseException:  # the tracker still sends what it holds, marks the run failed and says what it lost
        log.close(failed=True)
        raise


def export_model(cfg: TrainConfig, model: Any, config: Any, step: int, rank: int, dtype: Any) -> None:
    """The Hugging Face export of `step` (and the LoRA adapter alone); every rank calls it."""
    import torch.distributed as dist

    from adapter import checkpoint, lora, models
    out = cfg.checkpoint.dir / "full" / f"step_{step:08d}"
    if out.exists():
        return
    full = checkpoint.gather_full(model)
    if rank == 0:
        hf = lora.merged(full, cfg.lora) if cfg.lora else {models.checkpoint_key(k): v for k, v in full.items()}
        config_out = copy.deepcopy(config)
        config_out.use_cache = True
        checkpoint.write_hf(hf, config_out, out, dtype, _tokenizer_files(cfg))
        if cfg.lora:
            lora.write_adapter(model, full, cfg.checkpoint.dir / "peft" / f"step_{step:08d}")
    dist.barrier()


@contextlib.contextmanager
def _micro_loss(model: Any, batch: dict[str, Any], device: Any, layout: Any) -> Iterator[tuple[Any, Any, Any]]:
    """(sum of token cross-entropies, labelled tokens, MoE load-balancing loss or None) of this
    rank's tokens of one batch. With context parallelism the rank holds part of each sequence and
    its backward must run inside this block too (ring attention's backward exchanges keys)."""
    import torch
    import torch.nn.functional as F

    from adapter import parallel
    ids = batch["input_ids"].to(device, copy=layout.shape.cp > 1)  # cp cuts in place: never the batch's own
    mask = batch.get("attention_mask")
    mask = mask.to(device) if mask is not None and not bool(mask.all()) else None
    # Predict token t+1 at position t; the last position has no target. Shifted before any split.
    labels = F.pad(batch["labels"][:, 1:], (0, 1), value=-100).to(device)
    from adapter.multimodal import MODEL_INPUTS
    images = {k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}  # a vision-language model's inputs
    inputs: dict[str, Any] = {}
    split = [ids, labels]
    if layout.shape.cp > 1:
        if mask is not None and bool((mask[:, 1:] > mask[:, :-1]).any()):
            raise ValueError("context parallelism needs right-padded samples (attention_mask 1s then 0s)")
        # Right padding under causal attention never reaches a real token, so no mask is needed.
        # The rank's tokens are not contiguous: position ids carry their global positions (RoPE),
        # and an all-ones mask keeps transformers from reading position jumps as packed sequences.
        positions = torch.arange(ids.shape[1], device=device).expand_as(ids).contiguous()
        split.append(positions)
        inputs["position_ids"] = positions
    with parallel.sequence_shards(layout, split):
        if layout.shape.cp > 1:
            mask = torch.ones_like(ids)
        out = model(input_ids=ids, attention_mask=mask, use_cache=False, **inputs, **images)
        logits = out.logits.float()
        ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100, reduction="sum")
        aux = getattr(out, "aux_loss", None)
        # The caller's backward runs inside this block: holding the logits (vocab x tokens, and
        # their fp32 copy under bf16) through it would add them to the step's peak memory.
        del out, logits
        yield ce, (labels != -100).sum().to(torch.float32), aux


def train_step(model: Any, optimizer: Any, batches: list[dict[str, Any]], layout: Any, grad_clip: float,
                device: Any, aux_coef: float, sync: Any = None) -> tuple[Any, Any]:
    """One optimizer step over the accumulated micro-batches. The loss is the mean over every
    labelled token of the global batch, whatever the layout: each micro-batch's sum (over this
    rank's tokens: all of its batch's, or its cp share) is divided by the global token count, and
    scaled by the number of ranks FSDP's gradient mean divides by (data parallel x context parallel).
    `sync`, when given, runs between the backward and clipping (fault tolerance's cross-group mean)."""
    import torch
    import torch.distributed as dist

    from adapter import parallel
    tokens = torch.tensor([float((b["labels"][:, 1:] != -100).sum()) for b in batches], device=device).sum()
    dist.all_reduce(tokens, group=layout.dp_group)
    loss_sum = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        parallel.set_gradient_sync(model, i == len(batches) - 1)
        with _micro_loss(model, batch, device, layout) as (ce, _, aux):
            loss = ce / tokens
            objective = loss * layout.shape.dp * layout.shape.cp
            if aux_coef and aux is not None:
                objective = objective + aux_coef * aux / len(batches)
            objective.backward()
        loss_sum += loss.detach()
    dist.all_reduce(loss_sum, group=layout.token_group)
    if sync is not None:
        sync()
    grad_norm = parallel.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm


def _validate(model: Any, batches: Any, layout: Any, device: Any) -> float | None:
    """Mean token loss over the validation batches (None when they hold no labelled token)."""
    import torch
    import torch.distributed as dist
    model.eval()
    totals = torch.zeros(2, device=device)
    with torch.no_grad():
        for batch in batches:
            with _micro_loss(model, batch, device, layout) as (ce, count, _):
                totals += torch.stack([ce, count.to(device)])
    dist.all_reduce(totals, group=layout.token_group)
    model.train()
    return (totals[0] / totals[1]).item() if totals[1] > 0 else None


def _tokenizer_files(cfg: TrainConfig) -> list[Any]:
    """The tokenizer's files, copied into exports so they are usable as they stand."""
    if cfg.data.tokenizer is None:
        return []
    directory = resolve_local(cfg.data.tokenizer, "model.data.tokenizer_name_or_path")
    names = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
             "vocab.json", "merges.txt", "preprocessor_config.json", "processor_config.json")
    return [directory / n for n in names if (directory / n).is_file()]


if __name__ == "__main__":
    sys.exit(main())
