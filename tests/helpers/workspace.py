"""The small workspace most config-pipeline tests start from, and helpers to write and compare it.

A plain module rather than part of conftest.py: test modules import these names to build their
parametrized cases, and `from conftest import ...` is ambiguous once tests/ has nested conftests.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"

GENERAL_CONFIG = """\
cluster_type: local
debug: false
instance_type: null
base_results_dir: results
container: null
env_vars:
  NCCL_DEBUG: WARN
training_config: ${hydra:runtime.choices.recipes}
"""

LOCAL_CLUSTER = """\
type: local
python: null
env: {}
devices_per_node: 1
device_memory_gb: 16
nproc_per_node: null
"""

# A one-rank CPU recipe small enough for every pre-flight check; line numbers matter to tests.
MINI_RECIPE = """\
run:
  name: mini
  results_dir: ${base_results_dir}/${.name}
  time_limit: "0-00:10:00"
  model_type: hf
trainer:
  devices: 1
  num_nodes: 1
  accelerator: cpu
  precision: fp32
  max_steps: 5
  log_every_n_steps: 1
exp_manager:
  exp_dir: null
  checkpoint_dir: ${recipes.exp_manager.exp_dir}/checkpoints
model:
  model_type: llama_v3
  train_batch_size: 2
  tensor_model_parallel_degree: 1
  expert_model_parallel_degree: 1
  context_parallel_degree: 1
  sharding_strategy: full_shard
  shard_degree: 1
  max_context_width: 32
  max_position_embeddings: ${.max_context_width}
  num_hidden_layers: 2
  hidden_size: 32
  num_attention_heads: 4
  num_key_value_heads: 2
  intermediate_size: 64
  vocab_size: 128
  precision: ${recipes.trainer.precision}
  lr_decay_iters: ${recipes.trainer.max_steps}
  optim:
    name: adamw
    lr: 1e-3
    betas:
    - 0.9
    - 0.95
    sched:
      name: CosineAnnealing
      warmup_steps: 1
  data:
    train_dir: null
    use_synthetic_data: true
"""

DEFAULT_FILES = {
    "config.yaml": GENERAL_CONFIG,
    "clusters/local.yaml": LOCAL_CLUSTER,
    "recipes/tiny/mini.yaml": MINI_RECIPE,
}


def write_files(root: Path, files: dict[str, str | bytes | None]) -> None:
    """Write text or bytes files under root; None removes a file."""
    for rel, content in files.items():
        path = root / rel
        if content is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def listing(root: Path) -> list[str]:
    """Every file and directory under root with its size: a cheap before/after snapshot."""
    return sorted(f"{p.relative_to(root).as_posix()}:{p.stat().st_size if p.is_file() else 'dir'}"
                  for p in root.rglob("*"))
