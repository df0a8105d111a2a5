"""Section 3: the pre-flight memory estimate against the memory training really used.

For each configuration the spec is composed as plan would (bench.adapter_spec), estimated with
`hpctl.memory.estimate(spec.data, None).tensors_gb` (the peak of live tensor bytes per process, the
runtime overhead left out) and then trained for a few steps by `adapter.train` under
bench.memtrack, which counts live tensor bytes exactly (see its docstring: the CPU analogue of
torch.cuda.max_memory_allocated). The measured figure is the largest peak over the ranks. The ratio
is estimate / measured; the goal is within 10% either way. Misses are reported as they are.

The model is a small Llama (or Mixtral) sized so that weights, optimizer state and activations
all weigh in: hidden 512, 4 layers, vocabulary 8192, micro-batch 2 x 512 tokens, fp32 (--quick:
half the width, vocabulary and sequence, and only full shard, LoRA and MoE: the smoke run shows
the section works, the full run measures every path).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import adapter_spec, runner
from bench.report import Row, Section

KEY, TITLE = "memory_accuracy", "3. Memory-estimate accuracy: estimate vs measured peak tensor bytes per process"
TOLERANCE = 0.10
MB = 1e6

# transformers config fields of the model (full run, --quick); the recipe keys have the same names
# except max_position_embeddings, which is also the sequence length (model.max_context_width).
SHAPES = {
    False: {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4, "num_attention_heads": 8,
            "num_key_value_heads": 4, "vocab_size": 8192, "max_position_embeddings": 512},
    True: {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 4096, "max_position_embeddings": 256},
}


def model_overrides(shape: dict[str, int]) -> list[str]:
    return [*(f"model.{k}={v}" for k, v in shape.items()), f"model.max_context_width={shape['max_position_embeddings']}",
            "model.train_batch_size=2", "model.global_batch_size=null", "trainer.precision=fp32",
            "model.data.use_synthetic_data=true"]


@dataclass(frozen=True)
class Config:
    name: str
    nproc: int
    overrides: tuple[str, ...]
    recipe: str = adapter_spec.BASE_RECIPE
    lora_base: bool = False  # needs a local Hugging Face base model to adapt
    full_only: bool = False


FULL = ("model.sharding_strategy=full_shard", "model.shard_degree=null")
CONFIGS = (
    Config("1 process (nothing to shard)", 1, FULL, full_only=True),
    Config("full shard, 2 proc", 2, FULL),
    Config("hybrid shard 2 x 2, 4 proc", 4, ("model.sharding_strategy=hybrid_shard", "model.shard_degree=2"),
           full_only=True),
    Config("tensor parallel 2, 2 proc", 2, (*FULL, "model.tensor_model_parallel_degree=2"), full_only=True),
    Config("full shard + activation checkpointing, 2 proc", 2, (*FULL, "model.activation_checkpointing=true"),
           full_only=True),
    Config("LoRA r16 (attention), full shard, 2 proc", 2,
           (*FULL, "model.do_finetune=true", "model.peft.rank=16"), recipe="tiny/tiny_llama_lora", lora_base=True),
    Config("MoE: Mixtral 4 experts top-2, full shard, 2 proc", 2,
           (*FULL, "model.num_local_experts=4", "model.num_experts_per_tok=2"),
           recipe="tiny/tiny_mixtral"),
)


def _lora_base(directory: Path, shape: dict[str, int]) -> Path:
    """A randomly initialised Llama of the benchmark's shape saved as a Hugging Face checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False)).save_pretrained(directory)
    return directory


def _measure(cfg: Config, root: Path, steps: int, shape: dict[str, int], base: Path | None) -> tuple[dict, float, list[dict]]:
    from hpctl.memory import estimate
    extra = [f"model.hf_model_name_or_path={base}"] if cfg.lora_base else []
    spec = adapter_spec.compose(adapter_spec.slug(cfg.name), root, cfg.nproc, steps, [*model_overrides(shape), *adapter_spec.no_checkpoints(),
                                                               *cfg.overrides, *extra], recipe=cfg.recipe)
    est = estimate(spec, None)
    path = adapter_spec.write(spec)
    out = path.parent / "memtrack"
    runner.run(runner.torchrun(cfg.nproc, "bench.memtrack", "--out", str(out), "--", "adapter.train",
                               "--config", str(path)))
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    if len(ranks) != cfg.nproc:
        raise RuntimeError(f"{cfg.name}: {len(ranks)} of {cfg.nproc} ranks reported their peak")
    return {"tensors_gb": est.tensors_gb, "explain": est.explain}, max(r["peak_tensor_bytes"] for r in ranks), ranks


def run(section: Section, quick: bool) -> None:
    steps = 2 if quick else 3  # AdamW's state exists after the first step: the second is steady state
    shape = SHAPES[quick]
    configs = [c for c in CONFIGS if not (quick and c.full_only)]
    details = {}
    with tempfile.TemporaryDirectory(prefix="hpctl-bench-mem-") as tmp:
        root = Path(tmp)
        base = _lora_base(root / "lora-base", shape) if any(c.lora_base for c in configs) else None
        for cfg in configs:
            est, measured, ranks = _measure(cfg, root / "runs", steps, shape, base)
            ratio = est["tensors_gb"] * 1e9 / measured
            section.rows.append(Row(cfg.name, est["tensors_gb"] * 1e9 / MB, "MB", measured / MB,
                                    f"{1 - TOLERANCE:.1f}-{1 + TOLERANCE:.1f}x", abs(ratio - 1) <= TOLERANCE))
            details[cfg.name] = {"estimate": est, "measured_peak_bytes": measured, "ratio": ratio,
                                 "ranks": ranks, "overrides": list(cfg.overrides), "recipe": cfg.recipe}
    met = sum(1 for r in section.rows if r.met)
    section.details = {"steps": steps, "shape": shape, "method": "live tensor bytes (bench.memtrack), max over ranks",
                       "within_tolerance": f"{met}/{len(section.rows)}", "configs": details}
