"""SageMaker HyperPod v2 LLM fine-tuning recipes (`run.model_type: llm_finetuning_aws`).

An LLMFT recipe (OpenRLHF's field names under `training_config`) is translated into the v1 layout
that `config.from_recipe` validates, then the few LLMFT-only settings are set on the result. Errors
name the LLMFT key. Torch-free, like config.py: the only I/O is counting the training rows, because
LLMFT gives epochs and the trainer counts optimizer steps.

Honoured (LLMFT -> trainer):
- trainer.devices, num_nodes; hpctl's trainer.accelerator (default auto, devices.py) and trainer.max_steps
  (default: max_epochs x steps per epoch, steps per epoch = training rows // train_batch_size).
  Precision is fp32 when trainer.accelerator is cpu, else bf16 (LLMFT has no precision field).
- training_args: trainer_type (sft | dpo), learning_rate, adam_betas, weight_decay, lr_scheduler
  (cosine: to 0.1 x lr like OpenRLHF's cosine_with_min_lr; linear: to 0; constant),
  lr_warmup_ratio (ceil(ratio x max_steps) warmup steps), micro_train_batch_size (per rank),
  train_batch_size (global: gradient accumulation fills it), max_len (sequence length), max_epochs,
  max_samples, seed, gradient_clipping + gradient_clipping_threshold (else max_norm),
  gradient_checkpointing (or fsdp_config.activation_checkpointing), aux_loss_coef (MoE),
  pretrain_mode (loss on prompt tokens too), beta, label_smoothing, reference_free, loss_type
  (sigmoid), logging_steps, eval_steps (<= 0: once per epoch), save_steps (0: once per epoch),
  max_ckpt_num, disable_ds_ckpt, save_hf_ckpt (a Hugging Face export at the end),
  resume_checkpoint_path, training_dir (exp_dir; empty: the results dir), use_tensorboard (a
  directory under exp_dir), strategy.fsdp_config.sharding_strategy (HYBRID_SHARD shards within a
  node: shard_degree = trainer.devices) and cpu_offload.
- model_config: model_name_or_path (a local directory or the Hugging Face cache: the trainer has no
  network; its tokenizer tokenizes the data), multimodal (refused when true), peft_config (null:
  full fine-tuning; lora with r, lora_alpha, lora_dropout, target_modules incl. "all-linear",
  exclude_modules).
- mlflow (tracking_uri, run_id) and training_args.use_wandb (the W&B API key, a secret): metrics
  go to MLflow / W&B (tracking_keys.tracking, tracking.py).
- datasets: train_data.file_path / val_data.file_path (JSON lines: `messages`, `prompt` +
  `completion` or `text` rows for SFT, `prompt` + `chosen` + `rejected` for DPO; see data.py and
  dpo.py), train_data.limit, train_val_split_ratio and train_val_split_seed (when val_data is empty).

Ignored, because they have no effect here or belong to SageMaker's services: display_name, version,
instance_types, scale_config (per-node-count presets: merged by the launcher before overrides, not
here), elastic_policy, run.hf_access_token (the trainer reads local files only), force_rerun,
trainer_callbacks, datasets.preprocessor_cfgs and
save_intermediate_processing_steps (the trainer tokenizes itself: chat rows through the tokenizer's
chat template, prompt tokens masked as Seq2SeqTokensProcessor's ignore_prompt_labels does),
model_config.{model_save_name, attn_implementation (SDPA, eager for gpt-oss), apply_chat_template,
chat_template_key (SageMaker's named templates are not public), device_map, generation_cfg},
training_args.{load_checkpoint and override_training_dir (a run always resumes its own newest
checkpoint), max_ckpt_mem, disable_fast_tokenizer, grad_accum_dtype (gradients reduce in fp32),
gradient_checkpointing_use_reentrant (always non-reentrant), merge_weights (LoRA runs write the
adapter and the merged model), ref_offload (the reference model is sharded like the policy), M and
sampling_method (offline DPO samples nothing), log_gpu_memory and log_run_time (always logged),
ring_head_stride}, and fsdp_config's FSDP1 knobs (auto_wrap_policy, backward_prefetch,
forward_prefetch, cpu_ram_efficient_loading, state_dict_type, sync_module_states, use_orig_params:
FSDP2 wraps each decoder layer and always loads shard by shard).

Refused, with the reason: multimodal models, ring attention / Ulysses (ring_attn_size or
ulysses_sequence_parallel_size > 1), packing_samples, l2 > 0, a DPO loss_type other than sigmoid,
nll_loss_coef > 0, DoRA, LoRA biases, target_parameters, lora_checkpoint_file_path,
datasets.data_dir (LLMFT's prepared format is not public), Parquet data.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

from adapter import rows
from adapter.devices import read_accelerator
from adapter.reader import Reader, resolve_local
from adapter.trainconfig import TrainConfig

MODEL_TYPE = "llm_finetuning_aws"  # run.model_type of an LLMFT recipe

TA = "training_config.training_args."
MC = "training_config.model_config."
PC = MC + "peft_config."
DS = "training_config.datasets."
FSDP = TA + "strategy.fsdp_config."
SHARDING = {"FULL_SHARD": "full_shard", "HYBRID_SHARD": "hybrid_shard", "SHARD_GRAD_OP": "shard_grad_op",
            "NO_SHARD": "no_shard"}
SCHEDULES = {"cosine": "CosineAnnealing", "linear": "linear", "constant": "constant"}
COSINE_MIN_LR_RATE = 0.1  # OpenRLHF's cosine_with_min_lr

# v1 key (what config.from_recipe reports) -> the LLMFT key it was translated from; a section's
# entry covers the keys under it that have none of their own (llmft_key), and run.* keys are the
# same in both. Every key _v1_recipe writes resolves to an LLMFT key (tests/adapter/test_llmft.py),
# so a refusal of the translated recipe is reported at a key of the user's recipe, never at a v1
# key it lacks.
LLMFT_KEY = {
    "trainer.devices": "trainer.devices", "trainer.num_nodes": "trainer.num_nodes",
    "trainer.accelerator": "trainer.accelerator", "trainer.precision": "trainer.accelerator",
    "trainer.max_steps": "trainer.max_steps", "trainer.log_every_n_steps": TA + "logging_steps",
    "trainer.val_check_interval": TA + "eval_steps", "trainer.limit_val_batches": TA + "eval_steps",
    "exp_manager.exp_dir": TA + "training_dir", "exp_manager.create_tensorboard_logger": TA + "use_tensorboard",
    "exp_manager.summary_writer_kwargs": TA + "use_tensorboard",
    "exp_manager.create_checkpoint_callback": TA + "disable_ds_ckpt",
    "exp_manager.checkpoint_callback_params": TA + "save_steps",
    "exp_manager.checkpoint_callback_params.save_top_k": TA + "max_ckpt_num",
    "exp_manager.resume_from_checkpoint": TA + "resume_checkpoint_path",
    "exp_manager.export_full_model": TA + "save_hf_ckpt",
    "model.do_finetune": MC + "model_name_or_path", "model.hf_model_name_or_path": MC + "model_name_or_path",
    "model.data": DS + "train_data.file_path", "model.data.tokenizer_name_or_path": MC + "model_name_or_path",
    "model.data.train_dir": DS + "train_data.file_path", "model.data.val_dir": DS + "val_data.file_path",
    "model.train_batch_size": TA + "micro_train_batch_size", "model.val_batch_size": TA + "micro_train_batch_size",
    "model.global_batch_size": TA + "train_batch_size",
    "model.max_context_width": TA + "max_len", "model.seed": TA + "seed",
    "model.grad_clip": TA + "gradient_clipping_threshold",
    "model.activation_checkpointing": TA + "gradient_checkpointing",
    "model.router_aux_loss_coef": TA + "aux_loss_coef",
    "model.optim": TA + "learning_rate", "model.optim.betas": TA + "adam_betas",
    "model.optim.weight_decay": TA + "weight_decay", "model.optim.sched": TA + "lr_warmup_ratio",
    "model.optim.sched.name": TA + "lr_scheduler", "model.optim.sched.min_lr": TA + "learning_rate",
    "model.optim.sched.max_steps": "trainer.max_steps",
    "model.sharding_strategy": FSDP + "sharding_strategy", "model.shard_degree": FSDP + "sharding_strategy",
    "model.cpu_offload": FSDP + "cpu_offload",
    "model.peft": MC + "peft_config",
    "model.peft.peft_type": PC + "peft_type", "model.peft.rank": PC + "r", "model.peft.alpha": PC + "lora_alpha",
    "model.peft.dropout": PC + "lora_dropout", "model.peft.target_modules": PC + "target_modules",
    "model.dpo": TA + "trainer_type",
    "model.dpo.beta": TA + "beta", "model.dpo.label_smoothing": TA + "label_smoothing",
}


def is_llmft(recipe: Mapping[str, Any]) -> bool:
    """Whether a recipe is an LLMFT (v2) recipe: the one test config, hpctl's catalogue and
    compatibility checks ask."""
    run = recipe.get("run")
    return isinstance(run, Mapping) and run.get("model_type") == MODEL_TYPE


def llmft_key(key: str) -> str:
    """The LLMFT key a v1 key of the translated recipe came from: its own entry, else its nearest
    section's (model.optim.sched.warmup_steps -> lr_warmup_ratio); unmapped keys stay as they are."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        found = LLMFT_KEY.get(".".join(parts[:n]))
        if found is not None:
            return found
    return key


def build(r: Reader, from_v1: Callable[[Reader], TrainConfig | None], files: bool) -> TrainConfig | None:
    """Validate an LLMFT recipe (read through `r`, where refusals are recorded under LLMFT's keys)
    and turn it into the trainer's TrainConfig by way of the v1 builder `from_v1`. Without `files`
    (hpctl's plan of a remote job) the model and data files are not read: epochs then count one
    step each, which changes no rule."""
    _refuse(r)
    v1, limit, fraction, split_seed = _translate(r, files)
    inner = Reader(v1, key_name=llmft_key)
    cfg = from_v1(inner)
    for error in inner.errors:
        r.refuse(llmft_key(error.key), error.message, error.hint)
    if cfg is None or r.errors:
        return None
    return replace(
        cfg,
        data=replace(cfg.data, limit=limit, train_fraction=fraction, split_seed=split_seed,
                     mask_prompt=not r.bool(TA + "pretrain_mode", False)),
        dpo=replace(cfg.dpo, reference_free=r.bool(TA + "reference_free", False)) if cfg.dpo else None,
        lora=replace(cfg.lora, exclude_modules=_names(r, PC + "exclude_modules")) if cfg.lora else None,
    )


def as_v1(recipe: Any) -> dict[str, Any] | None:
    """The v1 recipe an LLMFT recipe is trained as (files not read), for plan-time numbers that read
    v1 fields (hpctl's memory estimate and summary); None for a recipe that is not LLMFT."""
    run = recipe.get("run") if isinstance(recipe, dict) else None
    if not isinstance(run, dict) or run.get("model_type") != "llm_finetuning_aws":
        return None
    return _translate(Reader(recipe), False)[0]


def _translate(r: Reader, files: bool) -> tuple[dict[str, Any], int | None, float, int]:
    """(the v1 recipe, data limit, train fraction, split seed) of the LLMFT recipe `r` reads."""
    trainer_type = r.str(TA + "trainer_type", "sft") or "sft"
    if trainer_type not in ("sft", "dpo"):
        r.refuse(TA + "trainer_type", f"{trainer_type!r} is not supported", "use sft or dpo")
    model = r.str(MC + "model_name_or_path")
    if model is None:
        r.refuse(MC + "model_name_or_path", "is required: the base model, a local directory or a "
                 "Hugging Face id in the local cache")
    elif files:
        r.guard(None, resolve_local, model, MC + "model_name_or_path")  # a missing model is named by its LLMFT key
    train_path = r.str(DS + "train_data.file_path")
    if train_path is None:
        r.refuse(DS + "train_data.file_path", "is required: a JSON lines file or a directory of them")
    val_path = r.str(DS + "val_data.file_path")

    micro = r.int(TA + "micro_train_batch_size", 1, minimum=1) or 1
    global_batch = r.int(TA + "train_batch_size", micro, minimum=1) or micro
    limits = [n for n in (r.int(DS + "train_data.limit", minimum=1), _max_samples(r)) if n is not None]
    limit = min(limits) if limits else None
    fraction = 1.0 if val_path else r.float(DS + "train_val_split_ratio", 1.0)
    if fraction is None or not 0.0 < fraction <= 1.0:
        r.refuse(DS + "train_val_split_ratio", f"must be in (0, 1], found {fraction}")
        fraction = 1.0
    split_seed = r.int(DS + "train_val_split_seed", 42) or 0
    steps_per_epoch = 1
    if files and train_path is not None:
        count = r.guard(None, lambda: len(rows.load(train_path, DS + "train_data.file_path")))
        if count is not None:
            train_rows, _ = rows.train_val_indices(count, limit, fraction, split_seed)
            if not train_rows:
                r.refuse(DS + "train_data.file_path", f"{train_path} leaves no training rows "
                         f"(rows {count}, limit {limit}, train_val_split_ratio {fraction})")
            steps_per_epoch = max(len(train_rows) // global_batch, 1)
    max_steps = (r.int("trainer.max_steps", minimum=1)
                 or (r.int(TA + "max_epochs", 1, minimum=1) or 1) * steps_per_epoch)

    v1 = _v1_recipe(r, model or "", trainer_type, train_path or "", val_path, micro, global_batch, max_steps,
                    steps_per_epoch)
    return v1, limit, fraction, split_seed


def _v1_recipe(r: Reader, model: str, trainer_type: str, train_path: str, val_path: str | None, micro: int,
               global_batch: int, max_steps: int, steps_per_epoch: int) -> dict[str, Any]:
    results_dir = r.str("run.results_dir")
    exp_dir = r.str(TA + "training_dir") or results_dir
    accelerator = read_accelerator(r)
    lr = r.float(TA + "learning_rate", 1e-5)
    schedule = r.str(TA + "lr_scheduler", "cosine")
    if schedule not in SCHEDULES:
        r.refuse(TA + "lr_scheduler", f"{schedule!r} is not supported", f"use one of {', '.join(SCHEDULES)}")
        schedule = "cosine"
    warmup_ratio = r.float(TA + "lr_warmup_ratio", 0.0) or 0.0
    if not 0.0 <= warmup_ratio <= 1.0:
        r.refuse(TA + "lr_warmup_ratio", f"must be in [0, 1], found {warmup_ratio}")
        warmup_ratio = 0.0
    sharding = r.str(FSDP + "sharding_strategy", "FULL_SHARD")
    if sharding not in SHARDING:
        r.refuse(FSDP + "sharding_strategy", f"{sharding!r} is not supported", f"use one of {', '.join(SHARDING)}")
        sharding = "FULL_SHARD"
    devices = r.int("trainer.devices", 1, minimum=1)
    eval_steps = r.int(TA + "eval_steps", 0) or 0
    save_steps = r.int(TA + "save_steps", 0) or 0
    clip = 0.0
    if r.bool(TA + "gradient_clipping", True):
        clip = r.float(TA + "gradient_clipping_threshold") or r.float(TA + "max_norm", 1.0)
    tensorboard = r.raw(TA + "use_tensorboard")
    save_hf = r.bool(TA + "save_hf_ckpt", True)
    return {
        "run": {"name": r.str("run.name"), "results_dir": results_dir, "model_type": "hf"},
        "trainer": {"devices": devices, "num_nodes": r.int("trainer.num_nodes", 1, minimum=1),
                    "accelerator": accelerator, "precision": "fp32" if accelerator == "cpu" else "bf16",
                    "max_steps": max_steps, "log_every_n_steps": r.int(TA + "logging_steps", 1, minimum=1),
                    "val_check_interval": eval_steps if eval_steps > 0 else steps_per_epoch,
                    "limit_val_batches": 1.0},
        "exp_manager": {
            "exp_dir": exp_dir,
            "create_tensorboard_logger": isinstance(tensorboard, str) and tensorboard != "",
            "summary_writer_kwargs": {"save_dir": str(Path(exp_dir or ".") / tensorboard)
                                      if isinstance(tensorboard, str) and tensorboard else None},
            "create_checkpoint_callback": not r.bool(TA + "disable_ds_ckpt", False),
            "checkpoint_callback_params": {"save_top_k": r.int(TA + "max_ckpt_num", 1, minimum=-1),
                                           "every_n_train_steps": save_steps if save_steps > 0 else steps_per_epoch,
                                           "save_last": True},
            "resume_from_checkpoint": r.str(TA + "resume_checkpoint_path"),
            "export_full_model": {"every_n_train_steps": 0, "save_last": save_hf},
        },
        "model": {
            "do_finetune": True, "hf_model_name_or_path": model,
            "train_batch_size": micro, "val_batch_size": micro, "global_batch_size": global_batch,
            "seed": r.int(TA + "seed", 42), "grad_clip": clip, "max_context_width": r.int(TA + "max_len", 2048, minimum=2),
            "sharding_strategy": SHARDING[sharding], "shard_degree": devices if sharding == "HYBRID_SHARD" else None,
            "activation_checkpointing": r.bool(TA + "gradient_checkpointing", False)
            or r.bool(FSDP + "activation_checkpointing", False),
            "cpu_offload": r.bool(FSDP + "cpu_offload", False),
            "router_aux_loss_coef": r.float(TA + "aux_loss_coef"),
            "peft": _peft(r),
            "dpo": {"enabled": trainer_type == "dpo", "beta": r.float(TA + "beta", 0.1),
                    "label_smoothing": r.float(TA + "label_smoothing", 0.0)},
            "optim": {"name": "adamw", "lr": lr, "betas": r.raw(TA + "adam_betas", [0.9, 0.95]),
                      "weight_decay": r.float(TA + "weight_decay", 0.0),
                      "sched": {"name": SCHEDULES[schedule], "warmup_steps": math.ceil(warmup_ratio * max_steps),
                                "constant_steps": 0, "max_steps": max_steps,
                                "min_lr": COSINE_MIN_LR_RATE * lr if schedule == "cosine" else 0.0}},
            "data": {"use_synthetic_data": False, "dataset_type": "jsonl", "train_dir": train_path, "val_dir": val_path},
        },
    }


def _peft(r: Reader) -> dict[str, Any]:
    if r.raw(MC + "peft_config") is None:
        return {"peft_type": None}
    return {"peft_type": r.str(PC + "peft_type", "lora"), "rank": r.int(PC + "r", 8, minimum=1),
            "alpha": r.float(PC + "lora_alpha", 16.0), "dropout": r.float(PC + "lora_dropout", 0.0),
            "target_modules": r.raw(PC + "target_modules")}


def _names(r: Reader, key: str) -> list[str] | None:
    value = r.raw(key)
    if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        r.refuse(key, f"expected a list of module names, found {value!r}")
        return None
    return value


def _max_samples(r: Reader) -> int | None:
    value = r.float(TA + "max_samples")
    return None if value is None else int(value)


def _refuse(r: Reader) -> None:
    """LLMFT settings this trainer does not implement: refused rather than silently ignored."""
    if r.bool(MC + "multimodal", False):
        r.refuse(MC + "multimodal", "multimodal (vision-language) fine-tuning is not supported",
                          "this trainer fine-tunes text models; set it to false for a text-only model")
    for key in ("ring_attn_size", "ulysses_sequence_parallel_size"):
        if (r.int(TA + key, 1) or 1) > 1:
            r.refuse(TA + key, "must be 1: this trainer has no context (sequence) parallelism",
                              "shorten max_len or use more data-parallel ranks")
    checks = [
        (TA + "packing_samples", r.bool(TA + "packing_samples", False), "samples are padded one per row, not packed"),
        (TA + "l2", (r.float(TA + "l2", 0.0) or 0.0) > 0, "an L2 loss penalty is not implemented; use weight_decay"),
        (TA + "nll_loss_coef", (r.float(TA + "nll_loss_coef", 0.0) or 0.0) > 0,
         "DPO with an added NLL loss is not implemented; set it to 0"),
        (TA + "loss_type", r.str(TA + "loss_type", "sigmoid") != "sigmoid", "the DPO loss is the sigmoid one"),
        (PC + "use_dora", r.bool(PC + "use_dora", False), "DoRA is not implemented; use plain LoRA"),
        (PC + "bias", r.str(PC + "bias", "none") != "none", "LoRA trains no biases here; set bias: none"),
        (PC + "target_parameters", r.raw(PC + "target_parameters") is not None,
         "LoRA on parameters (fused expert weights) is not implemented; use target_modules"),
        (MC + "lora_checkpoint_file_path", r.str(MC + "lora_checkpoint_file_path") is not None,
         "starting from a saved LoRA adapter is not implemented; merge it into the base model first"),
        (DS + "data_dir", r.str(DS + "data_dir") is not None,
         "LLMFT's prepared-data format is not read; give train_data.file_path (JSON lines)"),
    ]
    for key, refused, why in checks:
        if refused:
            r.refuse(key, "is not supported by this trainer", why)
