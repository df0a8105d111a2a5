#!/usr/bin/env bash
# hpctl local job tiny-llama (recipe tiny/tiny_llama)
# Writes the resolved spec to /results/tiny-llama/job_spec.json before this script runs; this script launches it.
set -u
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # torchrun's default, set here so that it prints no banner about it
export HPCTL_JOB_ID=$$  # the job id hpctl records (tracking tags name it)
export NCCL_DEBUG=WARN
# torchrun prefixes every line a worker prints with its global rank (`hpctl logs --rank N`); set after
# the job's environment, as on Slurm and Kubernetes, so that it is hpctl's prefix `--rank` reads.
export TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE='[rank${rank}]: '
python3 -m torch.distributed.run --standalone --nproc-per-node=2 --tee=3 -m adapter.train --config /results/tiny-llama/job_spec.json
code=$?
echo "$code" > /results/tiny-llama/hpctl/exit.$$
exit "$code"
