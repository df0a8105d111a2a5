"""Experiment tracking: rank 0 sends every metrics record to MLflow and / or Weights & Biases.

What is sent (tracking_keys.tracking decides where): the resolved recipe as parameters (flattened,
secrets redacted), every record of metrics.jsonl as step metrics, tags naming the hpctl job, the
spec digest and the backend job id, and at the end the newest checkpoint and export directories.

A tracking server never stops or slows training. Each destination has its own background thread
and buffer: `log` only appends to the buffer. A failed request is retried with exponential backoff
(1 s doubling to 60 s) while training goes on; the first failure prints one warning; at the end
the trainer waits at most FLUSH_TIMEOUT_S for the buffers to drain and then says which steps
could not be sent (metrics.jsonl always has them).

A resumed run continues the same MLflow run and W&B run: their ids are kept beside the
checkpoints (`<checkpoint_dir>/tracking.json`), so a preempted and requeued job shows one curve.
Parameters already on a continued MLflow run are not logged again (MLflow refuses changed values).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from adapter.reader import ConfigError
from adapter.secret import secret_env_name  # the variable hpctl passes the W&B key in
from adapter.trainconfig import MlflowConfig, TrackingConfig, TrainConfig, WandbConfig

RUN_IDS = "tracking.json"
BUFFER = 100_000  # records held per destination while it is unreachable; the oldest are dropped beyond
FLUSH_TIMEOUT_S = 60.0
MAX_BACKOFF_S = 60.0
BATCH = 50  # records per request (MLflow takes at most 1000 metrics per log_batch)
FINISHED, KILLED, FAILED = "FINISHED", "KILLED", "FAILED"
NOT_METRICS = ("step", "max_steps")
# The backend's id of this job, as `hpctl status` shows it: hpctl sets JOB_ID_VAR for local and
# Kubernetes jobs (namespace/name); Slurm and SageMaker set their own variable.
JOB_ID_VAR = "HPCTL_JOB_ID"
JOB_ID_VARS = (JOB_ID_VAR, "SLURM_JOB_ID", "TRAINING_JOB_NAME")


def check(cfg: TrackingConfig | None) -> None:
    """Refuse at start, before any step, when a destination's client library is missing."""
    needs = []
    if cfg is not None and cfg.mlflow is not None:
        needs.append(("mlflow", cfg.mlflow.key, "mlflow-skinny"))
    if cfg is not None and cfg.wandb is not None and cfg.wandb.mode != "disabled":
        needs.append(("wandb", cfg.wandb.key, "wandb"))
    for module, key, package in needs:
        if importlib.util.find_spec(module) is None:
            raise ConfigError(key, f"needs the {package} package, which this environment lacks",
                              f"pip install {package} (or hpctl's adapter extra)")


def start(cfg: TrainConfig, rank: int, resumed: bool) -> Tracker | None:
    """The tracker of rank 0, or None (other ranks, or nothing to track)."""
    t = cfg.tracking
    if rank != 0 or t is None:
        return None
    ids, tags = RunIds(cfg.checkpoint.dir / RUN_IDS, resumed), run_tags(cfg)
    sinks: list[Sink] = []
    if t.mlflow is not None:
        sinks.append(MlflowSink(t.mlflow, t.params, tags, ids))
    if t.wandb is not None and t.wandb.mode != "disabled":
        sinks.append(WandbSink(t.wandb, t.params, tags, ids))
    return Tracker(sinks, cfg.checkpoint.dir, cfg.results_dir)


def run_tags(cfg: TrainConfig) -> dict[str, str]:
    """The hpctl tags of the runs: job name, spec digest, results directory and backend job id."""
    assert cfg.tracking is not None
    tags = {"hpctl.job": cfg.name, "hpctl.spec_digest": cfg.tracking.spec_digest,
            "hpctl.results_dir": str(cfg.results_dir),
            "hpctl.backend_job_id": next((os.environ[v] for v in JOB_ID_VARS if os.environ.get(v)), None)}
    return {k: v for k, v in tags.items() if v}


class Sink(Protocol):
    name: str
    where: str

    def open(self) -> None: ...
    def send(self, batch: list[tuple[dict[str, Any], float]]) -> None: ...
    def close(self, status: str, outputs: dict[str, str]) -> None: ...


class Tracker:
    """What the metrics log talks to: `log` never blocks, `finish` waits a bounded time."""

    def __init__(self, sinks: list[Sink], checkpoint_dir: Path, results_dir: Path) -> None:
        self.senders = [Sender(s) for s in sinks]
        self.checkpoint_dir, self.results_dir = checkpoint_dir, results_dir
        self.last: dict[str, Any] = {}

    def log(self, record: dict[str, Any]) -> None:
        self.last = record
        for sender in self.senders:
            sender.put(record)

    def finish(self, timeout: float = FLUSH_TIMEOUT_S, failed: bool = False) -> None:
        """Send what is left (bounded by `timeout`), close the runs, report what was not sent. A run
        that ends before max_steps is marked KILLED (preempted, stopped) or FAILED (training
        raised); a resume reopens it."""
        done = bool(self.last) and self.last.get("step") == self.last.get("max_steps")
        status = FAILED if failed else FINISHED if done else KILLED
        outputs = {**_outputs(self.checkpoint_dir), "hpctl.metrics": str(self.results_dir / "metrics.jsonl")}
        for sender in self.senders:
            sender.close(status, outputs)
        deadline = time.monotonic() + timeout
        for sender in self.senders:
            sender.thread.join(max(0.0, deadline - time.monotonic()))
            sender.report()


def _outputs(checkpoint_dir: Path) -> dict[str, str]:
    """The newest committed checkpoint and the newest exports (a directory there is complete)."""
    from adapter.checkpoint import committed  # the trainer has torch loaded by now
    out = {}
    found = committed(checkpoint_dir / "sharded")
    if found:
        out["hpctl.checkpoint"] = str(found[-1][1])
    for kind, tag in (("full", "hpctl.export"), ("peft", "hpctl.adapter_export")):
        exports = sorted(p for p in (checkpoint_dir / kind).glob("step_*") if not p.name.endswith(".tmp"))
        if exports:
            out[tag] = str(exports[-1])
    return out


class Sender:
    """One destination's buffer and background thread: retries with backoff, warns once."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.cond = threading.Condition()
        self.pending: deque[tuple[int, dict[str, Any], float]] = deque()
        self.dropped: list[int] = []  # steps pushed out of a full buffer
        self.seq = 0
        self.sent = self.failures = 0
        self.closing: tuple[str, dict[str, str]] | None = None
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=f"tracking-{sink.name}", daemon=True)
        self.thread.start()

    def put(self, record: dict[str, Any]) -> None:
        with self.cond:
            if len(self.pending) >= BUFFER:
                self.dropped.append(self.pending.popleft()[1]["step"])
            self.seq += 1
            self.pending.append((self.seq, record, time.time()))
            self.cond.notify()

    def close(self, status: str, outputs: dict[str, str]) -> None:
        with self.cond:
            self.closing = (status, outputs)
            self.cond.notify()

    def _run(self) -> None:
        delay, opened = 1.0, False
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.pending or self.closing is not None)
                batch = [self.pending[i] for i in range(min(BATCH, len(self.pending)))]
                closing = self.closing
            try:
                if not opened:
                    self.sink.open()
                    opened = True
                if batch:
                    self.sink.send([(record, ts) for _, record, ts in batch])
                    with self.cond:
                        while self.pending and self.pending[0][0] <= batch[-1][0]:
                            self.pending.popleft()
                        self.sent += len(batch)
                    delay = 1.0
                    continue
                self.sink.close(*closing)
                self.closed = True
                return
            except Exception as exc:  # noqa: BLE001 - any failure of a tracking server is retried, never raised
                self.failures += 1
                if self.failures == 1:
                    message = " ".join(str(exc).split())[:300]
                    print(f"adapter: warning: {self.sink.name} ({self.sink.where}): {type(exc).__name__}: {message}; "
                          "training continues, metrics are buffered and retried in the background",
                          file=sys.stderr, flush=True)
                if closing is not None:
                    return  # the end of training: this was the last attempt
                with self.cond:
                    self.cond.wait_for(lambda: self.closing is not None, timeout=delay)
                delay = min(2 * delay, MAX_BACKOFF_S)

    def report(self) -> None:
        """One line at the end: what could not be sent, or that a retried destination caught up."""
        with self.cond:
            steps = sorted(self.dropped + [record["step"] for _, record, _ in self.pending])
        name, where = self.sink.name, self.sink.where
        if steps:
            print(f"adapter: warning: {name} ({where}): {len(steps)} metrics record(s) could not be sent "
                  f"(steps {_ranges(steps)}); metrics.jsonl has them", file=sys.stderr, flush=True)
        elif not self.closed:
            print(f"adapter: warning: {name} ({where}): the run could not be closed", file=sys.stderr, flush=True)
        elif self.failures:
            print(f"adapter: {name} ({where}): every record was sent, after {self.failures} failed attempt(s)",
                  flush=True)


def _ranges(steps: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10'."""
    out: list[str] = []
    start = prev = steps[0]
    for step in steps[1:] + [None]:  # type: ignore[list-item]
        if step is not None and step == prev + 1:
            prev = step
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if step is not None:
            start = prev = step
    return ", ".join(out)


class RunIds:
    """The tracking run ids of this job, beside its checkpoints. Read only when the job resumed:
    a fresh start (no checkpoint) opens new runs."""

    def __init__(self, path: Path, resumed: bool) -> None:
        self.path, self.lock = path, threading.Lock()
        self.ids: dict[str, str] = {}
        if resumed and path.is_file():
            try:
                self.ids = json.loads(path.read_text())
            except ValueError:
                pass

    def get(self, name: str) -> str | None:
        return self.ids.get(name)

    def save(self, name: str, run_id: str) -> None:
        with self.lock:
            self.ids[name] = run_id
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.ids, indent=1) + "\n")
            tmp.replace(self.path)


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlflowSink:
    """MLflow through its client (mlflow-skinny is enough): one run per job, continued on resume."""

    name = "MLflow"

    def __init__(self, cfg: MlflowConfig, params: dict[str, str], tags: dict[str, str], ids: RunIds) -> None:
        self.cfg, self.params, self.tags, self.ids = cfg, params, {**cfg.tags, **tags}, ids
        self.uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or cfg.local_store
        self.where = self.uri
        self.client: Any = None
        self.run_id = ""

    def open(self) -> None:
        # A job contacts only what its recipe names: MLflow 3 sends usage telemetry (to
        # config.mlflow-telemetry.io) unless this is set when it is imported, below. env_vars may allow it.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # The sender retries with backoff; MLflow's own retries (7, up to minutes) would hold it up.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        if "://" not in self.uri and not self.uri.startswith("databricks"):  # a directory, as HyperPod's recipes give
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps it behind this switch
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri=self.uri)
        run_id = self.cfg.run_id or self.ids.get("mlflow")
        if run_id:
            logged = client.get_run(run_id).data.params
            client.update_run(run_id, status="RUNNING")
        else:
            experiment = client.get_experiment_by_name(self.cfg.experiment)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(
                self.cfg.experiment, artifact_location=self.cfg.artifact_location)
            run_id, logged = client.create_run(experiment_id, run_name=self.cfg.run_name).info.run_id, {}
            self.ids.save("mlflow", run_id)
        params = [Param(k[:250], v[:6000]) for k, v in self.params.items() if k[:250] not in logged]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i:i + 100])
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in self.tags.items()])
        self.client, self.run_id = client, run_id
        print(f"adapter: MLflow run {run_id} (experiment {self.cfg.experiment}) at {self.uri}", flush=True)

    def send(self, batch: list[tuple[dict[str, Any], float]]) -> None:
        from mlflow.entities import Metric
        metrics = [Metric(key, value, int(ts * 1000), record["step"])
                   for record, ts in batch for key, value in _numbers(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str, outputs: dict[str, str]) -> None:
        from mlflow.entities import RunTag
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in outputs.items()])
        self.client.set_terminated(self.run_id, status=status)


class WandbSink:
    """Weights & Biases; offline mode writes the run under save_dir for `wandb sync`."""

    name = "W&B"

    def __init__(self, cfg: WandbConfig, params: dict[str, str], tags: dict[str, str], ids: RunIds) -> None:
        self.cfg, self.params, self.tags, self.ids = cfg, params, tags, ids
        self.where = f"project {cfg.project}"
        self.run: Any = None

    def open(self) -> None:
        if self.cfg.api_key_from and "WANDB_API_KEY" not in os.environ:
            key = os.environ.get(secret_env_name("recipes." + self.cfg.api_key_from))
            if key:
                os.environ["WANDB_API_KEY"] = key
        # Nor does W&B report its own errors (to Sentry in older releases, else its server) unless
        # env_vars allow it: read when its service process starts.
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        import wandb
        run_id = self.ids.get("wandb")
        Path(self.cfg.save_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=self.cfg.project, name=self.cfg.name, dir=self.cfg.save_dir,
                              mode=self.cfg.mode, entity=self.cfg.entity, group=self.cfg.group,
                              tags=list(self.cfg.tags) or None, config={**self.params, **self.tags},
                              id=run_id, resume="allow" if run_id else None,
                              settings=wandb.Settings(silent=True, console="off"))
        if run_id is None:
            self.ids.save("wandb", self.run.id)
        if self.run.settings.mode == "offline":
            directory = Path(self.run.dir).parent
            print(f"adapter: W&B offline run {self.run.id} in {directory}; upload it with `wandb sync {directory}`",
                  flush=True)
        else:
            print(f"adapter: W&B run {self.run.id} ({self.where})", flush=True)

    def send(self, batch: list[tuple[dict[str, Any], float]]) -> None:
        for record, _ in batch:
            self.run.log(_numbers(record), step=record["step"])

    def close(self, status: str, outputs: dict[str, str]) -> None:
        self.run.summary.update(outputs)
        self.run.finish(exit_code=0 if status == FINISHED else 1)
