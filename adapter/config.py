"""Read the resolved job spec into one typed, validated TrainConfig: the owner of what the trainer accepts.

The spec is what `hpctl plan` printed: JSON or YAML whose `recipes` key holds a HyperPod v1 recipe
(run, trainer, exp_manager, model) or a v2 LLM fine-tuning recipe (`run.model_type:
llm_finetuning_aws`, translated by llmft.py). A file without `recipes` is taken as the recipe itself.
Everything the trainer will do is decided here, before torch is imported, so a combination the
trainer cannot run is refused with every reason at once instead of failing mid-run.

hpctl runs `problems` at plan time with the world size its launcher will start, so a recipe the
trainer would refuse fails `hpctl plan` at the recipe's file and line. Rules therefore live here
(or in architectures.py / llmft.py, which this module asks) and nowhere else: hpctl's JSON schemas
describe shapes for editors, and a test proves their enums equal the constants below.

This module is torch-free on purpose: importing it costs milliseconds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from adapter import architectures, ft_config, llmft
from adapter.architectures import CP
from adapter.reader import ConfigError, InvalidConfig, Reader, resolve_local

__all__ = ["ConfigError", "InvalidConfig", "Reader", "resolve_local", "TrainConfig", "load", "from_recipe",
           "problems", "mesh_shape", "grad_accumulation"]

SHARDING_STRATEGIES = ("full_shard", "hybrid_shard", "shard_grad_op", "_hybrid_shard_zero2", "no_shard")
SCHEDULES = ("CosineAnnealing", "linear", "LinearAnnealingWithWarmUp", "constant")
ACCELERATORS = ("gpu", "cpu", "auto")
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
    # model.multi_modal: a vision-language model (architecture and processor from hf_model) on
    # image-text samples (multimodal.py)
    multi_modal: bool = False
    tracking: TrackingConfig | None = None  # MLflow / W&B; None: metrics.jsonl (and TensorBoard) only
    fault_tolerance: ft_config.FaultTolerance | None = None  # trainer.fault_tolerance (ft_config.py); None: off


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


def from_recipe(recipe: Mapping[str, Any], world_size: int | None = None, files: bool = True) -> TrainConfig:
    """Validate a HyperPod v1 or LLMFT recipe and turn it into a TrainConfig; every refusal at once
    (InvalidConfig). `world_size` adds the mesh and batch rules; `files` reads the local model,
    tokenizer and data files the recipe names (the trainer does; hpctl only for local jobs)."""
    r = Reader(recipe)
    cfg = _build(r, recipe, world_size, files)
    r.check()
    assert cfg is not None
    return cfg


def problems(recipe: Mapping[str, Any], world_size: int | None = None, files: bool = False) -> list[ConfigError]:
    """Every reason the trainer would refuse this recipe (empty when it starts): what hpctl's plan
    asks. Keys are relative to the recipe."""
    r = Reader(recipe)
    _build(r, recipe, world_size, files)
    return r.errors


# The data paths the trainer reads, by role, under their v1 keys.
DATA_PATHS = {"train": "model.data.train_dir", "val": "model.data.val_dir"}


def _is_llmft(r: Reader) -> bool:
    return r.str("run.model_type") == "llm_finetuning_aws"


def data_paths(recipe: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Where the trainer reads its data: role ("train", "val") -> (the recipe's key, the path), for
    the keys set; {} for synthetic data. An LLMFT recipe's keys are its own (datasets.*.file_path).
    hpctl's plan asks this to compare the paths with a SageMaker job's input channels."""
    r = Reader(recipe)
    if _is_llmft(r):
        keys = {role: llmft.LLMFT_KEY[key] for role, key in DATA_PATHS.items()}
    elif r.bool("model.data.use_synthetic_data", False):
        return {}
    else:
        keys = dict(DATA_PATHS)
    return {role: (key, value) for role, key in keys.items() if (value := r.str(key)) is not None}


def _build(r: Reader, recipe: Mapping[str, Any], world_size: int | None, files: bool) -> TrainConfig | None:
    if _is_llmft(r):
        cfg = llmft.build(r, lambda inner: _from_v1(inner, inner.recipe, world_size), files)
    else:
        cfg = _from_v1(r, recipe, world_size)
    sends = r.guard(None, tracking, recipe)  # both formats: v2 keeps its mlflow section outside the v1 view
    return None if cfg is None or r.errors else replace(cfg, tracking=sends)


def _from_v1(r: Reader, recipe: Mapping[str, Any], world_size: int | None) -> TrainConfig | None:
    """The v1 recipe's TrainConfig, refusals recorded in `r`; None only when one was recorded."""
    name = r.str("run.name") or "train"
    results = r.str("run.results_dir")
    if results is None:
        r.refuse("run.results_dir", "is required (the trainer writes metrics and checkpoints there)")
    results_dir = Path(results or ".")
    exp_dir = Path(r.str("exp_manager.exp_dir") or results_dir)

    _refuse_unsupported(r)
    accelerator = (r.str("trainer.accelerator") or "auto").lower()
    if accelerator not in ACCELERATORS:
        r.refuse("trainer.accelerator", f"{accelerator!r} is not supported", f"use one of {', '.join(ACCELERATORS)}")
    precision_raw = _precision_raw(r)
    precision = PRECISIONS.get(precision_raw.lower())
    if precision is None:
        r.refuse("trainer.precision", f"{precision_raw!r} is not supported",
                 "use bf16 or 32 (fp16 needs loss scaling, which this trainer does not do)")
    max_steps = r.int("trainer.max_steps", minimum=1)
    if max_steps is None:
        r.refuse("trainer.max_steps", "is required")
    seq_len = r.int("model.max_context_width", minimum=2)
    if seq_len is None:
        r.refuse("model.max_context_width", "is required (the training sequence length)")

    micro = r.int("model.train_batch_size", 1, minimum=1) or 1
    global_batch = r.int("model.global_batch_size", minimum=1)
    if global_batch is not None and global_batch % micro:
        r.refuse("model.global_batch_size", f"{global_batch} is not a multiple of {r.name('model.train_batch_size')} ({micro})")

    parallel = _parallel(r, precision or "fp32", accelerator)
    lora = _lora(r, parallel)
    hf_model = r.str("model.hf_model_name_or_path")
    do_finetune = r.bool("model.do_finetune", False)
    if do_finetune and hf_model is None:
        r.refuse("model.hf_model_name_or_path", "is required when model.do_finetune is true",
                 "point it at a local Hugging Face checkpoint directory")
    multi_modal = _multi_modal(r, parallel, hf_model)
    _context_parallel(r, parallel, seq_len, multi_modal)
    model_type = r.str("model.model_type")
    arch = dict(recipe.get("model") or {}) if isinstance(recipe.get("model"), Mapping) else {}
    _architecture(r, model_type, hf_model, arch, parallel)
    max_positions = r.int("model.max_position_embeddings", minimum=1)
    if seq_len is not None and max_positions is not None and seq_len > max_positions:
        r.refuse("model.max_context_width", f"{seq_len} exceeds model.max_position_embeddings ({max_positions}): "
                 f"positions past {max_positions} were never trained (and some models cannot encode them)",
                 f"use at most {max_positions}, or raise max_position_embeddings")
    ft = ft_config.read(r, parallel, world_size)  # replica groups: each group's mesh is world / groups
    if world_size is not None:
        shape = r.guard(None, mesh_shape, parallel, ft.group_world(world_size) if ft else world_size)
        if shape is not None and global_batch is not None:
            r.guard(1, _accumulation, global_batch, micro, shape.dp * (ft.replica_groups if ft else 1),
                    r.name("model.train_batch_size"))

    cfg = TrainConfig(
        name=name,
        results_dir=results_dir,
        accelerator=accelerator,
        expected_world_size=(r.int("trainer.devices", 1, minimum=1) or 1) * (r.int("trainer.num_nodes", 1, minimum=1) or 1),
        max_steps=max_steps or 1,
        log_every=r.int("trainer.log_every_n_steps", 1, minimum=1) or 1,
        val_every=_val_every(r),
        val_batches=_val_batches(r),
        micro_batch=micro,
        val_batch=r.int("model.val_batch_size", micro, minimum=1) or micro,
        global_batch=global_batch,
        seed=r.int("model.seed", 12345) or 0,
        grad_clip=_non_negative(r, "model.grad_clip"),
        model_type=model_type or "",
        arch=arch,
        hf_model=hf_model,
        do_finetune=do_finetune,
        peak_tflops=r.float("trainer.peak_tflops"),
        tensorboard_dir=(Path(r.str("exp_manager.summary_writer_kwargs.save_dir") or exp_dir / "tensorboard")
                         if r.bool("exp_manager.create_tensorboard_logger", False) else None),
        parallel=parallel,
        optim=_optim(r, max_steps or 1),
        data=_data(r, seq_len or 2),
        checkpoint=_checkpoint(r, exp_dir),
        lora=lora,
        dpo=_dpo(r),
        multi_modal=multi_modal,
        fault_tolerance=ft,
    )
    return None if r.errors else cfg


def _architecture(r: Reader, model_type: str | None, hf_model: str | None, arch: dict[str, Any],
                  parallel: ParallelConfig) -> None:
    """The model family is one the trainer builds, with the fields and shapes it needs. A recipe
    with hf_model_name_or_path takes its architecture from that checkpoint, read only in the job."""
    if hf_model is not None:
        return
    if model_type is None:
        r.refuse("model.model_type", "is required unless model.hf_model_name_or_path gives the architecture")
        return
    entry = architectures.ARCHITECTURES.get(model_type)
    if entry is None:
        from difflib import get_close_matches
        close = get_close_matches(model_type, list(architectures.ARCHITECTURES), n=1)
        r.refuse("model.model_type", f"{model_type!r} is not a model family this trainer builds",
                 (f"did you mean {close[0]!r}? " if close else "") +
                 f"families: {', '.join(sorted(architectures.ARCHITECTURES))}; or give model.hf_model_name_or_path")
        return
    for key in architectures.required_fields(model_type):
        if arch.get(key) is None:
            r.refuse(f"model.{key}", f"is required to build a {model_type} model", "or give model.hf_model_name_or_path")
        else:
            r.int(f"model.{key}", minimum=1)
    for key in ("num_key_value_heads", "num_kv_heads", "head_dim"):
        if arch.get(key) is not None:
            r.int(f"model.{key}", minimum=1)
    for error in architectures.arithmetic_problems(model_type, arch) + \
            architectures.tp_problems(entry[2], arch, parallel.tp) + \
            architectures.cp_problems(entry[2], arch, parallel.cp):
        r.refuse(error.key, error.message, error.hint)


def _refuse_unsupported(r: Reader) -> None:
    """HyperPod features this trainer does not implement: refused rather than silently ignored."""
    refused = {
        "exp_manager.auto_checkpoint.enabled": "auto_checkpoint is not implemented; set checkpoint_callback_params.every_n_train_steps",
    }
    for key, why in refused.items():
        if r.bool(key, False):
            r.refuse(key, "is not supported by this trainer", why)
    if (r.int("model.expert_model_parallel_degree", 1, minimum=1) or 1) > 1:
        r.refuse("model.expert_model_parallel_degree", "must be 1: this trainer has no expert parallelism",
                 "use tensor_model_parallel_degree and FSDP sharding")


def _multi_modal(r: Reader, parallel: ParallelConfig, hf_model: str | None) -> bool:
    if not r.bool("model.multi_modal", False):
        return False
    if hf_model is None:
        r.refuse("model.hf_model_name_or_path", "is required when model.multi_modal is true (the vision-"
                 "language architecture and its image processor come from that checkpoint directory)",
                 "point it at a local directory of e.g. Llama-3.2-11B-Vision")
    if parallel.tp > 1:
        r.refuse("model.tensor_model_parallel_degree", "must be 1 for multi-modal models",
                 "FSDP shards the vision and language towers")
    if r.bool("model.data.use_synthetic_data", False):
        r.refuse("model.data.use_synthetic_data", "multi-modal training reads image-text samples",
                 "set model.data.train_dir to image-text JSONL (adapter/README.md)")
    return True


def _precision_raw(r: Reader) -> str:
    return str(r.raw("trainer.precision", r.raw("model.precision", "bf16")))


def precision_of(recipe: Mapping[str, Any]) -> str | None:
    """What a v1 recipe computes in ("bf16" or "fp32"), None when the trainer refuses its
    precision: hpctl's memory estimate asks this rather than read the keys its own way."""
    return PRECISIONS.get(_precision_raw(Reader(recipe)).lower())


def lora_of(recipe: Mapping[str, Any]) -> LoraConfig | None:
    """The LoRA adapters a v1 recipe trains (type, rank, targets, dropout as the trainer reads
    them, defaults included), None without them or when the trainer refuses them: hpctl's memory
    estimate asks this rather than parse model.peft its own way."""
    r = Reader(recipe)
    lora = _lora(r, ParallelConfig(tp=1, sharding_strategy="full_shard", shard_degree=None,
                                   activation_checkpointing=False, cpu_offload=False, compile=False,
                                   precision="bf16"))  # no parallel rule bears on what the adapters are
    return None if r.errors else lora


def planned_mesh(recipe: Mapping[str, Any], world: int) -> MeshShape | None:
    """The mesh the trainer builds for a v1 recipe's parallel keys at `world` processes, None when
    it would refuse them (the plan then says why): hpctl's memory estimate asks this rather than
    redo the arithmetic of shard groups."""
    r = Reader(recipe)
    p = _parallel(r, "fp32", "gpu")  # the mesh depends on neither
    if r.errors:
        return None
    try:
        return mesh_shape(p, world)
    except ConfigError:
        return None


def _parallel(r: Reader, precision: str, accelerator: str) -> ParallelConfig:
    strategy = r.str("model.sharding_strategy", "full_shard") or "full_shard"
    if strategy not in SHARDING_STRATEGIES:
        r.refuse("model.sharding_strategy", f"{strategy!r} is not supported", f"use one of {', '.join(SHARDING_STRATEGIES)}")
    cpu_offload = r.bool("model.cpu_offload", False)
    if cpu_offload and accelerator == "cpu":
        r.refuse("model.cpu_offload", "needs trainer.accelerator gpu (the parameters already live on the CPU)")
    cp = r.int(CP, 1, minimum=1) or 1
    if cp > 1 and accelerator == "cpu":
        r.errors.append(cp_without_cuda(cp))
    return ParallelConfig(
        tp=r.int("model.tensor_model_parallel_degree", 1, minimum=1) or 1,
        sharding_strategy=strategy,
        shard_degree=r.int("model.shard_degree", minimum=1),
        activation_checkpointing=r.bool("model.activation_checkpointing", False),
        cpu_offload=cpu_offload,
        compile=r.bool("model.compile", False),
        precision=precision,
        fp8=_fp8(r),
        offload_activations=r.bool("model.offload_activations", False),
        activation_loading_horizon=r.int("model.activation_loading_horizon", 2, minimum=1) or 2,
        cp=cp,
    )


# What torch 2.13 does with ring attention on a CPU (gloo) mesh, measured: SDPA on CPU runs
# aten._scaled_dot_product_flash_attention_for_cpu, for which the context-parallel dispatcher has
# no rule (its rules cover the CUDA flash, efficient and cuDNN kernels), and the math fallback
# mixes plain tensors into DTensor ops. The trainer says the same at run time (parallel.py).
CP_CPU_REASON = ("torch's context parallelism (ring attention) has no CPU attention kernel: "
                 "\"Operator aten._scaled_dot_product_flash_attention_for_cpu.default does not have a "
                 "sharding strategy registered\" (torch 2.13)")


def cp_without_cuda(cp: int) -> ConfigError:
    """The one refusal of context parallelism without CUDA: at plan time for trainer.accelerator
    cpu, and at start (parallel.check_device) for auto on a host that has no GPU."""
    return ConfigError(CP, f"{cp} needs CUDA devices (trainer.accelerator gpu): {CP_CPU_REASON}",
                       f"set {CP}: 1 for a CPU run")


def _context_parallel(r: Reader, p: ParallelConfig, seq_len: int | None, multi_modal: bool) -> None:
    """Rules of context parallelism that need more than the parallel section: each rank holds
    2 chunks of seq_len / (2 cp) tokens (torch's head-tail load balancing, which evens out causal
    attention's work); the attention runs in bf16, where CUDA's flash kernel (grouped-query heads
    included) is what ring attention splits (its rules cover flash, efficient and cuDNN; the
    efficient kernel has no grouped-query support, the math fallback no rule); and only text
    models whose attention is plain causal SDPA split their sequences (architectures.cp_problems)."""
    if p.cp <= 1:
        return
    if seq_len is not None and seq_len % (2 * p.cp):
        step = 2 * p.cp
        lower = seq_len // step * step
        r.refuse("model.max_context_width", f"{seq_len} is not divisible by 2 x context_parallel_degree "
                 f"({step}): each of the {p.cp} ranks holds two equal chunks of every sequence",
                 f"nearest valid: {f'{lower} or ' if lower else ''}{lower + step}")
    if p.precision != "bf16":
        r.refuse("trainer.precision", f"{p.precision} with context_parallel_degree {p.cp}: ring attention splits "
                 "CUDA's flash kernel (bf16), whereas fp32 attention of grouped-query models (transformers passes "
                 "enable_gqa) falls back to the math kernel, which it cannot split",
                 "use bf16 (FSDP2 still reduces gradients in fp32)")
    if multi_modal:
        r.refuse(CP, f"{p.cp}: multi-modal models do not split sequences (their cross-attention reads "
                 "the whole image)", "set model.context_parallel_degree: 1")
    if r.bool("model.dpo.enabled", False):
        r.refuse(CP, f"{p.cp}: DPO scores whole sequences per pair and does not split them",
                 "set model.context_parallel_degree: 1")


# HyperPod's fp8 keys are Transformer Engine's delayed scaling (a scale from the max amax of the
# last fp8_amax_history_len steps). torchao has dynamic scaling only: each cast takes its scale
# from the tensor's current amax, i.e. history 1 / most_recent; the history has no equivalent.
FP8_ALGOS = ("max", "most_recent")


def _fp8(r: Reader) -> str | None:
    """The torchao float8 recipe for model.fp8: tensorwise, the per-tensor scaling that TE's recipe
    uses too, and the one torchao offers float8 all-gathers (FSDP2) and float8 TP for."""
    if not r.bool("model.fp8", False):
        return None
    r.int("model.fp8_amax_history_len", 1, minimum=1)  # read for its type; no torchao equivalent
    algo = r.str("model.fp8_amax_compute_algo", "max")
    if algo not in FP8_ALGOS:
        r.refuse("model.fp8_amax_compute_algo", f"{algo!r} is not supported", f"use one of {', '.join(FP8_ALGOS)}")
    return "tensorwise"


def _lora(r: Reader, parallel: ParallelConfig) -> LoraConfig | None:
    peft_type = r.str("model.peft.peft_type")
    if peft_type is None:
        return None
    if peft_type.lower() not in PEFT_TYPES:
        r.refuse("model.peft.peft_type", f"{peft_type!r} is not supported", f"use one of {', '.join(PEFT_TYPES)}")
        return None
    if parallel.tp > 1:
        r.refuse("model.peft.peft_type", "LoRA with tensor_model_parallel_degree > 1 is not supported",
                 "set model.tensor_model_parallel_degree: 1; FSDP shards the model")
    return LoraConfig(
        rank=r.int("model.peft.rank", 16, minimum=1) or 16,
        alpha=r.float("model.peft.alpha", 32.0) or 32.0,
        dropout=_fraction(r, "model.peft.dropout"),
        target_modules=_lora_targets(r, r.raw("model.peft.target_modules")),
        quantize_base=peft_type.lower() == "qlora_4bit",
    )


_REGEX = set("*()|[]?+\\")
# The trainer builds text models; multimodal wrappers put the text model's layers under these.
_TEXT_MODEL_PREFIXES = ("language_model.model.", "model.language_model.")


def _lora_targets(r: Reader, targets: Any) -> list[str] | str | None:
    """peft's target_modules: names matched as suffixes, or one string ("all-linear", or a regex
    matched against the whole module name). HyperPod writes regexes as list entries (Llama 4:
    `language_model.model.layers.*self_attn.(q_proj|...)`, written for the multimodal wrapper); such
    lists become one regex, with the wrapper's prefix rewritten to the text model's `model.`."""
    if targets is None or isinstance(targets, str):
        return targets
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        r.refuse("model.peft.target_modules", f"expected a list of module names, found {targets!r}")
        return None
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
    if beta is not None and beta <= 0:
        r.refuse("model.dpo.beta", f"must be positive, found {beta}")
    smoothing = r.float("model.dpo.label_smoothing", 0.0) or 0.0
    if not 0.0 <= smoothing < 0.5:
        r.refuse("model.dpo.label_smoothing", f"must be in [0, 0.5), found {smoothing}",
                 "0.5 makes the preference loss constant: nothing would be learned")
    return DpoConfig(beta=beta or 0.1, label_smoothing=smoothing)


def _optim(r: Reader, max_steps: int) -> OptimConfig:
    name = r.str("model.optim.name", "adamw") or "adamw"
    if name not in OPTIMIZERS:
        r.refuse("model.optim.name", f"{name!r} is not supported", f"use one of {', '.join(OPTIMIZERS)}")
    betas = r.raw("model.optim.betas", [0.9, 0.999])
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        r.refuse("model.optim.betas", f"expected two numbers, found {betas!r}")
        betas = [0.9, 0.999]
    for beta in betas:
        try:
            value = float(beta) if isinstance(beta, (int, float, str)) and not isinstance(beta, bool) else None
        except ValueError:
            value = None
        if value is None or not 0.0 <= value < 1.0:
            r.refuse("model.optim.betas", f"each beta must be a number in [0, 1), found {beta!r}")
            betas = [0.9, 0.999]
            break
    sched_name = r.str("model.optim.sched.name", "constant") or "constant"
    if sched_name not in SCHEDULES:
        r.refuse("model.optim.sched.name", f"{sched_name!r} is not supported", f"use one of {', '.join(SCHEDULES)}")
    lr = r.float("model.optim.lr", 1e-4)
    if lr is not None and lr <= 0:
        r.refuse("model.optim.lr", f"must be positive, found {lr}")
    lr = lr if lr and lr > 0 else 1e-4
    min_lr = r.float("model.optim.sched.min_lr", 0.0) or 0.0
    if min_lr > lr:
        r.refuse("model.optim.sched.min_lr", f"{min_lr} is above model.optim.lr ({lr})")
    elif min_lr < 0:
        r.refuse("model.optim.sched.min_lr", f"must be >= 0, found {min_lr}")
    sched_len = (r.int("model.optim.sched.max_steps", minimum=1) or r.int("model.lr_decay_iters", minimum=1)
                 or max_steps)
    warmup = r.int("model.optim.sched.warmup_steps", 0, minimum=0) or 0
    constant = r.int("model.optim.sched.constant_steps", 0, minimum=0) or 0
    if sched_name == "CosineAnnealing" and warmup + constant > sched_len:
        r.refuse("model.optim.sched.warmup_steps",
                 f"warmup_steps + constant_steps ({warmup + constant}) exceed the schedule length ({sched_len})",
                 "shorten the warmup or lengthen the schedule (sched.max_steps, lr_decay_iters or trainer.max_steps)")
    return OptimConfig(
        lr=lr,
        weight_decay=_non_negative(r, "model.optim.weight_decay"),
        betas=(float(betas[0]), float(betas[1])),
        eps=r.float("model.optim.eps", 1e-8) or 1e-8,
        sched=SchedConfig(name="linear" if sched_name == "LinearAnnealingWithWarmUp" else sched_name,
                          warmup_steps=warmup, constant_steps=constant, min_lr=min_lr, max_steps=sched_len),
    )


def _non_negative(r: Reader, key: str) -> float:
    value = r.float(key, 0.0) or 0.0
    if value < 0:
        r.refuse(key, f"must be >= 0, found {value}")
        return 0.0
    return value


def _fraction(r: Reader, key: str) -> float:
    value = r.float(key, 0.0) or 0.0
    if not 0.0 <= value < 1.0:
        r.refuse(key, f"must be in [0, 1), found {value}")
        return 0.0
    return value


def _data(r: Reader, seq_len: int) -> DataConfig:
    synthetic = r.bool("model.data.use_synthetic_data", False)
    dataset_type = r.str("model.data.dataset_type", "hf") or "hf"
    if dataset_type not in ("hf", "jsonl"):
        r.refuse("model.data.dataset_type", f"{dataset_type!r} is not supported", "use hf (pre-tokenized) or jsonl (raw text)")
    train_dir = r.str("model.data.train_dir")
    if not synthetic and train_dir is None:
        r.refuse("model.data.train_dir", "is required unless model.data.use_synthetic_data is true")
    tokenizer = r.str("model.data.tokenizer_name_or_path") or r.str("model.hf_model_name_or_path")
    if not synthetic and dataset_type == "jsonl" and tokenizer is None:
        r.refuse("model.data.tokenizer_name_or_path", "is required to tokenize raw-text JSONL")
    return DataConfig(synthetic=synthetic, dataset_type=dataset_type, train_dir=train_dir,
                      val_dir=r.str("model.data.val_dir"), tokenizer=tokenizer,
                      num_workers=r.int("model.data.num_workers", 0, minimum=0) or 0, seq_len=seq_len)


def _checkpoint(r: Reader, exp_dir: Path) -> CheckpointConfig:
    keep = r.int("exp_manager.checkpoint_callback_params.save_top_k", 1, minimum=-1)
    keep = 1 if keep is None else keep
    resume = r.str("exp_manager.resume_from_checkpoint")
    return CheckpointConfig(
        dir=Path(r.str("exp_manager.checkpoint_dir") or exp_dir / "checkpoints"),
        enabled=keep != 0 and r.bool("exp_manager.create_checkpoint_callback", True),
        every_n_steps=r.int("exp_manager.checkpoint_callback_params.every_n_train_steps", 0, minimum=0) or 0,
        keep=keep,
        save_last=r.bool("exp_manager.checkpoint_callback_params.save_last", True),
        async_save=r.bool("exp_manager.checkpoint_callback_params.async_save", False),
        resume_from=Path(resume) if resume else None,
        export_every_n_steps=r.int("exp_manager.export_full_model.every_n_train_steps", 0, minimum=0) or 0,
        export_last=r.bool("exp_manager.export_full_model.save_last", True),
    )


def _val_every(r: Reader) -> int:
    value = r.raw("trainer.val_check_interval", 1)
    if isinstance(value, float) and not value.is_integer():
        r.refuse("trainer.val_check_interval", f"fractions of an epoch ({value}) are not supported",
                 "give a number of training steps")
        return 1
    return r.int("trainer.val_check_interval", 1, minimum=1) or 1


def _val_batches(r: Reader) -> int | None:
    value = r.raw("trainer.limit_val_batches", 0)
    if isinstance(value, float):
        if value == 1.0:
            return None  # Lightning's 1.0: the whole set
        if not value.is_integer():
            r.refuse("trainer.limit_val_batches", f"fractions ({value}) are not supported",
                     "give a number of batches, or 1.0 for all")
            return 0
    return r.int("trainer.limit_val_batches", 0, minimum=0) or 0


@dataclass(frozen=True)
class MeshShape:
    """The device mesh dp_replicate x dp_shard x cp x tp, row-major over the global ranks."""

    replicate: int
    shard: int
    tp: int
    cp: int = 1

    @property
    def dp(self) -> int:
        """Data-parallel size: how many different batches a micro-step reads (cp ranks share one)."""
        return self.replicate * self.shard

    @property
    def fsdp_shards(self) -> int:
        """How many pieces FSDP2 cuts each parameter into: dp_shard x cp (context-parallel ranks
        hold the same weights, so they shard them too, as torchtitan does)."""
        return self.shard * self.cp


def mesh_shape(p: ParallelConfig, world: int) -> MeshShape:
    """The (dp_replicate, dp_shard, cp, tp) shape for this world size, or a ConfigError saying why
    not. parallel.py builds the device mesh from it; hpctl asks it at plan time with the planned
    world. model.shard_degree counts FSDP's shard group, dp_shard x cp, as HyperPod's does."""
    if world % p.tp:
        raise ConfigError("model.tensor_model_parallel_degree",
                          f"{p.tp} does not divide the world size {world} (trainer.devices x trainer.num_nodes)",
                          "choose a tensor-parallel degree that divides the number of processes")
    if world % (p.tp * p.cp):
        raise ConfigError(CP, f"{p.cp} x tensor_model_parallel_degree ({p.tp}) does not divide the world size "
                          f"{world} (trainer.devices x trainer.num_nodes)",
                          "choose degrees whose product divides the number of processes")
    dp = world // (p.tp * p.cp)
    if p.sharding_strategy == "no_shard":
        return MeshShape(dp, 1, p.tp, p.cp)
    if p.sharding_strategy in ("full_shard", "shard_grad_op"):
        return MeshShape(1, dp, p.tp, p.cp)
    group = dp * p.cp
    shard = p.shard_degree or group
    if shard > group or group % shard or shard % p.cp:
        within = f"data-parallel size {dp}" if p.cp == 1 else f"data-parallel x context-parallel size {group}"
        cp_rule = "" if p.cp == 1 else f" and be a multiple of context_parallel_degree ({p.cp})"
        raise ConfigError("model.shard_degree", f"{shard} must divide the {within} "
                          f"(world {world} / tensor parallel {p.tp}{'' if p.cp == 1 else f' / context parallel {p.cp}'})"
                          f"{cp_rule}", "set model.shard_degree to such a divisor")
    return MeshShape(group // shard, shard // p.cp, p.tp, p.cp)


def _accumulation(global_batch: int, micro: int, dp_size: int, micro_key: str = "model.train_batch_size") -> int:
    """Micro-batches per optimizer step; `micro_key` is what the message calls the micro batch."""
    per_step = micro * dp_size
    if global_batch % per_step:
        lower = global_batch // per_step * per_step
        nearest = f"{lower} or {lower + per_step}" if lower else str(per_step)
        raise ConfigError("model.global_batch_size",
                          f"{global_batch} is not a multiple of {micro_key} x data-parallel size "
                          f"({micro} x {dp_size} = {per_step})", f"nearest valid: {nearest}")
    return global_batch // per_step


def grad_accumulation(cfg: TrainConfig, dp_size: int) -> int:
    """Micro-batches per optimizer step so that micro x dp x accumulation = global batch."""
    if cfg.global_batch is None:
        return 1
    groups = cfg.fault_tolerance.replica_groups if cfg.fault_tolerance else 1  # the groups share the batch
    return _accumulation(cfg.global_batch, cfg.micro_batch, dp_size * groups)


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
    # The recipe key whose secret is the API key (v1 wandb_logger_kwargs.api_key, LLMFT use_wandb):
    # hpctl passes it to the job as HPCTL_SECRET_<KEY> (hpctl.spec.secret_env_name), never in the spec.
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


def tracking(recipe: Mapping[str, Any]) -> TrackingConfig | None:
    """MLflow and W&B as the recipe asks for them, or None. Read without I/O, so hpctl can ask
    at plan time. v1: exp_manager.create_mlflow_logger + mlflow_logger_kwargs (tracking_uri,
    experiment_name, run_name, run_id, tags, artifact_location) and create_wandb_logger +
    wandb_logger_kwargs (project, name, save_dir, mode, entity, group, tags, api_key). v2 LLMFT:
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
                "use http(s)://HOST:PORT, a directory, file:, databricks or a SageMaker MLflow ARN")
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
        key = "exp_manager.create_wandb_logger"
        api_key_from = kw + "api_key" if r.raw(kw + "api_key") not in (None, "") else None
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
