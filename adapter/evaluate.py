"""The evaluation job: lm-evaluation-harness on the model an evaluation recipe names.

`python -m adapter.evaluate --config job_spec.json` (what every backend starts for an
evaluation recipe, under the same launcher as the trainer) reads the recipe with
`adapter.evalspec.from_recipe`, the same reader `hpctl plan` asked, runs lm-eval's Python API
on one process, and writes under the results dir:
  results.json              lm-eval's results (what its CLI writes: results, groups, configs, n-shot, ...)
  samples_<task>.jsonl      every scored document with the model's answer (lm-eval's per-sample log)
then sends each task's metrics (with their stderr) to MLflow when the recipe names a tracking
URI (into `output.mlflow_run_id` when given, so a training run and its evaluation sit together)
and to TensorBoard when it names `output.eval_tensorboard_results_dir`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from adapter import evalspec
from adapter.config import read_spec
from adapter.devices import wants_accelerators
from adapter.reader import ConfigError

DEFAULT_EXPERIMENT = "hpctl-evaluation"


def run(cfg: evalspec.EvalConfig) -> dict[str, Any]:
    """Evaluate and return lm-eval's results dict (samples included)."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if cfg.include_path:  # a task's data_files may be relative to its directory
        os.chdir(cfg.include_path)
    manager = TaskManager(include_path=cfg.include_path, include_defaults=cfg.include_path is None)
    tasks = list(cfg.tasks) or evalspec.default_tasks(evalspec.registry_from(manager))
    device = "cuda" if wants_accelerators(cfg.accelerator, torch.cuda.device_count()) else "cpu"
    print(f"adapter: lm-eval {', '.join(tasks)} on {cfg.model} ({device}, strategy {cfg.strategy}, "
          f"{cfg.num_fewshot}-shot)", flush=True)
    results = simple_evaluate(model="hf", model_args={"pretrained": cfg.model}, tasks=tasks,
                              num_fewshot=cfg.num_fewshot, batch_size=cfg.batch_size, device=device,
                              limit=cfg.limit, log_samples=True, task_manager=manager,
                              gen_kwargs=cfg.generation.kwargs() if cfg.generation else None)
    if results is None:  # lm-eval returns None on ranks other than 0; this job runs one process
        raise RuntimeError("lm-eval returned no results")
    return results


def write(cfg: evalspec.EvalConfig, results: dict[str, Any]) -> Path:
    """results.json and one samples file per task, under the results dir."""
    from lm_eval.utils import handle_non_serializable
    out = Path(cfg.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = results.pop("samples", {}) or {}
    for task, docs in samples.items():
        with (out / evalspec.SAMPLES_FILE.format(task=task)).open("w") as f:
            for doc in docs:
                f.write(json.dumps(doc, default=handle_non_serializable, ensure_ascii=False) + "\n")
    tmp = out / (evalspec.RESULTS_FILE + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n")
    os.replace(tmp, out / evalspec.RESULTS_FILE)
    return out


def metrics(results: dict[str, Any], cfg: evalspec.EvalConfig) -> dict[str, float]:
    """`eval/<task>/<metric>` and `eval/<task>/<metric>_stderr` for the metrics the recipe asks for."""
    out = {}
    for row in evalspec.score_rows(results, cfg.metric):
        out[f"eval/{row['task']}/{row['metric']}"] = float(row["value"])
        if row["stderr"] is not None:
            out[f"eval/{row['task']}/{row['metric']}_stderr"] = float(row["stderr"])
    return out


def send_mlflow(cfg: evalspec.EvalConfig, values: dict[str, float]) -> str:
    """Log the scores to MLflow; the run id they went to."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # a job contacts only what its recipe names
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    import time
    client = MlflowClient(tracking_uri=cfg.mlflow["tracking_uri"])
    run_id = cfg.mlflow.get("run_id")
    if not run_id:
        name = cfg.mlflow.get("experiment_name") or DEFAULT_EXPERIMENT
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        run_id = client.create_run(experiment_id, run_name=cfg.mlflow.get("run_name")).info.run_id
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in sorted(values.items())],
                     params=[Param("eval/model", cfg.model[:6000]), Param("eval/strategy", cfg.strategy)]
                     if not cfg.mlflow.get("run_id") else [])
    if not cfg.mlflow.get("run_id"):
        client.set_terminated(run_id)
    return run_id


def send_tensorboard(cfg: evalspec.EvalConfig, values: dict[str, float]) -> None:
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(log_dir=cfg.tensorboard_dir)
    for key, value in sorted(values.items()):
        writer.add_scalar(key, value, 0)
    writer.close()


def _s3(uri: str) -> tuple[Any, str, str]:
    """(an S3 client from the job's environment, bucket, key prefix) of an s3:// URI."""
    import boto3
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return boto3.client("s3"), bucket, prefix.rstrip("/")


def download(uri: str, dest: Path) -> Path:
    """Copy every object under an S3 prefix (a model directory) into `dest`."""
    client, bucket, prefix = _s3(uri)
    found = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            path = dest / obj["Key"][len(prefix) + 1:]
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(path))
            found += 1
    if not found:
        raise FileNotFoundError(f"no objects under {uri}")
    return dest


def upload(src: Path, uri: str) -> None:
    """Copy every file under `src` to the S3 prefix `uri`, keeping relative paths."""
    client, bucket, prefix = _s3(uri)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(src).as_posix()}")


def local(cfg: evalspec.EvalConfig) -> evalspec.EvalConfig:
    """The settings with S3 paths replaced by local ones under the staging dir: an S3 model is
    copied down first; S3 results and TensorBoard files are written there and uploaded after.
    Local paths become absolute: run() enters the task directory."""
    staging = Path(cfg.staging).absolute()
    model = str(download(cfg.model, staging / "model")) if evalspec.is_s3(cfg.model) else cfg.model
    if os.path.exists(model):  # a local directory, not a hub id: absolute, since run() enters the task directory
        model = os.path.abspath(model)
    results = str(staging / "results") if evalspec.is_s3(cfg.results_dir) else os.path.abspath(cfg.results_dir)
    tensorboard = str(staging / "tensorboard") if evalspec.is_s3(cfg.tensorboard_dir) else (
        cfg.tensorboard_dir and os.path.abspath(cfg.tensorboard_dir))
    return replace(cfg, model=model, results_dir=results, tensorboard_dir=tensorboard)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="the job spec hpctl wrote (job_spec.json)")
    args = parser.parse_args(argv)
    try:
        cfg = evalspec.from_recipe(read_spec(args.config)[1])
        return evaluate(cfg)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"adapter: error: {error}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - as adapter.train: a failure is one line and an exit code
        if os.environ.get("ADAPTER_DEBUG") == "1":
            raise
        message = " ".join(str(exc).split()) or "(no message)"
        print(f"adapter: error: {type(exc).__name__}: {message}", file=sys.stderr, flush=True)
        return 1


def evaluate(cfg: evalspec.EvalConfig) -> int:
    """Score the model, write and print the results, send them where the recipe says."""
    asked, cfg = cfg, local(cfg)
    results = run(cfg)
    out = write(cfg, results)
    from lm_eval.utils import make_table
    print(make_table(results), flush=True)
    print(f"adapter: results in {out}", flush=True)
    values = metrics(results, cfg)
    if cfg.mlflow.get("tracking_uri"):
        print(f"adapter: scores sent to MLflow run {send_mlflow(cfg, values)} at {cfg.mlflow['tracking_uri']}",
              flush=True)
    if cfg.tensorboard_dir:
        send_tensorboard(cfg, values)
        print(f"adapter: scores written to TensorBoard in {cfg.tensorboard_dir}", flush=True)
    for here, there in ((cfg.results_dir, asked.results_dir), (cfg.tensorboard_dir, asked.tensorboard_dir)):
        if there and evalspec.is_s3(there):
            upload(Path(here), there)
            print(f"adapter: {here} uploaded to {there}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
