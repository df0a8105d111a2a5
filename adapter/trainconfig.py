"""What the trainer runs: the typed TrainConfig and its parts, and the enumerations the rules accept.

Plain frozen dataclasses, built only by the rules (v1.py for HyperPod v1 recipes, llmft.py for v2
LLMFT recipes, tracking_keys.py for MLflow / W&B) and read by the torch modules. hpctl's JSON
schemas repeat the enumerations for editors; tests/test_trainer_contract.py proves they are equal.
Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHARDING_STRATEGIES = ("full_shard", "hybrid_shard", "shard_grad_op", "_hybrid_shard_zero2", "no_shard")
SCHEDULES = ("CosineAnnealing", "linear", "LinearAnnealingWithWarmUp", "constant")
OPTIMIZERS = ("adamw", "adamw_fp32OptState")
PEFT_TYPES = ("lora", "qlora_4bit")  # qlora_4bit: NF4 base weights (torchao), on GPU or CPU
# trainer.precision spellings (Lightning's and HyperPod's) mapped to what FSDP2 computes in.
PRECISIONS = {"bf16": "bf16", "bf16-mixed": "bf16", "bf16-true": "bf16",
              "32": "fp32", "fp32": "fp32", "32-true": "fp32"}



@dataclass(frozen=True)
class ParallelConfig:
    tp: int
    sharding_strategy: str
    shard_degree: int | None  # None: shard over the whole data-parallel group
    activation_checkpointing: bool
    cpu_offload: bool
    compile: bool
    precision: str  # "bf16" (bf16 params, fp32 reduction) or "fp32"
    fp8: str | None = None  # torchao float8 scaling recipe of the decoder layers' Linears; None: off
    # model.offload_activations: saved activations go to host memory (a no-op without a GPU, see
    # offload_note); the horizon is how many layers ahead backward brings them back.
    offload_activations: bool = False
    activation_loading_horizon: int = 2
    cp: int = 1  # model.context_parallel_degree: ranks that split each sequence (ring attention)

    @property
    def offload_note(self) -> str | None:
        """What the plan states as info about activation offloading (None when it is off)."""
        if not self.offload_activations:
            return None
        return (f"activation offloading moves each decoder layer's saved activations to pinned host memory, "
                f"prefetching {self.activation_loading_horizon} layer(s) ahead in backward; on a CPU-only run "
                "the activations already live in host memory, so it does nothing")


@dataclass(frozen=True)
class SchedConfig:
    name: str
    warmup_steps: int
    constant_steps: int
    min_lr: float
    max_steps: int  # length of the schedule: sched.max_steps, else model.lr_decay_iters, else trainer.max_steps


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    sched: SchedConfig


@dataclass(frozen=True)
class DataConfig:
    synthetic: bool
    dataset_type: str  # "hf" (pre-tokenized) or "jsonl" (raw text)
    train_dir: str | None
    val_dir: str | None
    tokenizer: str | None
    num_workers: int
    seq_len: int
    # Which rows train (rows.train_val_indices): the first `limit`, then a seeded split keeping
    # `train_fraction` for training and the rest for validation when there is no val_dir.
    limit: int | None = None
    train_fraction: float = 1.0
    split_seed: int = 0
    mask_prompt: bool = True  # prompt tokens of prompt/completion and chat rows get no loss


@dataclass(frozen=True)
class CheckpointConfig:
    dir: Path
    enabled: bool  # sharded checkpoints (save_top_k != 0 and create_checkpoint_callback)
    every_n_steps: int  # 0: only at the end / on preemption
    keep: int  # newest checkpoints kept; -1 keeps all
    save_last: bool
    async_save: bool
    resume_from: Path | None
    export_every_n_steps: int  # HF exports; 0: none periodic
    export_last: bool


@dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: float
    dropout: float
    # None: peft's default for the architecture; a string is "all-linear" or a full-match regex
    target_modules: list[str] | str | None
    exclude_modules: list[str] | None = None
    # QLoRA (peft_type qlora_4bit): the frozen linear weights of the decoder blocks are held in
    # 4-bit NF4 (torchao), the adapters train in the compute precision (qlora.py)
    quantize_base: bool = False


@dataclass(frozen=True)
class DpoConfig:
    """Direct preference optimisation (model.dpo): the sigmoid loss against a frozen reference."""

    beta: float
    label_smoothing: float
    reference_free: bool = False  # compare against a uniform reference (log-ratio 0) instead of a model


DEFAULT_LIGHTHOUSE_PORT = 29510  # trainer.fault_tolerance.lighthouse_port


@dataclass(frozen=True)
class FaultTolerance:
    """The validated `trainer.fault_tolerance` section (present only when enabled; rules: ft_config.py)."""

    replica_groups: int
    min_replicas: int = 1  # live groups a step needs to commit
    lighthouse_port: int = DEFAULT_LIGHTHOUSE_PORT
    # How long a group waits for the lighthouse to form a quorum, and for one collective or
    # peer-state transfer, before it gives the step up (seconds).
    quorum_timeout_s: float = 60.0
    timeout_s: float = 30.0
    # How long the lighthouse still counts a silent group as live (torchft's default, 5 s). The
    # survivors cannot form a quorum without a group it still counts (torchft's split-brain rule
    # wants more than half of the live groups), so this bounds their stall after a loss.
    heartbeat_timeout_s: float = 5.0
    # A group restarted more often than this makes the job end FAILED (the others train on to the end).
    max_restarts: int = 3

    def group_world(self, world: int) -> int:
        """Processes in one group."""
        return world // self.replica_groups


@dataclass(frozen=True)
class TrainConfig:
    name: str
    results_dir: Path
    accelerator: str  # gpu | cpu | auto (devices.py)
    expected_world_size: int  # trainer.devices x trainer.num_nodes
    max_steps: int
    log_every: int
    val_every: int
    val_batches: int | None  # None: the whole validation set
    micro_batch: int
    val_batch: int
    global_batch: int | None
    seed: int
    grad_clip: float
    model_type: str
    arch: dict[str, Any]  # the recipe's model section: architecture fields for models.py and MFU
    hf_model: str | None
    do_finetune: bool
    peak_tflops: float | None
    tensorboard_dir: Path | None
    parallel: ParallelConfig
    optim: OptimConfig
    data: DataConfig
    checkpoint: CheckpointConfig
    lora: LoraConfig | None
    dpo: DpoConfig | None = None
    # model.multi_modal: a vision-language model (architecture and processor from hf_model) on
    # image-text samples (multimodal.py)
    multi_modal: bool = False
    tracking: TrackingConfig | None = None  # MLflow / W&B; None: metrics.jsonl (and TensorBoard) only
    fault_tolerance: FaultTolerance | None = None  # trainer.fault_tolerance (ft_config.py); None: off



@dataclass(frozen=True)
class MlflowConfig:
    key: str  # the recipe key that turned it on: errors and the plan name it
    tracking_uri: str | None  # None: MLFLOW_TRACKING_URI in the job's environment, else local_store
    local_store: str
    experiment: str
    run_name: str
    run_id: str | None  # log into this existing run (else a new one; a resumed job continues its own)
    tags: dict[str, str]
    artifact_location: str | None

    def describe(self) -> str:
        where = self.tracking_uri or f"$MLFLOW_TRACKING_URI, else {self.local_store}"
        return f"MLflow {where} (experiment {self.experiment})"


@dataclass(frozen=True)
class WandbConfig:
    key: str
    project: str
    name: str
    save_dir: str
    mode: str | None  # None: W&B's own choice (WANDB_MODE, else online)
    entity: str | None
    group: str | None
    tags: tuple[str, ...]
    # The recipe key whose secret is the API key (v1 wandb_logger_kwargs.api_key, LLMFT use_wandb):
    # hpctl passes it to the job as HPCTL_SECRET_<KEY> (adapter.secret.secret_env_name), never in the spec.
    api_key_from: str | None = None

    def describe(self) -> str:
        return f"W&B project {self.project} ({self.mode or '$WANDB_MODE, else online'}), files in {self.save_dir}"


@dataclass(frozen=True)
class TrackingConfig:
    mlflow: MlflowConfig | None
    wandb: WandbConfig | None
    params: dict[str, str] = field(default_factory=dict)  # the recipe flattened, secrets redacted
    spec_digest: str | None = None  # set by load(): the digest hpctl's state records for the spec

    def destinations(self) -> list[str]:
        """Where metrics go besides metrics.jsonl, in words (the plan summary shows these)."""
        return [sink.describe() for sink in (self.mlflow, self.wandb) if sink is not None]
