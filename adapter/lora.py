"""LoRA fine-tuning through peft: wrap the (still empty) base model, train only the adapters, and
export the adapter alone and the base model with the adapters merged in.

Fields (HyperPod's model.peft): peft_type lora, rank, alpha, dropout, target_modules (default:
peft's choice for the architecture, q_proj and v_proj for Llama; "all-linear" or a regex string
also work, see v1._lora_targets), and LLMFT's exclude_modules. FSDP2 then shards the wrapped
model like any other; the frozen base weights are sharded too but get no optimizer state.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from adapter import qlora
from adapter.checkpoint import atomic_dir
from adapter.reader import ConfigError
from adapter.trainconfig import LoraConfig
from adapter.models import checkpoint_key


def apply(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """The peft model around `model`; only lora_A / lora_B parameters require gradients."""
    import peft
    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                             target_modules=cfg.target_modules, exclude_modules=cfg.exclude_modules,
                             bias="none", task_type="CAUSAL_LM")
    try:
        return peft.get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError("model.peft.target_modules", str(exc).splitlines()[0]) from None


def merged(full: dict[str, torch.Tensor], cfg: LoraConfig) -> dict[str, torch.Tensor]:
    """Base weights with W + (alpha / rank) * B @ A folded in, under the base model's HF names
    (QLoRA: the dequantized 4-bit base, so the export computes what training computed)."""
    scale = cfg.alpha / cfg.rank
    out = {}
    for name, tensor in full.items():
        if ".lora_" in name:
            continue
        tensor = qlora.dense(tensor)  # QLoRA's NF4 base weights, dequantized
        if name.endswith(".base_layer.weight"):
            prefix = name[: -len(".base_layer.weight")]
            a, b = full[f"{prefix}.lora_A.default.weight"], full[f"{prefix}.lora_B.default.weight"]
            tensor = tensor + scale * (b.float() @ a.float()).to(tensor.dtype)
        out[checkpoint_key(name)] = tensor
    return out


def write_adapter(model: Any, full: dict[str, torch.Tensor], out_dir: Path) -> None:
    """peft's adapter directory (adapter_config.json, adapter_model.safetensors), loadable by
    peft.PeftModel.from_pretrained(base_model, out_dir)."""
    from safetensors.torch import save_file
    weights = {name.replace(".default.", "."): tensor.contiguous()
               for name, tensor in full.items() if ".lora_" in name}
    with atomic_dir(out_dir) as tmp:
        model.peft_config["default"].save_pretrained(str(tmp))
        save_file(weights, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
