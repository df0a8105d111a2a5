"""The rules of a HyperPod v1 recipe (run, trainer, exp_manager, model): what the trainer accepts.

`from_v1` reads the recipe through a Reader, which records every refusal with its key, and builds
the TrainConfig; llmft.py translates a v2 LLMFT recipe into this layout and asks the same function.
config.py is the entry point (from_recipe, problems); this module holds the rules. Torch-free.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from adapter import architectures, ft_config, known_models
from adapter.architectures import CP
from adapter.devices import read_accelerator
from adapter.mesh import accumulation, mesh_shape
from adapter.reader import ConfigError, Reader
from adapter.trainconfig import (
    OPTIMIZERS, PEFT_TYPES, PRECISIONS, SCHEDULES, SHARDING_STRATEGIES, CheckpointConfig, DataConfig, DpoConfig,
    LoraConfig, OptimConfig, ParallelConfig, SchedConfig, TrainConfig,
)


def from_v1(r: Reader, recipe: Mapping[str, Any], world_size: int | None) -> TrainConfig | None:
    """The v1 recipe's TrainConfig, refusals recorded in `r`; None only when one was recorded."""
    name = r.str("run.name") or "train"
    results = r.str("run.results_dir")
    if results is None:
        r.refuse("run.results_dir", "is required (the trainer writes metrics and checkpoints there)")
    results_dir = Path(results or ".")
    exp_dir = Path(r.str("exp_manager.exp_dir") or results_dir)

    _refuse_unsupported(r)
    accelerator = read_accelerator(r)
    raw_precision = precision_raw(r)
    precision = PRECISIONS.get(raw_precision.lower())
    if precision is None:
        r.refuse("trainer.precision", f"{raw_precision!r} is not supported",
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

    parallel = parallel_config(r, precision or "fp32", accelerator)
    lora = lora_config(r, parallel)
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
        shape = r.guard(None, mesh_shape, parallel, ft_config.mesh_world(ft, world_size))
        if shape is not None and global_batch is not None:
            r.guard(1, accumulation, global_batch, micro, shape.dp * (ft.replica_groups if ft else 1),
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
    with hf_model_name_or_path takes its architecture from that checkpoint: its shapes are checked
    here when known_models knows them (a readable config.json, or a model of its table)."""
    if hf_model is not None:
        known = known_models.lookup(hf_model)
        if known is not None and isinstance(known.fields.get("model_type"), str):
            hf_type = known.fields["model_type"]
            for error in architectures.tp_problems(hf_type, known.fields, parallel.tp) + \
                    architectures.cp_problems(hf_type, known.fields, parallel.cp):
                r.refuse(error.key, error.message, error.hint)
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


def precision_raw(r: Reader) -> str:
    return str(r.raw("trainer.precision", r.raw("model.precision", "bf16")))


def parallel_config(r: Reader, precision: str, accelerator: str) -> ParallelConfig:
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


def lora_config(r: Reader, parallel: ParallelConfig) -> LoraConfig | None:
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
