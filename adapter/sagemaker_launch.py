"""The SageMaker container's entry point: torchrun on this instance, then the export into /opt/ml/model.

    python -m adapter.sagemaker_launch --config /opt/ml/input/data/hpctl/job_spec.json \\
        --nproc-per-node 8 --master-port 29500 [--tensorboard-dir DIR] [--python python3]

hpctl's SageMaker backend renders exactly this command into the CreateTrainingJob request, so the
plan shows it. On each instance it:

1. reads resourceconfig.json (adapter.sagemaker.node): node rank, node count, the first host;
2. writes the spec the trainer runs to /opt/ml/output/data/job_spec.json, with the directories
   SageMaker collects: run.results_dir and exp_manager.exp_dir -> /opt/ml/output/data,
   exp_manager.checkpoint_dir -> /opt/ml/checkpoints (a retried or spot-interrupted job finds
   there what SageMaker synced back, and the trainer resumes from it), TensorBoard -> the
   request's TensorBoardOutputConfig local path. Everything else is the spec as planned;
3. runs torchrun with a static rendezvous (--node-rank from the resource config, so global rank
   r runs on host r // nproc), forwarding SIGTERM/SIGINT/SIGUSR1 (SageMaker's stop and spot
   interruption send SIGTERM: the trainer checkpoints and exits);
4. after a successful run, on the first host (where global rank 0 wrote it), moves the newest HF
   export (<checkpoints>/full/step_N) into /opt/ml/model, and a LoRA adapter export into
   /opt/ml/model/peft. Moving keeps the instance's disk from holding it twice; the export may
   also have been synced to the checkpoint S3 URI before the move.

The exit code is torchrun's. Torch-free: torch is imported by the trainer processes only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from adapter import evalspec, sagemaker
from adapter.rank_prefix import TEE_ALL, rank_prefix_env

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def container_spec(spec: dict[str, Any], tensorboard_dir: str | None) -> dict[str, Any]:
    """The planned spec with its directories moved to the ones SageMaker syncs and uploads."""
    out = json.loads(json.dumps(spec))
    recipe = out.setdefault("recipes", {})
    results = str(sagemaker.output_data_dir())
    recipe.setdefault("run", {})["results_dir"] = results
    exp = recipe.get("exp_manager")
    if isinstance(exp, dict):
        exp["exp_dir"] = results
        exp["checkpoint_dir"] = str(sagemaker.checkpoint_dir())
        if tensorboard_dir:
            exp.setdefault("summary_writer_kwargs", {})["save_dir"] = tensorboard_dir
    if evalspec.is_evaluation(recipe):  # lm-eval's files go to the job's output; scores to its TensorBoard
        output = recipe.setdefault("output", {})
        output["eval_results_dir"] = f"{results}/{evalspec.EVAL_DIR}"
        output["eval_tensorboard_results_dir"] = tensorboard_dir if output.get("eval_tensorboard_results_dir") else ""
    args = (recipe.get("training_config") or {}).get("training_args")
    if isinstance(args, dict):  # LLMFT: checkpoints live under <training_dir>/checkpoints
        args["training_dir"] = str(sagemaker.checkpoint_dir())
    return out


def torchrun_argv(python: str, node: sagemaker.Node, nproc: int, port: int, config: Path,
                  program: str = "adapter.train") -> list[str]:
    return [python, "-m", "torch.distributed.run", f"--nnodes={node.nnodes}", f"--node-rank={node.rank}",
            f"--nproc-per-node={nproc}", f"--master-addr={node.master_addr}", f"--master-port={port}",
            TEE_ALL, "-m", program, "--config", str(config)]


def newest(directory: Path) -> Path | None:
    steps = sorted(p for p in directory.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    return steps[-1] if steps else None


def publish_exports(checkpoints: Path, model: Path) -> list[Path]:
    """Move the newest full export's files into `model` and the newest LoRA adapter into model/peft."""
    moved = []
    for kind, dest in (("full", model), ("peft", model / "peft")):
        src = newest(checkpoints / kind)
        if src is None:
            continue
        dest.mkdir(parents=True, exist_ok=True)
        for item in sorted(src.iterdir()):
            target = dest / item.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(item), str(target))
        shutil.rmtree(src)
        moved.append(dest)
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapter.sagemaker_launch", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the planned job spec (the hpctl input channel)")
    parser.add_argument("--nproc-per-node", type=int, required=True, help="trainer processes per instance")
    parser.add_argument("--master-port", type=int, default=29500, help="rendezvous port on the first host")
    parser.add_argument("--tensorboard-dir", default=None, help="TensorBoardOutputConfig's local path")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs torchrun")
    args = parser.parse_args(argv)
    try:
        node = sagemaker.node()
        spec = json.loads(Path(args.config).read_text())
    except (OSError, ValueError) as exc:
        print(f"adapter.sagemaker_launch: error: {exc}", file=sys.stderr, flush=True)
        return 1
    out_dir = sagemaker.output_data_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / sagemaker.SPEC_FILE
    config.write_text(json.dumps(container_spec(spec, args.tensorboard_dir), indent=2, sort_keys=True) + "\n")
    print(f"adapter.sagemaker_launch: {node.current_host} is node {node.rank} of {node.nnodes}, "
          f"rendezvous {node.master_addr}:{args.master_port}", flush=True)

    # Each line a worker prints starts with its global rank, as on the other backends: the host's
    # CloudWatch stream then serves `hpctl logs --rank` (common.rank_lines). hpctl's value wins.
    program = evalspec.JOB_MODULE if evalspec.is_evaluation(spec.get("recipes")) else "adapter.train"
    proc = subprocess.Popen(torchrun_argv(args.python, node, args.nproc_per_node, args.master_port, config, program),
                            env={**os.environ, **rank_prefix_env()})
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    code = proc.wait()
    if code == 0 and node.rank == 0:
        for dest in publish_exports(sagemaker.checkpoint_dir(), sagemaker.model_dir()):
            print(f"adapter.sagemaker_launch: export moved to {dest}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
