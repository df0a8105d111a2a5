"""Section 7: the trainer on a GPU, only where CUDA is present.

Runs bench/gpu_check.py (Llama 3.2 1B shape, bf16 FSDP2 on one GPU, the adapter's own model
building, parallelism and train step) for its variants: plain, activation checkpointing,
torch.compile per layer, both, fp8, offload, LoRA, QLoRA and context parallelism. Each row is
one variant's tokens/s against the plain variant, with its MFU and peak memory
(torch.cuda.max_memory_allocated); a variant that could not run here (cp on one GPU, fp8
without torchao) is a row saying why.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from bench import runner
from bench.report import Row, Section, Skip

KEY, TITLE = "gpu", "7. GPU: Llama 3.2 1B shape, bf16, FSDP2, 1 GPU"
SCRIPT = Path(__file__).with_name("gpu_check.py")


def run(section: Section, quick: bool) -> None:
    import torch
    if not torch.cuda.is_available():
        raise Skip("no CUDA device here (torch.cuda.is_available() is False); "
                   "on a GPU machine run `python -m bench --only gpu` or bench/gpu_check.sh")
    args = ["--variants", "plain,ac", "--steps", "3", "--warmup", "2"] if quick else []
    with tempfile.TemporaryDirectory(prefix="hpctl-bench-gpu-") as tmp:
        out = Path(tmp) / "gpu_check.json"
        runner.run([sys.executable, str(SCRIPT), "--out", str(out), *args], ok_codes=(0, 1))
        doc = json.loads(out.read_text())
    section.rows = rows(doc)
    section.details = doc


def rows(doc: dict) -> list[Row]:
    """One row per gpu_check variant: its tokens/s against the plain variant's, MFU and memory noted."""
    results = {r["variant"]: r for r in doc["results"]}
    plain = results.get("plain", {}).get("tokens_per_s")
    out = []
    for name, r in results.items():
        if "error" in r or "skipped" in r:
            out.append(Row(name, None, "tok/s", plain, note=r.get("error") or f"skipped: {r['skipped']}"))
            continue
        mfu = f"MFU {100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "MFU -"
        out.append(Row(f"{name} vs plain", r["tokens_per_s"], "tok/s", plain,
                       note=f"{mfu}, peak {r['memory_gb']:.1f} GB, batch {r['batch']} x {r['seq_len']}"))
    return out
