#!/usr/bin/env bash
# GPU check of the trainer on a lent CUDA machine: bf16 FSDP2, one GPU, Llama 3.2 1B shape, with
# and without activation checkpointing and torch.compile; QLoRA vs LoRA peak memory (needs peft,
# torchao; the rows say so when absent). Needs torch, transformers, safetensors.
#   bash bench/gpu_check.sh [gpu_check.py args...]      results: ${OUT:-.}/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)'
exec "$PYTHON" bench/gpu_check.py --out "${OUT:-.}/gpu_check.json" "$@"
