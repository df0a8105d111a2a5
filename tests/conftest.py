"""Shared fixtures: small workspaces written per test, the CLI run in-process, and ../shared.

Tests that need a workspace build their own under tmp_path (`tiny_workspace`), so they do not
depend on the built-in catalog and never write into the repository.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
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


@pytest.fixture
def tiny_workspace(tmp_path: Path) -> Callable[..., Path]:
    """A builder: `tiny_workspace(files={...}, name="ws")` writes the default workspace (general
    config, a local cluster, `recipes/tiny/mini.yaml`) under tmp_path, then `files` on top of it
    (None removes one of the defaults), and returns the workspace root."""
    def build(files: dict[str, str | bytes | None] | None = None, name: str = "ws") -> Path:
        root = tmp_path / name
        root.mkdir()
        write_files(root, {**DEFAULT_FILES, **(files or {})})
        return root
    return build


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `hpctl.cli.main(argv)` in-process: returns (exit code, stdout, stderr)."""
    from hpctl.cli import main

    def run(*argv: object) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        out, err = capsys.readouterr()
        code = exc.value.code
        return (code if isinstance(code, int) else (0 if code is None else 1)), out, err
    return run


@pytest.fixture(scope="session")
def hpctl_bin() -> Path:
    """The installed `hpctl` console script of the interpreter running the tests."""
    path = Path(sys.executable).parent / "hpctl"
    if not path.exists():
        pytest.skip(f"no hpctl console script beside {sys.executable} (pip install -e . first)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository (public HyperPod recipes used as test input)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED.resolve()} is absent: the tests reading public HyperPod recipes need it")
    return SHARED.resolve()


@pytest.fixture(scope="session")
def hyperpod_v1(shared_dir: Path) -> Path:
    """SageMaker HyperPod v1's launcher tree (config.yaml, cluster/, recipes/)."""
    root = shared_dir / "peer-recipes" / "hyperpod-v1"
    if not (root / "config.yaml").is_file():
        pytest.skip(f"{root} is absent: the HyperPod v1 recipes are needed for this test")
    return root
