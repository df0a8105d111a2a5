"""Read the resolved job spec into one typed, validated TrainConfig.

The spec is what `hpctl plan` printed: JSON or YAML whose `recipes` key holds a HyperPod v1 recipe
(run, trainer, exp_manager, model) or a v2 LLM fine-tuning recipe (`run.model_type:
llm_finetuning_aws`, translated by llmft.py). A file without `recipes` is taken as the recipe itself.
Everything the trainer will do is decided here, before torch is imported, so a combination the
trainer cannot run is refused at start with one clear line instead of failing mid-run.
Checks that need the world size (mesh shape) live in `parallel.mesh_shape`.

This module is torch-free on purpose: importing it costs milliseconds.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

SHARDING_STRATEGIES = ("full_shard", "hybrid_shard", "shard_grad_op", "_hybrid_shard_zero2", "no_shard")
SCHEDULES = ("CosineAnnealing", "linear", "LinearAnnealingWithWarmUp", "constant")
OPTIMIZERS = ("adamw", "adamw_fp32OptState")
# trainer.precision spellings (Lightning's and HyperPod's) mapped to what FSDP2 computes in.
PRECISIONS = {"bf16": "bf16", "bf16-mixed": "bf16", "bf16-true": "bf16",
              "32": "fp32", "fp32": "fp32", "32-true": "fp32"}


class ConfigError(Exception):
    """A spec the trainer refuses: printed as one line (`key: message (hint)`), no traceback."""

    def __init__(self, key: str, message: str, hint: str | None = None) -> None:
        self.key, self.message, self.hint = key, message, hint
        super().__init__(f"{key}: {message}" + (f" ({hint})" if hint else ""))


@dataclass(frozen=True)
class ParallelConfig:
    tp: int
    sharding_strategy: str
    shard_degree: int | None  # None: shard over the whole data-parallel group
    activation_checkpointing: bool
    cpu_offload: bool
    compile: bool
    precision: str  # "bf16" (bf16 params, fp32 reduction) or "fp32"


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


@dataclass(frozen=True)
class DpoConfig:
    """Direct preference optimisation (model.dpo): the sigmoid loss against a frozen reference."""

    beta: float
    label_smoothing: float
    reference_free: bool = False  # compare against a uniform reference (log-ratio 0) instead of a model


@dataclass(frozen=True)
class TrainConfig:
    name: str
    results_dir: Path
    accelerator: str  # gpu | cpu | auto
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
    tracking: TrackingConfig | None = None  # MLflow / W&B; None: metrics.jsonl (and TensorBoard) only


def load(path: str | Path) -> TrainConfig:
    """Read a spec file (JSON, or YAML by extension) and build the TrainConfig."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # only YAML specs need it; hpctl writes JSON
            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
        raise ConfigError("--config", f"{path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError("--config", f"{path} must hold a mapping")
    recipe = doc.get("recipes", doc)
    if not isinstance(recipe, dict):
        raise ConfigError("recipes", "must be a mapping")
    cfg = from_recipe(recipe)
    if cfg.tracking is not None:  # tag runs with the digest hpctl records in state for this spec
        from hpctl.spec import digest
        cfg = replace(cfg, tracking=replace(cfg.tracking, spec_digest=digest(doc)))
    return cfg


class Reader:
    """Typed access to dotted keys of the recipe, with errors naming the key."""

    def __init__(self, recipe: Mapping[str, Any]) -> None:
        self.recipe = recipe

    def raw(self, key: str, default: Any = None) -> Any:
        node: Any = self.recipe
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        if isinstance(node, str) and "${" in node:
            raise ConfigError(key, f"unresolved interpolation {node!r}", "run the spec through `hpctl plan`")
        return default if node is None else node

    def int(self, key: str, default: int | None = None, minimum: int | None = None) -> int | None:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, found {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(key, f"must be >= {minimum}, found {value}")
        return value

    def float(self, key: str, default: float | None = None) -> float | None:
        value = self.raw(key, default)
        if value is None:
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"expected a number, found {value!r}") from None

    def bool(self, key: str, default: bool = False) -> bool:
        value = self.raw(key, default)
        if isinstance(value, str) and value.lower() in ("true", "false", "none"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, found {value!r}")
        return value

    def str(self, key: str, default: str | None = None) -> str | None:
        value = self.raw(key, default)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return default
        return str(value)


def from_recipe(recipe: Mapping[str, Any]) -> TrainConfig:
    """Validate a HyperPod v1 recipe (or an LLMFT one, through llmft.py) and turn it into a TrainConfig."""
    r = Reader(recipe)
    if r.str("run.model_type") == "llm_finetuning_aws":
        from adapter import llmft  # imports this module
        return llmft.from_recipe(recipe)
    name = r.str("run.name") or "train"
    results = r.str("run.results_dir")
    if results is None:
        raise ConfigError("run.results_dir", "is required (the trainer writes metrics and checkpoints there)")
    results_dir = Path(results)
    exp_dir = Path(r.str("exp_manager.exp_dir") or results_dir)

    _refuse_unsupported(r)
    accelerator = (r.str("trainer.accelerator") or "auto").lower()
    if accelerator not in ("gpu", "cpu", "auto"):
        raise ConfigError("trainer.accelerator", f"{accelerator!r} is not supported", "use gpu, cpu or auto")

    precision_raw = str(r.raw("trainer.precision", r.raw("model.precision", "bf16")))
    precision = PRECISIONS.get(precision_raw.lower())
    if precision is None:
        raise ConfigError("trainer.precision", f"{precision_raw!r} is not supported", "use bf16 or 32")

    max_steps = r.int("trainer.max_steps", minimum=1)
    if max_steps is None:
        raise ConfigError("trainer.max_steps", "is required")
    seq_len = r.int("model.max_context_width", minimum=2)
    if seq_len is None:
        raise ConfigError("model.max_context_width", "is required (the training sequence length)")

    micro = r.int("model.train_batch_size", 1, minimum=1)
    global_batch = r.int("model.global_batch_size", minimum=1)
    if global_batch is not None and global_batch % micro:
        raise ConfigError("model.global_batch_size", f"{global_batch} is not a multiple of model.train_batch_size ({micro})")

    parallel = _parallel(r, precision, accelerator)
    lora = _lora(r, parallel, accelerator)
    hf_model = r.str("model.hf_model_name_or_path")
    do_finetune = r.bool("model.do_finetune", False)
    if do_finetune and hf_model is None:
        raise ConfigError("model.hf_model_name_or_path", "is required when model.do_finetune is true",
                          "point it at a local Hugging Face checkpoint directory")
    if lora is not None and not do_finetune:
        raise ConfigError("model.peft.peft_type", "LoRA needs model.do_finetune: true and a base model",
                          "set model.do_finetune and model.hf_model_name_or_path")

    model_type = r.str("model.model_type")
    if model_type is None and hf_model is None:
        raise ConfigError("model.model_type", "is required unless model.hf_model_name_or_path gives the architecture")

    return TrainConfig(
        name=name,
        results_dir=results_dir,
        accelerator=accelerator,
        expected_world_size=r.int("trainer.devices", 1, minimum=1) * r.int("trainer.num_nodes", 1, minimum=1),
        max_steps=max_steps,
        log_every=r.int("trainer.log_every_n_steps", 1, minimum=1),
        val_every=_val_every(r),
        val_batches=_val_batches(r),
        micro_batch=micro,
        val_batch=r.int("model.val_batch_size", micro, minimum=1),
        global_batch=global_batch,
        seed=r.int("model.seed", 12345),
        grad_clip=r.float("model.grad_clip", 0.0),
        model_type=model_type or "",
        arch=dict(recipe.get("model") or {}),
        hf_model=hf_model,
        do_finetune=do_finetune,
        peak_tflops=r.float("trainer.peak_tflops"),
        tensorboard_dir=(Path(r.str("exp_manager.summary_writer_kwargs.save_dir") or exp_dir / "tensorboard")
                         if r.bool("exp_manager.create_tensorboard_logger", False) else None),
        parallel=parallel,
        optim=_optim(r, max_steps),
        data=_data(r, seq_len),
        checkpoint=_checkpoint(r, exp_dir),
        lora=lora,
        dpo=_dpo(r),
        tracking=tracking(recipe),
    )


def _refuse_unsupported(r: Reader) -> None:
    """HyperPod features this trainer does not implement: refused rather than silently ignored."""
    refused = {
        "model.fp8": "fp8 training is not implemented; set model.fp8: false (bf16 is used)",
        "model.offload_activations": "activation offloading is not implemented; use model.activation_checkpointing",
        "exp_manager.auto_checkpoint.enabled": "auto_checkpoint is not implemented; set checkpoint_callback_params.every_n_train_steps",
    }
    for key, why in refused.items():
        if r.bool(key, False):
            raise ConfigError(key, "is not supported by this trainer", why)
    for key in ("model.context_parallel_degree", "model.expert_model_parallel_degree"):
        if (r.int(key, 1) or 1) > 1:
            raise ConfigError(key, "must be 1: this trainer has no context or expert parallelism",
                              "use tensor_model_parallel_degree and FSDP sharding")
    if r.bool("model.multi_modal", False):
        raise ConfigError("model.multi_modal", "multi-modal training is not supported", "set it to false for text-only")


def _parallel(r: Reader, precision: str, accelerator: str) -> ParallelConfig:
    strategy = r.str("model.sharding_strategy", "full_shard")
    if strategy not in SHARDING_STRATEGIES:
        raise ConfigError("model.sharding_strategy", f"{strategy!r} is not supported", f"use one of {', '.join(SHARDING_STRATEGIES)}")
    cpu_offload = r.bool("model.cpu_offload", False)
    if cpu_offload and accelerator == "cpu":
        raise ConfigError("model.cpu_offload", "needs trainer.accelerator gpu (the parameters already live on the CPU)")
    return ParallelConfig(
        tp=r.int("model.tensor_model_parallel_degree", 1, minimum=1),
        sharding_strategy=strategy,
        shard_degree=r.int("model.shard_degree", minimum=1),
        activation_checkpointing=r.bool("model.activation_checkpointing", False),
        cpu_offload=cpu_offload,
        compile=r.bool("model.compile", False),
        precision=precision,
    )


def _lora(r: Reader, parallel: ParallelConfig, accelerator: str) -> LoraConfig | None:
    peft_type = r.str("model.peft.peft_type")
    if peft_type is None:
        return None
    if peft_type.lower().startswith("qlora"):
        if accelerator == "cpu":
            raise ConfigError("model.peft.peft_type", f"{peft_type} needs a GPU and bitsandbytes (4-bit kernels); "
                              "this run is on the CPU", "use peft_type: lora for a CPU run")
        raise ConfigError("model.peft.peft_type", f"{peft_type} (4-bit base weights through bitsandbytes) is not "
                          "implemented by this trainer", "use peft_type: lora (bf16 base weights, FSDP-sharded)")
    if peft_type.lower() != "lora":
        raise ConfigError("model.peft.peft_type", f"{peft_type!r} is not supported", "use lora")
    if parallel.tp > 1:
        raise ConfigError("model.peft.peft_type", "LoRA with tensor_model_parallel_degree > 1 is not supported",
                          "set model.tensor_model_parallel_degree: 1; FSDP shards the model")
    return LoraConfig(
        rank=r.int("model.peft.rank", 16, minimum=1),
        alpha=r.float("model.peft.alpha", 32.0),
        dropout=r.float("model.peft.dropout", 0.0),
        target_modules=_lora_targets(r.raw("model.peft.target_modules")),
    )


_REGEX = set("*()|[]?+\\")
# The trainer builds text models; multimodal wrappers put the text model's layers under these.
_TEXT_MODEL_PREFIXES = ("language_model.model.", "model.language_model.")


def _lora_targets(targets: Any) -> list[str] | str | None:
    """peft's target_modules: names matched as suffixes, or one string ("all-linear", or a regex
    matched against the whole module name). HyperPod writes regexes as list entries (Llama 4:
    `language_model.model.layers.*self_attn.(q_proj|...)`, written for the multimodal wrapper); such
    lists become one regex, with the wrapper's prefix rewritten to the text model's `model.`."""
    if targets is None or isinstance(targets, str):
        return targets
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ConfigError("model.peft.target_modules", f"expected a list of module names, found {targets!r}")
    if not any(ch in _REGEX for t in targets for ch in t):
        return targets
    patterns = []
    for target in targets:
        for prefix in _TEXT_MODEL_PREFIXES:
            if target.startswith(prefix):
                target = "model." + target[len(prefix):]
        patterns.append(f"(?:{target})")
    return "|".join(patterns)


def _dpo(r: Reader) -> DpoConfig | None:
    if not r.bool("model.dpo.enabled", False):
        return None
    beta = r.float("model.dpo.beta", 0.1)
    if beta <= 0:
        raise ConfigError("model.dpo.beta", f"must be positive, found {beta}")
    smoothing = r.float("model.dpo.label_smoothing", 0.0)
    if not 0.0 <= smoothing < 0.5:
        raise ConfigError("model.dpo.label_smoothing", f"must be in [0, 0.5), found {smoothing}")
    return DpoConfig(beta=beta, label_smoothing=smoothing)


def _optim(r: Reader, max_steps: int) -> OptimConfig:
    name = r.str("model.optim.name", "adamw")
    if name not in OPTIMIZERS:
        raise ConfigError("model.optim.name", f"{name!r} is not supported", "use adamw")
    betas = r.raw("model.optim.betas", [0.9, 0.999])
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ConfigError("model.optim.betas", f"expected two numbers, found {betas!r}")
    sched_name = r.str("model.optim.sched.name", "constant")
    if sched_name not in SCHEDULES:
        raise ConfigError("model.optim.sched.name", f"{sched_name!r} is not supported", f"use one of {', '.join(SCHEDULES)}")
    lr = r.float("model.optim.lr", 1e-4)
    if lr <= 0:
        raise ConfigError("model.optim.lr", f"must be positive, found {lr}")
    min_lr = r.float("model.optim.sched.min_lr", 0.0)
    if min_lr > lr:
        raise ConfigError("model.optim.sched.min_lr", f"{min_lr} is above model.optim.lr ({lr})")
    sched_len = r.int("model.optim.sched.max_steps") or r.int("model.lr_decay_iters") or max_steps
    warmup = r.int("model.optim.sched.warmup_steps", 0, minimum=0)
    constant = r.int("model.optim.sched.constant_steps", 0, minimum=0)
    if sched_name == "CosineAnnealing" and warmup + constant > sched_len:
        raise ConfigError("model.optim.sched", f"warmup_steps + constant_steps ({warmup + constant}) exceed the schedule length ({sched_len})")
    return OptimConfig(
        lr=lr,
        weight_decay=r.float("model.optim.weight_decay", 0.0),
        betas=(float(betas[0]), float(betas[1])),
        eps=r.float("model.optim.eps", 1e-8),
        sched=SchedConfig(name="linear" if sched_name == "LinearAnnealingWithWarmUp" else sched_name,
                          warmup_steps=warmup, constant_steps=constant, min_lr=min_lr, max_steps=sched_len),
    )


def _data(r: Reader, seq_len: int) -> DataConfig:
    synthetic = r.bool("model.data.use_synthetic_data", False)
    dataset_type = r.str("model.data.dataset_type", "hf")
    if dataset_type not in ("hf", "jsonl"):
        raise ConfigError("model.data.dataset_type", f"{dataset_type!r} is not supported", "use hf (pre-tokenized) or jsonl (raw text)")
    train_dir = r.str("model.data.train_dir")
    if not synthetic and train_dir is None:
        raise ConfigError("model.data.train_dir", "is required unless model.data.use_synthetic_data is true")
    tokenizer = r.str("model.data.tokenizer_name_or_path") or r.str("model.hf_model_name_or_path")
    if not synthetic and dataset_type == "jsonl" and tokenizer is None:
        raise ConfigError("model.data.tokenizer_name_or_path", "is required to tokenize raw-text JSONL")
    return DataConfig(synthetic=synthetic, dataset_type=dataset_type, train_dir=train_dir,
                      val_dir=r.str("model.data.val_dir"), tokenizer=tokenizer,
                      num_workers=r.int("model.data.num_workers", 0, minimum=0), seq_len=seq_len)


def _checkpoint(r: Reader, exp_dir: Path) -> CheckpointConfig:
    keep = r.int("exp_manager.checkpoint_callback_params.save_top_k", 1, minimum=-1)
    resume = r.str("exp_manager.resume_from_checkpoint")
    return CheckpointConfig(
        dir=Path(r.str("exp_manager.checkpoint_dir") or exp_dir / "checkpoints"),
        enabled=keep != 0 and r.bool("exp_manager.create_checkpoint_callback", True),
        every_n_steps=r.int("exp_manager.checkpoint_callback_params.every_n_train_steps", 0, minimum=0),
        keep=keep,
        save_last=r.bool("exp_manager.checkpoint_callback_params.save_last", True),
        async_save=r.bool("exp_manager.checkpoint_callback_params.async_save", False),
        resume_from=Path(resume) if resume else None,
        export_every_n_steps=r.int("exp_manager.export_full_model.every_n_train_steps", 0, minimum=0),
        export_last=r.bool("exp_manager.export_full_model.save_last", True),
    )


def _val_every(r: Reader) -> int:
    value = r.raw("trainer.val_check_interval", 1)
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError("trainer.val_check_interval", f"fractions of an epoch ({value}) are not supported",
                          "give a number of training steps")
    return r.int("trainer.val_check_interval", 1, minimum=1)


def _val_batches(r: Reader) -> int | None:
    value = r.raw("trainer.limit_val_batches", 0)
    if isinstance(value, float):
        if value == 1.0:
            return None  # Lightning's 1.0: the whole set
        if not value.is_integer():
            raise ConfigError("trainer.limit_val_batches", f"fractions ({value}) are not supported",
                              "give a number of batches, or 1.0 for all")
    return r.int("trainer.limit_val_batches", 0, minimum=0)


def resolve_local(name_or_path: str, key: str = "model.hf_model_name_or_path") -> Path:
    """A local model or tokenizer directory, or the Hugging Face cache's copy of a hub id; never the
    network. `key` names the spec field in the error."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or name_or_path.startswith((".", "~")):
        raise ConfigError(key, f"{name_or_path} is not a directory")
    from huggingface_hub import snapshot_download  # light, torch-free
    try:
        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss means the same thing here
        home = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise ConfigError(key, f"{name_or_path!r} is neither a local directory nor in the Hugging Face cache ({home})",
                          "the trainer has no network: download it beforehand or give a directory") from None


def grad_accumulation(cfg: TrainConfig, dp_size: int) -> int:
    """Micro-batches per optimizer step so that micro x dp x accumulation = global batch."""
    if cfg.global_batch is None:
        return 1
    per_step = cfg.micro_batch * dp_size
    if cfg.global_batch % per_step:
        raise ConfigError("model.global_batch_size",
                          f"{cfg.global_batch} is not a multiple of train_batch_size x data-parallel size ({cfg.micro_batch} x {dp_size})")
    return cfg.global_batch // per_step


# Experiment tracking: which recipe keys send metrics where (adapter/tracking.py sends them).
WANDB_MODES = ("online", "offline", "disabled", "shared")
MLFLOW_SCHEMES = ("http", "https", "file", "databricks", "databricks-uc", "sqlite", "postgresql", "mysql", "mssql")
SAGEMAKER_MLFLOW_ARN = "arn:aws:sagemaker:"  # SageMaker managed MLflow (needs the sagemaker-mlflow plugin)
LLMFT_MLFLOW = "training_config.mlflow."
LLMFT_WANDB = "training_config.training_args.use_wandb"  # OpenRLHF: the W&B API key (a secret)


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
    api_key_from: str | None = None  # the recipe key whose secret is the API key (LLMFT use_wandb)

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


def tracking(recipe: Mapping[str, Any]) -> TrackingConfig | None:
    """MLflow and W&B as the recipe asks for them, or None. Read without I/O, so hpctl can ask
    at plan time. v1: exp_manager.create_mlflow_logger + mlflow_logger_kwargs (tracking_uri,
    experiment_name, run_name, run_id, tags, artifact_location) and create_wandb_logger +
    wandb_logger_kwargs (project, name, save_dir, mode, entity, group, tags). v2 LLMFT:
    training_config.mlflow (tracking_uri, run_id) and training_args.use_wandb. Any recipe:
    run.mlflow_tracking_uri, mlflow_experiment_name, mlflow_run_name (HyperPod's v2 layout).
    Experiment, project and run names default to run.name."""
    r = Reader(recipe)
    name = r.str("run.name") or "train"
    exp_key = "training_config.training_args.training_dir" if r.str("run.model_type") == "llm_finetuning_aws" \
        else "exp_manager.exp_dir"
    exp_dir = r.str(exp_key) or r.str("run.results_dir") or "."
    mlflow, wandb = _mlflow(r, name, exp_dir), _wandb(r, name, exp_dir)
    if mlflow is None and wandb is None:
        return None
    from hpctl.spec import redact  # the one rule for what is a secret
    return TrackingConfig(mlflow, wandb, params=flatten(redact(dict(recipe))))


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Mappings become dotted keys; lists and scalars become their JSON text (strings as they are)."""
    if isinstance(data, Mapping) and data:
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data if isinstance(data, str) else json.dumps(data)}


def _mlflow(r: Reader, name: str, exp_dir: str) -> MlflowConfig | None:
    kw = "exp_manager.mlflow_logger_kwargs."
    if r.bool("exp_manager.create_mlflow_logger", False):
        key, uri_key = "exp_manager.create_mlflow_logger", kw + "tracking_uri"
    elif r.str(LLMFT_MLFLOW + "tracking_uri"):
        key = uri_key = LLMFT_MLFLOW + "tracking_uri"
    elif r.str("run.mlflow_tracking_uri"):
        key = uri_key = "run.mlflow_tracking_uri"
    else:
        return None
    uri = r.str(uri_key)
    tags = r.raw(kw + "tags", {})
    if not isinstance(tags, Mapping) or any(isinstance(v, (Mapping, list)) for v in tags.values()):
        raise ConfigError(kw + "tags", f"expected a mapping of tag names to values, found {tags!r}")
    return MlflowConfig(
        key=key, tracking_uri=_tracking_uri(uri_key, uri) if uri else None, local_store=f"{exp_dir}/mlruns",
        experiment=r.str(kw + "experiment_name") or r.str("run.mlflow_experiment_name") or name,
        run_name=r.str(kw + "run_name") or r.str("run.mlflow_run_name") or name,
        run_id=r.str(kw + "run_id") or r.str(LLMFT_MLFLOW + "run_id"),
        tags={str(k): str(v) for k, v in tags.items()},
        artifact_location=r.str(kw + "artifact_location"),
    )


def _tracking_uri(key: str, uri: str) -> str:
    """A tracking URI MLflow can use, else ConfigError. Credentials never go in it: the URI is
    shown in plans and logs, so a password there is refused (MLFLOW_TRACKING_USERNAME/PASSWORD or
    MLFLOW_TRACKING_TOKEN in env_vars travel as secrets)."""
    import difflib
    from urllib.parse import urlsplit
    if uri.startswith(SAGEMAKER_MLFLOW_ARN):
        return uri
    parts = urlsplit(uri)
    if parts.password:
        raise ConfigError(key, "carries a password, which plans and logs would show",
                          "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
                          "in env_vars from ${oc.env:...}; hpctl passes them as secrets")
    scheme = parts.scheme.lower()
    if len(scheme) <= 1:  # a path (or a Windows drive letter): MLflow's local file store
        return uri
    if scheme.split("+")[0] not in MLFLOW_SCHEMES:
        close = difflib.get_close_matches(scheme, MLFLOW_SCHEMES, n=1)
        hint = (f"did you mean '{close[0]}://'?" if close else
                f"did you mean 'http://{uri}'?" if parts.path.isdigit() else
                f"use http(s)://HOST:PORT, a directory, file:, databricks or a SageMaker MLflow ARN")
        raise ConfigError(key, f"{uri!r} is not a tracking URI MLflow knows (scheme {scheme!r})", hint)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(key, f"{uri!r} has a malformed port", "write http(s)://HOST:PORT") from None
    if scheme in ("http", "https") and not parts.hostname:
        raise ConfigError(key, f"{uri!r} names no host", "write http(s)://HOST:PORT")
    return uri


def _wandb(r: Reader, name: str, exp_dir: str) -> WandbConfig | None:
    kw = "exp_manager.wandb_logger_kwargs."
    if r.bool("exp_manager.create_wandb_logger", False):
        key, api_key_from = "exp_manager.create_wandb_logger", None
    elif r.raw(LLMFT_WANDB) not in (None, "", False):
        key = api_key_from = LLMFT_WANDB
    else:
        return None
    mode = r.str(kw + "mode")
    if mode is not None and mode.lower() not in WANDB_MODES:
        import difflib
        close = ["offline"] if mode.lower() == "dryrun" else difflib.get_close_matches(mode.lower(), WANDB_MODES, n=1)
        raise ConfigError(kw + "mode", f"{mode!r} is not a W&B mode",
                          f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(WANDB_MODES)}")
    tags = r.raw(kw + "tags", [])
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, (str, int, float)) for t in tags):
        raise ConfigError(kw + "tags", f"expected a list of tags, found {tags!r}")
    return WandbConfig(
        key=key, project=r.str(kw + "project") or name, name=r.str(kw + "name") or name,
        save_dir=r.str(kw + "save_dir") or exp_dir, mode=mode.lower() if mode else None,
        entity=r.str(kw + "entity"), group=r.str(kw + "group"), tags=tuple(str(t) for t in tags),
        api_key_from=api_key_from,
    )
