"""GPU check of the trainer: bf16 FSDP2 on one GPU with a Llama 3.2 1B shape.

Builds the model exactly as `adapter.train` does (models.py table, meta-device init, parallel.py's
FSDP2 with bf16 parameters and fp32 reduction, materialised shard by shard) and times the
trainer's own `train_step` on random tokens, for each variant: plain, activation checkpointing,
torch.compile per layer, and both; fp8 (torchao float8, eager and compiled: compare with plain and
compile, same shape); activation offloading with checkpointing (compare with ac: peak memory and
tokens/s); context parallelism (cp 2: ring attention over 2 GPUs, one process each, started with
torchrun by this script; its row also compares the loss of a batch under ring attention with the
same model's full-sequence loss, and is skipped with the reason on a machine with fewer GPUs).
Prints tokens/s, achieved TFLOP/s, MFU and peak memory, and writes them as JSON (--out).

It needs torch, transformers and safetensors only (no torchdata: data.py is not used), so it runs
on a bare CUDA image (torch 2.11, transformers 5.x, Python 3.12); the fp8 variants also need
torchao (gpu_check.sh installs wheels carried in .whl/), and are reported as skipped without it. World size 1 with a one-rank
NCCL process group (FSDP2 needs a group; NCCL with one rank does no communication).

  python bench/gpu_check.py                 # on a CUDA machine
  python bench/gpu_check.py --dry-run       # CPU import and code-path check: a 2-layer small model
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from adapter import metrics, models, parallel  # noqa: E402
from adapter.config import from_recipe  # noqa: E402
from adapter.train import _validate, train_step  # noqa: E402
from adapter.modelsize import flops_per_token  # noqa: E402

# Llama 3.2 1B (HyperPod's hf_llama3_2_1b recipe), at sequence length 2048.
LLAMA_3_2_1B = {"model_type": "llama_v3", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256, "max_context_width": 2048,
                "rope_theta": 500000.0, "tie_word_embeddings": True,
                "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "high_freq_factor": 4.0,
                                 "low_freq_factor": 1.0, "original_max_position_embeddings": 8192},
                "max_position_embeddings": 131072}
DRY_RUN = {**LLAMA_3_2_1B, "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
           "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1024, "max_context_width": 128}
AC, COMPILE, FP8 = {"activation_checkpointing": True}, {"compile": True}, {"fp8": True}
CP = 2  # the cp row: one sequence split over this many GPUs
CP_LOSS_RTOL = 1e-2  # bf16 over a different reduction order: the two losses agree to well within this
# variant -> the recipe's model keys it sets (HyperPod's own spellings)
VARIANTS = {"plain": {}, "ac": AC, "compile": COMPILE, "ac+compile": {**AC, **COMPILE},
            "fp8": FP8, "fp8+compile": {**FP8, **COMPILE},
            "ac+offload": {**AC, "offload_activations": True, "activation_loading_horizon": 2},
            "lora": {}, "qlora": {}, "cp": {"context_parallel_degree": CP}}
# LoRA rows (peft's default targets, as HyperPod's QLoRA recipes): QLoRA's peak memory against
# LoRA's, the base held in 4-bit NF4 (needs peft and torchao; the row says so when they are absent)
PEFT = {"lora": False, "qlora": True}


def recipe(arch: dict, batch: int, keys: dict, accelerator: str) -> dict:
    return {"run": {"name": "gpu_check", "results_dir": "/tmp/gpu_check"},
            "trainer": {"accelerator": accelerator, "precision": "bf16", "max_steps": 1},
            "model": {**arch, "train_batch_size": batch, "seed": 0, "grad_clip": 1.0, **keys,
                      "optim": {"lr": 1e-4, "weight_decay": 0.01, "betas": [0.9, 0.95]},
                      "data": {"use_synthetic_data": True}}}


def context_parallel_row(args: argparse.Namespace, device: torch.device) -> dict:
    """The cp row: skipped with the reason below CP GPUs, else this script again under torchrun
    with CP processes (--cp-worker), whose rank 0 prints its result as the last line."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < CP:
        where = "a CPU dry run (ring attention has no CPU kernel)" if device.type != "cuda" else f"{gpus} GPU"
        return {"variant": "cp", "skipped": f"context parallelism {CP} needs {CP} or more GPUs, one process each; "
                                            f"this is {where}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={CP}", __file__,
           "--cp-worker", "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.peak_tflops:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"variant": "cp", "error": f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}"}
    return json.loads(lines[-1])


def measure(name: str, arch: dict, args: argparse.Namespace, device: torch.device) -> dict:
    if (VARIANTS[name].get("fp8") or PEFT.get(name)) and importlib.util.find_spec("torchao") is None:
        return {"variant": name, "skipped": "torchao is not installed (carry its wheel in .whl/)"}
    if name == "cp" and not args.cp_worker:
        return context_parallel_row(args, device)
    cfg = from_recipe(recipe(arch, args.batch, VARIANTS[name], "gpu" if device.type == "cuda" else "cpu"))
    world = dist.get_world_size()
    layout = parallel.build_layout(parallel.mesh_shape(cfg.parallel, world), device.type)
    config = models.hf_config(cfg)
    model = models.build_empty(config)
    if name in PEFT:
        from adapter import lora, qlora
        from adapter.trainconfig import LoraConfig
        model = lora.apply(model, LoraConfig(rank=16, alpha=32.0, dropout=0.0, target_modules=None,
                                             quantize_base=PEFT[name]))
        if PEFT[name]:
            qlora.quantize_base(model, parallel.decoder_layers(model), layout.shape.fsdp_shards, torch.bfloat16)
    notes = parallel.parallelize(model, layout, cfg.parallel, config)
    models.materialize(model, device, cfg.seed, config.initializer_range, None)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01, foreach=True)
    seq = cfg.data.seq_len
    generator = torch.Generator().manual_seed(0)

    def batch() -> list[dict[str, torch.Tensor]]:
        ids = torch.randint(config.vocab_size, (args.batch, seq), generator=generator)
        return [{"input_ids": ids, "labels": ids}]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    checks = {}
    if layout.shape.cp > 1:  # the same batch's loss under ring attention and over whole sequences
        probe = batch()
        whole = dataclasses.replace(layout, shape=dataclasses.replace(layout.shape, cp=1))
        ring, full = _validate(model, probe, layout, device), _validate(model, probe, whole, device)
        checks = {"ring_attention_loss": ring, "full_attention_loss": full}
        if abs(ring - full) > CP_LOSS_RTOL * abs(full):  # a wrong split or mask is an error, not a row
            checks["error"] = (f"ring attention loss {ring:.5f} differs from full attention's {full:.5f} "
                               f"by more than {CP_LOSS_RTOL:.0%}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.warmup):
        train_step(model, optimizer, batch(), layout, cfg.grad_clip, device, 0.0)
    sync()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        loss, _ = train_step(model, optimizer, batch(), layout, cfg.grad_clip, device, 0.0)
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    flops = flops_per_token(models.arch_fields(cfg, config), seq)
    result = {"variant": name, "batch": args.batch, "seq_len": seq, "step_time_s": seconds, "warmup_s": warmup_s,
              "loss": loss.item(), "memory_gb": metrics.memory_gb(device),
              "params": sum(p.numel() for p in model.parameters()), "flops_per_token": flops, "notes": notes,
              "world": world, **checks,
              **metrics.throughput(args.batch * seq, seconds, world, flops, metrics.peak_tflops(device, args.peak_tflops))}
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, 2 small layers, 1 step: checks imports and code paths")
    parser.add_argument("--variants", default=None, help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (default 4; dry run 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; dry run 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; dry run 1)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the device table for MFU")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--cp-worker", action="store_true", help=argparse.SUPPRESS)  # one rank of the cp row
    args = parser.parse_args()
    dry = args.dry_run
    args.batch = args.batch or (1 if dry else 4)
    args.steps = args.steps or (1 if dry else 10)
    args.warmup = args.warmup or (1 if dry else 3)
    names = (args.variants or ("plain,ac" if dry else ",".join(VARIANTS))).split(",")
    if not dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry-run on a CPU machine)", file=sys.stderr)
        return 1

    if args.cp_worker:
        return cp_worker(args)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29512")
    device = torch.device("cpu") if dry else torch.device("cuda", 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("cuda:nccl,cpu:gloo", rank=0, world_size=1, device_id=device)
        name = torch.cuda.get_device_name(device)
    else:
        dist.init_process_group("gloo", rank=0, world_size=1)
        name = "cpu (dry run)"
    print(f"gpu_check: {name}, torch {torch.__version__}, Python {sys.version.split()[0]}", flush=True)
    results = []
    try:
        for variant in names:
            try:
                result = measure(variant, DRY_RUN if dry else LLAMA_3_2_1B, args, device)
            except ImportError as exc:  # peft / torchao absent on a bare CUDA image
                result = {"variant": variant, "error": f"needs {exc.name}"}
            except torch.OutOfMemoryError:
                result = {"variant": variant, "error": "out of memory"}
                torch.cuda.empty_cache()
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        dist.destroy_process_group()
    print(f"\n{'variant':<12}{'tokens/s':>12}{'TFLOP/s':>10}{'MFU':>8}{'peak GB':>10}{'step s':>9}")
    for r in results:
        if "error" in r or "skipped" in r:
            print(f"{r['variant']:<12}  {r.get('error') or 'skipped: ' + r['skipped']}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{r['variant']:<12}{r['tokens_per_s']:>12.0f}{r['tflops_per_device']:>10.1f}{mfu:>8}"
              f"{r['memory_gb']:>10.2f}{r['step_time_s']:>9.3f}")
    if args.out:
        args.out.write_text(json.dumps({"device": name, "torch": torch.__version__, "results": results}, indent=1) + "\n")
    return 0 if all("error" not in r for r in results) else 1


def cp_worker(args: argparse.Namespace) -> int:
    """One rank of the cp row, under torchrun: measure "cp" on this rank's GPU; rank 0 prints it."""
    rank = int(os.environ["RANK"])
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    torch.cuda.set_device(device)
    dist.init_process_group("cuda:nccl,cpu:gloo", device_id=device)
    try:
        result = measure("cp", LLAMA_3_2_1B, args, device)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
