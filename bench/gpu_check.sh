#!/usr/bin/env bash
# GPU check of the trainer on a lent CUDA machine: bf16 FSDP2, one GPU, Llama 3.2 1B shape, with
# and without activation checkpointing and torch.compile, fp8 and activation offloading, and QLoRA vs
# LoRA peak memory. Needs torch, transformers, safetensors; fp8 and QLoRA need torchao (and QLoRA
# peft): wheels in .whl/ (carried to a bare machine, e.g. `pip download --no-deps torchao==0.18.0 -d
# .whl`) are installed into /tmp/site first; the rows say so when they are absent.
#   bash bench/gpu_check.sh [gpu_check.py args...]      results: ${OUT:-.}/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)'
exec "$PYTHON" bench/gpu_check.py --out "${OUT:-.}/gpu_check.json" "$@"
