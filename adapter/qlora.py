"""QLoRA (model.peft.peft_type qlora_4bit): the frozen base weights held in 4-bit NormalFloat (NF4),
the LoRA adapters trained in the compute precision, everything sharded by FSDP2.

The NF4 tensor is torchao's (`torchao.quantization.NF4Tensor`), the one torchtune uses for QLoRA
with FSDP2: it implements FSDP2's all-gather extension (the 4-bit data, not a dequantized copy, is
what ranks exchange) and dequantizes inside `F.linear` to the input's dtype, on CPUs and GPUs
alike. bitsandbytes (HyperPod's choice, through peft) needs CUDA kernels and its 4-bit parameters
do not shard under FSDP2, so it could neither run the CPU tests nor follow the trainer's layout.

Which weights: every nn.Linear inside the decoder blocks that is not an adapter (peft's
`base_layer`s and the untargeted projections). Embeddings, the LM head, norms and fused expert
tensors stay in the compute dtype, frozen. Quantization uses double quantization of the absmax
scalers (block 64, scaler block 256 where the shard allows, else the largest power of two that
divides it evenly).

Flow: `quantize_base` turns the still-empty (meta) weights into empty NF4 tensors before FSDP2
shards them; `copy_full_into` fills one rank's shard from the full weight, quantizing the whole
tensor once and cutting it, so every shard carries the same per-tensor scaler mean (FSDP's
all-gather reassembles the shards under one). Checkpoints leave the frozen base out (it is read
again from model.hf_model_name_or_path); exports dequantize it (`dense`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adapter.reader import ConfigError

BLOCK = 64  # weights per absmax scaler: QLoRA's (and bitsandbytes') block size
SCALER_BLOCKS = (256, 128, 64, 32, 16, 8, 4, 2, 1)


def quantize_base(model: nn.Module, layers: nn.ModuleList, shards: int, dtype: torch.dtype) -> int:
    """Replace the frozen linear weights of `layers` with empty NF4 tensors of the same shape,
    laid out so that FSDP2 can cut them into `shards` equal pieces; returns how many. `dtype` is
    the compute dtype: FSDP2's mixed precision casts parameters of any other dtype before its
    all-gather, which would dequantize them."""
    from torchao.quantization import to_nf4
    count = 0
    for name, module in layers.named_modules():
        if not isinstance(module, nn.Linear) or ".lora_" in f".{name}" or module.weight.requires_grad:
            continue
        weight = module.weight
        nf4 = to_nf4(torch.zeros(weight.shape, device="meta", dtype=dtype), BLOCK, _scaler_block(name, weight.shape, shards))
        module.weight = nn.Parameter(nf4, requires_grad=False)
        count += 1
    return count


def _scaler_block(name: str, shape: torch.Size, shards: int) -> int:
    """The largest scaler block (<= 256) with which NF4's inner tensors split evenly into shards."""
    numel = shape.numel()
    if shape[0] % shards == 0:
        for size in SCALER_BLOCKS:
            if numel % (BLOCK * size * shards) == 0:
                return size
    raise ConfigError("model.peft.peft_type", f"qlora_4bit cannot shard the 4-bit weight {name} ({tuple(shape)}) "
                      f"evenly over {shards} data-parallel ranks (each shard must hold whole blocks of {BLOCK} weights "
                      f"and its first dimension must divide by {shards})",
                      "choose a data-parallel size that divides the model's dimensions")


def is_nf4(tensor: Any) -> bool:
    return type(tensor).__name__ == "NF4Tensor"


def copy_full_into(param: Any, full: torch.Tensor) -> None:
    """Fill this rank's NF4 shard of `param` (an FSDP2 DTensor, or a whole NF4 weight that a
    one-rank FSDP leaves alone) from the full weight."""
    from torch.distributed.tensor import DTensor, Shard
    from torchao.quantization import to_nf4
    local = param._local_tensor if isinstance(param, DTensor) else param
    piece = to_nf4(full.to(local.device, local.dtype), local.block_size, local.scaler_block_size)
    if isinstance(param, DTensor):
        mesh = param.device_mesh
        for dim, placement in enumerate(param.placements):
            if isinstance(placement, Shard):
                piece = torch.chunk(piece, mesh.size(dim), dim=0)[mesh.get_local_rank(dim)]
    for inner in ("quantized_scalers", "quantization_factor", "quantized_data"):
        getattr(local, inner).copy_(getattr(piece, inner))
    # Not sharded by FSDP and left on the meta device by `to_empty`: the per-tensor scaler mean
    # and the NF4 code book are set here.
    local.scaler_mean, local.nf4 = piece.scaler_mean, piece.nf4


def dense(tensor: torch.Tensor) -> torch.Tensor:
    """A full weight as a plain tensor: NF4 ones dequantized (to fp32), others unchanged."""
    return tensor.get_original_weight().float() if is_nf4(tensor) else tensor
