"""Experiment tracking: the recipe keys (config.tracking), the plan naming where metrics go, and
one job logging to a real MLflow server (SQLite store, started here on 127.0.0.1) and to W&B in
offline mode through a fault and a resume; a server killed mid-run."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from adapter.config import from_recipe
from adapter.reader import ConfigError
from adapter.tracking_keys import tracking
from tests.helpers.trainer import REPO, deep_merge, env, export_dir, records, srun_style, tiny_recipe, write_spec
from tests.helpers.workspace import MINI_RECIPE

MLFLOW_ON = {"create_mlflow_logger": True, "mlflow_logger_kwargs": {"tracking_uri": "http://127.0.0.1:5000"}}


def test_recipe_keys_choose_the_destinations(tmp_path: Path) -> None:
    cfg = from_recipe(tiny_recipe(tmp_path, exp_manager={
        **MLFLOW_ON, "mlflow_logger_kwargs": {"tracking_uri": "https://mlflow.example.com", "run_name": "r1",
                                              "experiment_name": "exp", "tags": {"team": "llm"}},
        "create_wandb_logger": True, "wandb_logger_kwargs": {"mode": "Offline", "api_key": "s3cr3t"}}))
    t = cfg.tracking
    assert (t.mlflow.tracking_uri, t.mlflow.experiment, t.mlflow.run_name, t.mlflow.tags) == \
        ("https://mlflow.example.com", "exp", "r1", {"team": "llm"})
    assert (t.wandb.project, t.wandb.name, t.wandb.mode, t.wandb.save_dir) == ("tiny", "tiny", "offline", str(tmp_path))
    assert t.params["trainer.max_steps"] == "6" and t.params["model.optim.betas"] == "[0.9, 0.95]"
    assert t.params["exp_manager.wandb_logger_kwargs.api_key"] == "(sensitive)"
    assert "s3cr3t" not in json.dumps(t.params)
    assert t.destinations() == ["MLflow https://mlflow.example.com (experiment exp)",
                                f"W&B project tiny (offline), files in {tmp_path}"]
    # Nothing asked for: nothing tracked. HyperPod's v2 keys turn MLflow on by naming a server.
    assert from_recipe(tiny_recipe(tmp_path)).tracking is None
    v2 = tracking({"run": {"name": "j", "results_dir": "/r", "mlflow_tracking_uri": "/r/mlruns",
                           "mlflow_experiment_name": "e"}})
    assert (v2.mlflow.tracking_uri, v2.mlflow.experiment, v2.mlflow.run_name, v2.wandb) == ("/r/mlruns", "e", "j", None)
    llmft = tracking({"run": {"name": "j", "results_dir": "/r", "model_type": "llm_finetuning_aws"},
                      "training_config": {"mlflow": {"tracking_uri": "arn:aws:sagemaker:us-east-1:1:mlflow-tracking-server/s",
                                                     "run_id": "abc"}, "training_args": {"use_wandb": "(sensitive)"}}})
    assert llmft.mlflow.run_id == "abc" and llmft.wandb.api_key_from == "training_config.training_args.use_wandb"
    assert tracking({"run": {"name": "j"}, "training_config": {"mlflow": {"tracking_uri": "", "run_id": ""}}}) is None


# The tracking values the trainer refuses (recipe sections, the key named, words of the hint): MLflow
# on with each bad value. tests/test_trainer_contract.py runs each through `hpctl validate` too.
TRACKING_REFUSALS = [
    ({"exp_manager": deep_merge({"create_mlflow_logger": True}, exp_manager)}, "exp_manager." + key, hint)
    for exp_manager, key, hint in [
        ({"mlflow_logger_kwargs": {"tracking_uri": "htp://127.0.0.1:5000"}}, "mlflow_logger_kwargs.tracking_uri", "'http://'"),
        ({"mlflow_logger_kwargs": {"tracking_uri": "localhost:5000"}}, "mlflow_logger_kwargs.tracking_uri",
         "http://localhost:5000"),
        ({"mlflow_logger_kwargs": {"tracking_uri": "http://:5000"}}, "mlflow_logger_kwargs.tracking_uri", "HOST:PORT"),
        ({"mlflow_logger_kwargs": {"tracking_uri": "http://host:50x0"}}, "mlflow_logger_kwargs.tracking_uri", "HOST:PORT"),
        ({"mlflow_logger_kwargs": {"tracking_uri": "https://me:pw@host"}}, "mlflow_logger_kwargs.tracking_uri", "secrets"),
        ({"mlflow_logger_kwargs": {"tracking_uri": "/m", "tags": ["a"]}}, "mlflow_logger_kwargs.tags", None),
        ({"create_wandb_logger": True, "wandb_logger_kwargs": {"mode": "ofline"}}, "wandb_logger_kwargs.mode", "'offline'"),
        ({"create_wandb_logger": True, "wandb_logger_kwargs": {"mode": "dryrun"}}, "wandb_logger_kwargs.mode", "'offline'"),
    ]
]


@pytest.mark.parametrize("sections, key, hint", TRACKING_REFUSALS)
def test_values_that_cannot_work_are_refused(tmp_path: Path, sections: dict, key: str, hint: str | None) -> None:
    with pytest.raises(ConfigError) as exc:
        from_recipe(tiny_recipe(tmp_path, **sections))
    assert exc.value.key == key
    assert hint is None or hint in exc.value.hint
    assert "pw@" not in str(exc.value)


def test_plan_names_where_metrics_go_and_refuses_a_bad_uri_at_its_line(tiny_workspace, run_cli) -> None:
    good = MINI_RECIPE.replace("  exp_dir: null\n", "  exp_dir: null\n  create_wandb_logger: true\n"
                               "  wandb_logger_kwargs: {mode: offline}\n  create_mlflow_logger: true\n"
                               "  mlflow_logger_kwargs:\n    tracking_uri: http://127.0.0.1:5000\n")
    ws = tiny_workspace({"recipes/tiny/mini.yaml": good})
    rc, out, err = run_cli("plan", "-w", ws, "mini", "--no-color", "+env_vars.MLFLOW_TRACKING_TOKEN=tok3n")
    assert rc == 0, err
    assert "tracking       MLflow http://127.0.0.1:5000 (experiment mini); W&B project mini (offline)" in out
    assert "tok3n" not in out and 'MLFLOW_TRACKING_TOKEN="${HPCTL_SECRET_ENV_VARS_MLFLOW_TRACKING_TOKEN:?' in out
    rc, out, _ = run_cli("plan", "-w", ws, "mini", "--json")
    assert json.loads(out)["summary"]["tracking"][0].startswith("MLflow http://127.0.0.1:5000")

    bad = tiny_workspace({"recipes/tiny/mini.yaml": good.replace("http://127.0.0.1", "htp://127.0.0.1")}, name="bad")
    line = good.splitlines().index("    tracking_uri: http://127.0.0.1:5000") + 1
    rc, out, err = run_cli("plan", "-w", bad, "mini")
    assert rc == 1 and out == "" and "Traceback" not in err
    assert f"recipes/tiny/mini.yaml:{line}:19: recipes.exp_manager.mlflow_logger_kwargs.tracking_uri" in err
    assert "did you mean 'http://'?" in err
    rc, _, err = run_cli("validate", "-w", bad, "mini")
    assert rc == 1 and f"mini.yaml:{line}:19" in err


def test_a_missing_client_library_is_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from adapter import tracking as sender
    cfg = from_recipe(tiny_recipe(tmp_path, exp_manager=MLFLOW_ON)).tracking
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError) as exc:
        sender.check(cfg)
    assert exc.value.key == "exp_manager.create_mlflow_logger" and "mlflow-skinny" in str(exc.value)
    assert sender._ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10" and sender._ranges([4]) == "4"


def test_a_v1_wandb_api_key_reaches_wandb_the_way_hpctl_passes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """wandb_logger_kwargs.api_key is a secret: the job's spec holds `(sensitive)` and the value
    arrives in HPCTL_SECRET_<KEY>, which the sink hands to W&B as WANDB_API_KEY (as for LLMFT's use_wandb)."""
    pytest.importorskip("wandb", reason="the W&B checks need the wandb package (the test extra)")
    from adapter import tracking as sender
    from adapter.secret import secret_env_name
    key = "0123456789abcdef" * 2 + "k3y-v1-w"  # 40 characters, as W&B's keys are
    cfg = from_recipe(tiny_recipe(tmp_path, exp_manager={"create_wandb_logger": True, "wandb_logger_kwargs": {
        "mode": "offline", "save_dir": str(tmp_path / "wandb"), "api_key": "(sensitive)"}})).tracking
    assert cfg.wandb.api_key_from == "exp_manager.wandb_logger_kwargs.api_key"
    monkeypatch.setenv("WANDB_API_KEY", "")  # recorded, so what open() sets is undone after the test
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv(secret_env_name("recipes.exp_manager.wandb_logger_kwargs.api_key"), key)
    sink = sender.WandbSink(cfg.wandb, cfg.params, {}, sender.RunIds(tmp_path / "tracking.json", resumed=False))
    sink.open()
    try:
        assert os.environ["WANDB_API_KEY"] == key and sink.run.settings.api_key == key
    finally:
        sink.close(sender.FINISHED, {})
    out, err = capsys.readouterr()
    assert "W&B offline run" in out and key not in out + err


def test_the_sinks_turn_their_libraries_telemetry_off_unless_env_vars_say_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job contacts nothing its recipe does not name: MLflow's usage telemetry and W&B's error
    reports are off in the sink's process unless the job's environment (env_vars) sets them. The
    values standing for a user's are other spellings of "off", so the test itself contacts nothing."""
    pytest.importorskip("wandb", reason="the W&B checks need the wandb package (the test extra)")
    from adapter import tracking as sender
    from adapter.trainconfig import MlflowConfig, WandbConfig
    for name in ("MLFLOW_DISABLE_TELEMETRY", "WANDB_ERROR_REPORTING", "MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE",
                 "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "")  # recorded first: a delenv of an unset variable records nothing,
        monkeypatch.delenv(name)  # and what open() sets would outlive the test
    mlflow = MlflowConfig(key="exp_manager.create_mlflow_logger", tracking_uri=str(tmp_path / "mlruns"),
                          local_store="", experiment="e", run_name="r", run_id=None, tags={}, artifact_location=None)
    wandb = WandbConfig(key="exp_manager.create_wandb_logger", project="p", name="r", save_dir=str(tmp_path),
                        mode="offline", entity=None, group=None, tags=())
    ids = sender.RunIds(tmp_path / "tracking.json", resumed=False)
    for user in (None, {"MLFLOW_DISABLE_TELEMETRY": "1", "WANDB_ERROR_REPORTING": "0"}):
        for name, value in (user or {}).items():
            monkeypatch.setenv(name, value)
        sinks = [sender.MlflowSink(mlflow, {}, {}, ids), sender.WandbSink(wandb, {}, {}, ids)]
        for sink in sinks:
            sink.open()
            sink.close(sender.FINISHED, {})
        want = user or {"MLFLOW_DISABLE_TELEMETRY": "true", "WANDB_ERROR_REPORTING": "false"}
        assert {name: os.environ.get(name) for name in want} == want


@pytest.mark.parametrize("backend_env, job_id", [
    ({"HPCTL_JOB_ID": "ml/tiny"}, "ml/tiny"),  # local (the launcher's pid) and Kubernetes (namespace/name)
    ({"SLURM_JOB_ID": "4242"}, "4242"),
    ({"TRAINING_JOB_NAME": "tiny-0a1b2c3d"}, "tiny-0a1b2c3d"),  # SageMaker sets it in the container
    ({}, None),
])
def test_runs_are_tagged_with_the_backend_job_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 backend_env: dict[str, str], job_id: str | None) -> None:
    from adapter.tracking import JOB_ID_VARS, run_tags
    for name in JOB_ID_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in backend_env.items():
        monkeypatch.setenv(name, value)
    tags = run_tags(from_recipe(tiny_recipe(tmp_path, exp_manager=MLFLOW_ON)))
    assert tags.get("hpctl.backend_job_id") == job_id and tags["hpctl.job"] == "tiny"


# --- one job against a real MLflow server and W&B offline ---------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` with a SQLite store and a local artifact directory, on 127.0.0.1 only."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job-runner processes
               "MLFLOW_DISABLE_TELEMETRY": "true"}  # nothing outside this machine is contacted
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                 "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"mlflow server not up after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Kill the server and every process it started (uvicorn runs in a child)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    for module in ("mlflow", "sqlalchemy", "uvicorn"):  # the full mlflow package, not mlflow-skinny
        pytest.importorskip(module, reason="the tracking tests need the mlflow package's server (the test extra)")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _wandb_history(run_dirs: list[Path]) -> dict[int, float]:
    """{step: loss} from W&B offline transaction logs (`run-<id>.wandb`: a LevelDB-style log of
    protobuf records, 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2
    out: dict[int, float] = {}
    for run_dir in run_dirs:
        data = next(run_dir.glob("run-*.wandb")).read_bytes()
        assert data[:4] == b":W&B"
        pos, chunks = 7, b""
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if length == kind == 0:
                pos += left
                continue
            chunks, pos = chunks + data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind in (1, 4):  # a full record, or the last piece of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(chunks)
                chunks = b""
                if record.WhichOneof("record_type") == "history":
                    items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                    if "loss" in items:
                        out[items["_step"]] = items["loss"]
    return out


def _run(recipe: dict[str, Any], **env: str) -> tuple[int, str]:
    proc = srun_style(recipe, **env)
    proc.wait(timeout=600)
    return proc.returncode, proc.log.read_text()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_one_job_one_mlflow_run_through_a_fault_and_a_resume(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    pytest.importorskip("wandb", reason="the W&B checks need the wandb package (the test extra)")
    from mlflow.tracking import MlflowClient

    from adapter.digest import digest
    results, wandb_dir = tmp_path / "results", tmp_path / "wandb"
    recipe = tiny_recipe(results, exp_manager={
        "create_mlflow_logger": True,
        "mlflow_logger_kwargs": {"tracking_uri": mlflow_server.uri, "experiment_name": "hpctl-tests",
                                 "tags": {"team": "llm"}},
        "create_wandb_logger": True,
        "wandb_logger_kwargs": {"mode": "offline", "save_dir": str(wandb_dir), "api_key": "s3cr3t"}})

    # Fault after step 3 (checkpointed), then the requeued job resumes and finishes.
    rc, log_a = _run(recipe, HPCTL_FAIL_AT_STEP="3", HPCTL_JOB_ID="1001")
    assert rc == 3, log_a
    rc, log_b = _run(recipe, HPCTL_JOB_ID="1002")
    assert rc == 0, log_b
    assert "resumed from" in log_b and "warning" not in log_a + log_b, log_a + log_b
    ids = json.loads((results / "checkpoints" / "tracking.json").read_text())
    assert f"adapter: MLflow run {ids['mlflow']}" in log_a and f"adapter: MLflow run {ids['mlflow']}" in log_b

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("hpctl-tests")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == ids["mlflow"] and run.info.status == "FINISHED" and run.info.run_name == "tiny"
    expected = records(results)
    assert [r["step"] for r in expected] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "memory_gb", "val_loss"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(r["step"], r[key]) for r in expected if key in r], key
    params = run.data.params
    assert params["trainer.max_steps"] == "6" and params["model.hidden_size"] == "64"
    assert params["exp_manager.wandb_logger_kwargs.api_key"] == "(sensitive)"
    assert "s3cr3t" not in json.dumps(params) + json.dumps(run.data.tags)
    tags = run.data.tags
    spec = json.loads((results.parent / "spec.json").read_text())
    assert (tags["hpctl.job"], tags["hpctl.backend_job_id"], tags["team"]) == ("tiny", "1002", "llm")
    assert tags["hpctl.spec_digest"] == digest(spec)
    assert tags["hpctl.export"] == str(export_dir(results, 6))
    assert tags["hpctl.checkpoint"] == str(results / "checkpoints" / "sharded" / "step_00000006")

    # W&B: one run id, written offline by both attempts, holding every step's loss.
    run_dirs = sorted((wandb_dir / "wandb").glob(f"offline-run-*-{ids['wandb']}"))
    assert len(run_dirs) == 2 and f"wandb sync {run_dirs[-1]}" in log_b
    assert _wandb_history(run_dirs) == {r["step"]: r["loss"] for r in expected}


# The trainer with its train_step raising at the third step: a failure no fault hook stands for.
RAISING_TRAINER = """
import sys
import adapter.train as train
real, calls = train.train_step, []
def train_step(*args, **kwargs):
    calls.append(None)
    if len(calls) == 3:
        raise RuntimeError("injected failure at step 3")
    return real(*args, **kwargs)
train.train_step = train_step
sys.exit(train.main(["--config", sys.argv[1]]))
"""


@pytest.mark.slow
def test_a_run_that_raises_sends_its_steps_and_is_marked_failed(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """Training that raises (not a preemption, not a kill) still flushes the buffer and closes its
    run FAILED. Runs before the test below, which kills the server."""
    from mlflow.tracking import MlflowClient
    results = tmp_path / "results"
    recipe = tiny_recipe(results, exp_manager={"create_mlflow_logger": True, "mlflow_logger_kwargs": {
        "tracking_uri": mlflow_server.uri, "experiment_name": "raises"}})
    spec = write_spec(recipe, tmp_path / "spec.json")
    proc = subprocess.run([sys.executable, "-c", RAISING_TRAINER, str(spec)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env(SLURM_PROCID="0", SLURM_NTASKS="1", OMP_NUM_THREADS="1"))
    assert proc.returncode == 1 and "RuntimeError: injected failure at step 3" in proc.stderr, proc.stderr[-3000:]
    assert "warning" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    client = MlflowClient(mlflow_server.uri)
    [run] = client.search_runs([client.get_experiment_by_name("raises").experiment_id])
    assert run.info.status == "FAILED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
    assert [step for step, _ in history] == [1, 2]  # both logged steps before the failure at step 3
    assert history == [(r["step"], r["loss"]) for r in records(results)]


@pytest.mark.slow
def test_a_server_killed_mid_run_costs_one_warning_and_names_the_lost_steps(
        mlflow_server: MlflowServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's tracker, driven in-process (a trainer process more would cost CI its budget):
    steps reach the server, the server is killed, later steps are buffered, the end says which
    steps were lost. Runs after the test above, which needs the server alive."""
    from mlflow.tracking import MlflowClient

    from adapter import tracking
    from adapter.trainconfig import MlflowConfig
    monkeypatch.setattr(tracking, "_outputs", lambda checkpoint_dir: {})  # no checkpoints here (and no torch)
    cfg = MlflowConfig(key="exp_manager.create_mlflow_logger", tracking_uri=mlflow_server.uri, local_store="",
                       experiment="killed", run_name="r", run_id=None, tags={}, artifact_location=None)
    ids = tracking.RunIds(tmp_path / "tracking.json", resumed=False)
    tracker = tracking.Tracker([tracking.MlflowSink(cfg, {"p": "1"}, {"hpctl.job": "r"}, ids)], tmp_path, tmp_path)
    for step in (1, 2, 3):  # as a DPO run on a GPU logs them: MFU and rewards are step metrics too
        tracker.log({"step": step, "max_steps": 6, "loss": 1.0 / step, "mfu": 0.1 * step, "chosen_reward": -step,
                     "reward_margin": 0.5 * step, "reward_accuracy": 0.75, "val_loss": None})
    client, sent = MlflowClient(mlflow_server.uri), []
    for _ in range(600):
        sent = client.get_metric_history(ids.get("mlflow"), "loss") if ids.get("mlflow") else []
        if len(sent) == 3:
            break
        time.sleep(0.2)
    assert sorted(m.step for m in sent) == [1, 2, 3]
    run = client.get_run(ids.get("mlflow"))
    assert run.data.metrics == {"loss": 1 / 3, "mfu": 0.1 * 3, "chosen_reward": -3, "reward_margin": 1.5,
                                "reward_accuracy": 0.75}
    mlflow_server.stop()
    for step in (4, 5, 6):
        tracker.log({"step": step, "max_steps": 6, "loss": 1.0 / step})
    tracker.finish()
    err = capsys.readouterr().err
    assert err.count(f"adapter: warning: MLflow ({mlflow_server.uri})") == 2, err
    assert "3 metrics record(s) could not be sent (steps 4-6); metrics.jsonl has them" in err
