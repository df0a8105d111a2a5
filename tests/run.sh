#!/usr/bin/env bash
# The test command (README): sets up a clean machine, starts a single-host Slurm, runs every test.
#   bash tests/run.sh [pytest args...]
# Installs: Debian's slurm-wlm and munge (tests/slurm/cluster.sh), a virtualenv in .venv with
# torch 2.13.0 (the CPU wheel) and hpctl with its adapter, kubernetes, sagemaker, evaluation and test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0            # the CPU wheel on disk; never a CUDA build
.venv/bin/python -m pip install -q -e '.[adapter,kubernetes,sagemaker,evaluation,test,fault-tolerance]'

# verl's contract test (tests/test_verl_contract.py): each verl version HyperPod's recipes target in its
# own venv (verl pins transformers below the project's), built once and reused.
for v in 0.5.0 0.7.1; do
  if ! ".venv-verl-$v/bin/python" -c "import verl" 2>/dev/null; then
    python3 -m venv ".venv-verl-$v"
    ".venv-verl-$v/bin/python" -m pip install -q torch==2.13.0 "verl==$v"
  fi
done

bash tests/slurm/cluster.sh start
trap 'bash tests/slurm/cluster.sh stop' EXIT

export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python -m pytest -p no:cacheprovider --durations=25 "$@"
