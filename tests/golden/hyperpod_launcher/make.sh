#!/bin/bash
# Regenerates the goldens in this directory from HyperPod's own launcher (v2, ../shared/peer-launchers):
# what its Hydra main.py does with the argument forms hpctl reads the same way (tests/test_hyperpod_args.py).
# Needs the launchers' venvs as their SOURCE.txt make them (PYTHON, default /tmp/hpl2/bin/python, for v2;
# PYTHON_V1, default /tmp/hpl/bin/python, for v1) and checkout copies with recipes_collection linked in
# (tests/helpers/launcher_scripts.py copy_checkout). slurm_workflow.txt replays the arguments of HyperPod's
# tests/slurm_workflow/test_recipe_slurm_workflow.py (aws/sagemaker-hyperpod-recipes, v1 branch).
# Usage: bash tests/golden/hyperpod_launcher/make.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-/tmp/hpl2/bin/python}
PYTHON_V1=${PYTHON_V1:-/tmp/hpl/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$here/../.." && python3 -c "import sys; sys.path.insert(0, '.'); from helpers.launcher_scripts import copy_checkout; from pathlib import Path; copy_checkout('v2', Path('$work/hp')); copy_checkout('v1', Path('$work/hp1'))")
run() {  # HyperPod main.py with a k8s LLMFT recipe; prints its last error line, or nothing
  (cd "$work/hp" && "$PYTHON" main.py recipes=fine-tuning/llama/llmft_llama3_1_8b_instruct_seq4k_gpu_dpo \
    base_results_dir="$work/res" cluster=k8s cluster_type=k8s container=example.com/img:1 "$@" 2>&1 || true) \
    | grep -v '^\[WARNING\]' | grep -E "^(Key|Could not|Job)" | head -3 | sed "s#$work#WORK#g"
}
{
  echo "## +cluster.persistent_volume_claims.0.claimName=fsx-claim +cluster.persistent_volume_claims.0.mountPath=/data hydra.job.chdir=True hydra.run.dir=. hydra.output_subdir=null"
  run +cluster.persistent_volume_claims.0.claimName=fsx-claim +cluster.persistent_volume_claims.0.mountPath=/data \
      hydra.job.chdir=True hydra.run.dir=. hydra.output_subdir=null | sed -E 's/^Job .* submission file created.*/accepted: submission file created/'
  echo "## cluster.persistent_volume_claims.0.claimName=fsx-claim"
  run cluster.persistent_volume_claims.0.claimName=fsx-claim
  echo "## hydra.job.chdri=True"
  run hydra.job.chdri=True
  echo "## run.name=x"
  run run.name=x
} > "$here/hydra_forms.txt"
python3 - "$work/res" > "$here/persistent_volume_claims.json" <<'PY'
import json, pathlib, sys, yaml
values = next(pathlib.Path(sys.argv[1]).glob("*/k8s_template/values.yaml"))
print(json.dumps(yaml.safe_load(values.read_text())["trainingConfig"]["persistentVolumeClaims"], indent=2))
PY
(cd "$work/hp1" && "$PYTHON_V1" main.py instance_type=ml.p5.48xlarge base_results_dir="$work/res1" \
  container=test_account.dkr.ecr.test_region.amazonaws.com/test_repo:test_tag cluster.slurm_create_submission_file_only=True \
  'cluster.slurm_docker_cfg.docker_args=[test_docker_cmd]' 'cluster.slurm_docker_cfg.post_launch_commands=[test_post_launch_cmd]' \
  >/dev/null 2>&1)
{
  echo "## files written (run name suffix removed)"
  (cd "$work/res1"/*/ && ls | sed -E 's/-[a-z0-9]{5}([_.])/\1/')
  echo "## launch_docker_container.sh lines with the two keys' values"
  grep -h -e test_docker_cmd -e test_post_launch_cmd "$work/res1"/*/launch_docker_container.sh | sed 's/^ *//'
} > "$here/slurm_workflow.txt"
