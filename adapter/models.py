"""The model table: HyperPod `model_type` -> a transformers causal-LM config, and the model's weights.
With model.multi_modal the model is the checkpoint's vision-language one (Mllama, Llama 4).

Adding an architecture is one row in ARCHITECTURES: the transformers config class and the recipe
fields it takes beyond the common decoder ones. A recipe with `hf_model_name_or_path` takes the
architecture from that local checkpoint's config.json instead.

Models are built with their parameters on the meta device (buffers such as RoPE frequencies stay
real), parallelised while still empty, then filled parameter by parameter (`materialize`): each
rank computes or reads one full parameter at a time and keeps only its own shard, so no rank ever
holds the whole model. Random initialisation draws every parameter from its own generator seeded
by (seed, parameter name without wrappers), so the weights are the same whatever the world size,
layout, activation checkpointing or compile: a DPO reference model starts equal to its policy.
"""
from __future__ import annotations

import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from adapter import architectures, parallel
from adapter.reader import ConfigError, resolve_local

# model_type -> (transformers config class, extra recipe fields, transformers model_type): the one table.
from adapter.trainconfig import TrainConfig
ARCHITECTURES = architectures.ARCHITECTURES


def hf_config(cfg: TrainConfig) -> Any:
    """The transformers config of the model to train."""
    import transformers
    if cfg.hf_model:
        config = transformers.AutoConfig.from_pretrained(resolve_local(cfg.hf_model))
        config = config.get_text_config() if cfg.model_type == "llama_v4" and not cfg.multi_modal else config
        if cfg.arch.get("router_aux_loss_coef") is not None and hasattr(config, "router_aux_loss_coef"):
            config.router_aux_loss_coef = float(cfg.arch["router_aux_loss_coef"])  # the recipe's weight wins
    else:
        if cfg.model_type not in ARCHITECTURES:
            raise ConfigError("model.model_type", f"{cfg.model_type!r} is not supported",
                              f"use one of {', '.join(sorted(ARCHITECTURES))}, or give model.hf_model_name_or_path")
        class_name, extra, _ = ARCHITECTURES[cfg.model_type]
        config_class = getattr(transformers, class_name, None)
        if config_class is None:
            raise ConfigError("model.model_type", f"{cfg.model_type} needs transformers.{class_name}, "
                              f"which transformers {transformers.__version__} lacks")
        config = config_class(**_config_kwargs(cfg, extra))
    if "num_local_experts" in config.to_dict():
        config.output_router_logits = True  # train with the load-balancing loss
    config.use_cache = False
    return config


def _config_kwargs(cfg: TrainConfig, extra: tuple[str, ...]) -> dict[str, Any]:
    arch = cfg.arch
    missing = [k for k in architectures.required_fields(cfg.model_type) if arch.get(k) is None]
    if missing:
        raise ConfigError(f"model.{missing[0]}", f"is required to build a {cfg.model_type} model",
                          "or give model.hf_model_name_or_path")
    kwargs = {k: arch[k] for k in architectures.REQUIRED + architectures.OPTIONAL + extra if arch.get(k) is not None}
    kwargs["max_position_embeddings"] = arch.get("max_position_embeddings") or cfg.data.seq_len
    eps = arch.get("rms_norm_eps", arch.get("layernorm_epsilon"))
    if eps is not None:
        kwargs["layer_norm_epsilon" if cfg.model_type == "falcon" else "rms_norm_eps"] = float(eps)
    if cfg.model_type == "falcon":
        kwargs.pop("intermediate_size", None)
    kwargs.setdefault("tie_word_embeddings", False)
    return kwargs


def arch_fields(cfg: TrainConfig, config: Any) -> dict[str, Any]:
    """Architecture fields for FLOP counting: the recipe's, completed by the built config's."""
    # a vision-language model counts its language model's FLOPs
    fields = {k: v for k, v in config.get_text_config().to_dict().items() if isinstance(v, (int, float, bool))}
    return {**fields, **{k: v for k, v in cfg.arch.items() if v is not None and k not in fields},
            "model_type": cfg.model_type or getattr(config, "model_type", "")}


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Create parameters on the meta device, buffers for real (RoPE tables are computed at build)."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def build_empty(config: Any) -> nn.Module:
    """The causal LM (a vision-language model when the config has a vision tower) with parameters
    on the meta device (no memory, no initialisation cost)."""
    import transformers
    auto = (transformers.AutoModelForImageTextToText if getattr(config, "vision_config", None) is not None
            else transformers.AutoModelForCausalLM)
    with _parameters_on_meta():
        try:
            model = auto.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
        except ValueError:  # no SDPA path (gpt-oss's attention sinks): the reference implementation
            model = auto.from_config(config, attn_implementation="eager", dtype=torch.float32)
    config.architectures = [type(model).__name__]
    return model


def materialize(model: nn.Module, device: torch.device, seed: int, std: float, weights: Path | None,
                offload: bool = False) -> None:
    """Allocate this rank's shards and fill them: from `weights` (a local HF checkpoint directory)
    where it has the parameter, else by the deterministic random initialisation. Values are made
    on `device`; the shards live there too, or on the CPU when FSDP offloads them (`offload`)."""
    buffers = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    model.to_empty(device=torch.device("cpu") if offload else device)
    for name, value in buffers.items():  # RoPE tables and the like are computed, not initialised
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = value.to(device)
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    if getattr(model.config, "tie_word_embeddings", False) and head.weight is not embeddings.weight:
        head.weight = embeddings.weight  # to_empty re-creates unsharded parameters one by one
    with torch.no_grad():
        source = _checkpoint_tensors(weights, model) if weights is not None else {}
        for name, param in model.named_parameters():
            key = checkpoint_key(name)  # also seeds the initialisation: wrappers do not change it
            full = source[key]() if key in source else _init_value(key, param.shape, std, seed, device)
            parallel.copy_full_into(param, full)


def checkpoint_key(name: str) -> str:
    """A parameter's name in a Hugging Face checkpoint, without wrappers (activation checkpointing,
    torch.compile) or peft's base-model prefix."""
    for wrapper in ("_checkpoint_wrapped_module.", "_orig_mod.", "base_model.model.", ".base_layer"):
        name = name.replace(wrapper, "")
    return name


def _init_value(name: str, shape: torch.Size, std: float, seed: int, device: torch.device) -> torch.Tensor:
    """One parameter's initial value, a function of (seed, name) alone: norms one, biases zero,
    LoRA B zero (adapters start as the identity), LoRA A uniform as nn.Linear, the rest N(0, std)."""
    leaf = name.rsplit(".", 2)
    if name.endswith("bias") or ".lora_B." in name:
        return torch.zeros(shape, device=device)
    if len(shape) == 1 and ("norm" in leaf[-2] or leaf[-2].startswith("ln")):
        return torch.ones(shape, device=device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    if ".lora_A." in name:
        bound = 1.0 / shape[-1] ** 0.5
        return torch.empty(shape, device=device).uniform_(-bound, bound, generator=generator)
    return torch.empty(shape, device=device).normal_(0.0, std, generator=generator)


def _checkpoint_tensors(directory: Path, model: nn.Module) -> dict[str, Callable[[], torch.Tensor]]:
    """Lazy loaders for the checkpoint's tensors, by name, read one at a time from safetensors.

    Checkpoints whose names differ from the model's (older layouts that transformers converts on
    load, e.g. per-expert Mixtral weights) are read once through transformers instead."""
    from safetensors import safe_open
    files = sorted(directory.glob("*.safetensors"))
    index: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            index.update({key: file for key in handle.keys()})
    wanted = {checkpoint_key(n) for n, p in model.named_parameters() if ".lora_" not in n}
    if files and wanted <= index.keys():
        def reader(key: str) -> Callable[[], torch.Tensor]:
            def read() -> torch.Tensor:
                with safe_open(str(index[key]), framework="pt") as handle:
                    return handle.get_tensor(key).float()
            return read
        return {key: reader(key) for key in wanted}
    import transformers
    loaded = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).state_dict()
    missing = sorted(wanted - loaded.keys())
    if missing:
        raise ConfigError("model.hf_model_name_or_path", f"{directory} lacks {len(missing)} of the model's weights, "
                          f"e.g. {missing[0]}", "is it a checkpoint of the same architecture?")
    return {key: (lambda t=loaded[key]: t.float()) for key in wanted}
