"""The sbatch script: directives, quoting of hostile values, secrets, determinism, and its logic.

No Slurm here: the script is checked with `bash -n`, parsed like sbatch parses #SBATCH lines,
and run by bash with stand-in `srun` and `scontrol` that record what they receive.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from adapter.secret import secret_env_name
from hpctl.backends.slurm import BACKEND, script_path
from hpctl.errors import HpctlError
from hpctl.spec import Spec

REPO = Path(__file__).resolve().parents[1]


def make_spec(results_dir: str = "/fsx/results/tiny", **changes: Any) -> Spec:
    """A small resolved spec; `changes` maps dotted paths to new values (None deletes)."""
    data: dict[str, Any] = {
        "cluster_type": "slurm",
        "base_results_dir": "/fsx/results",
        "env_vars": {"NCCL_DEBUG": "WARN"},
        "cluster": {"type": "slurm", "python": "/opt/venv/bin/python"},
        "recipes": {
            "run": {"name": "tiny", "results_dir": results_dir, "time_limit": "0:30:00"},
            "trainer": {"num_nodes": 2, "devices": 1, "accelerator": "cpu", "max_steps": 5},
            "model": {"model_type": "hf", "train_batch_size": 2},
        },
    }
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return Spec(data=data, recipe_name="tiny", cluster_name="slurm")


def directives(text: str) -> list[str]:
    """The #SBATCH arguments as sbatch reads them (shell-like words after `#SBATCH`)."""
    out = []
    for line in text.splitlines():
        if line.startswith("#SBATCH "):
            out.extend(shlex.split(line[len("#SBATCH "):]))
    return out


def bash_n(text: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_directives_of_a_cpu_job():
    artifact = BACKEND.render(make_spec())
    assert directives(artifact.text) == [
        "--job-name=tiny",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--time=0:30:00",
        "--output=/fsx/results/tiny/logs/%j.out",
        "--error=/fsx/results/tiny/logs/%j.out",
        "--open-mode=append",
        f"--chdir={REPO}",  # no workdir set: the hpctl checkout, where `adapter` lives
    ]
    assert artifact.kind == "sbatch" and artifact.language == "bash"
    assert artifact.files == {"/fsx/results/tiny/hpctl/tiny.sbatch": artifact.text}
    assert artifact.logs["stdout"] == "/fsx/results/tiny/logs/%j.out"
    assert artifact.results_dir == "/fsx/results/tiny"
    assert f"export PYTHONPATH={REPO}" in artifact.text
    bash_n(artifact.text)


def test_every_cluster_option_becomes_a_directive():
    spec = make_spec(**{
        "cluster.partition": "gpu", "cluster.account": "ml", "cluster.qos": "high",
        "cluster.constraint": "a100&ib", "cluster.reservation": "big", "cluster.exclusive": True,
        "cluster.mem": 0, "cluster.cpus_per_task": 96, "cluster.time": "2-00:00:00",
        "cluster.job_name_prefix": "team-", "cluster.stderr_to_stdout": False,
        "cluster.workdir": "/fsx/code",
    })
    args = directives(BACKEND.render(spec).text)
    for expected in ("--partition=gpu", "--account=ml", "--qos=high", "--constraint=a100&ib",
                     "--reservation=big", "--exclusive", "--mem=0", "--cpus-per-task=96",
                     "--time=2-00:00:00", "--job-name=team-tiny", "--chdir=/fsx/code",
                     "--error=/fsx/results/tiny/logs/%j.err"):
        assert expected in args
    assert "--time=0:30:00" not in args  # the cluster's time wins over run.time_limit


def test_gpus_per_node_only_for_gpu_jobs():
    cpu = directives(BACKEND.render(make_spec()).text)
    assert not any(a.startswith("--gpus-per-node") for a in cpu)
    gpu = BACKEND.render(make_spec(**{"recipes.trainer.accelerator": "gpu", "recipes.trainer.devices": 8}))
    assert "--gpus-per-node=8" in directives(gpu.text)
    assert "--nproc-per-node=8" in gpu.text
    pinned = make_spec(**{"recipes.trainer.accelerator": "gpu", "cluster.gpus_per_node": 4})
    assert "--gpus-per-node=4" in directives(BACKEND.render(pinned).text)


def test_launch_line_runs_torchrun_with_c10d_on_the_first_node():
    text = BACKEND.render(make_spec(**{"cluster.workdir": "/fsx/code"})).text
    assert "/opt/venv/bin/python -m torch.distributed.run" in text
    assert '--rdzv-backend=c10d' in text
    assert '--rdzv-id="$SLURM_JOB_ID"' in text
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in text
    assert '-m adapter.train\n  --config "$HPCTL_SPEC"' in text
    assert "export PYTHONPATH=/fsx/code" in text
    assert "--container" not in text


def test_container_from_cluster_or_root_key_mounts_results_and_workdir():
    spec = make_spec(**{"cluster.container": {"image": "nvcr.io/nvidia/pytorch:25.01-py3", "mounts": ["/fsx:/fsx"]},
                        "cluster.workdir": "/home/me/code"})
    text = BACKEND.render(spec).text
    assert "--container-image=nvcr.io/nvidia/pytorch:25.01-py3" in text
    # /fsx covers the results dir; the workdir needs its own mount
    assert "--container-mounts=/fsx:/fsx,/home/me/code:/home/me/code" in text
    assert "--container-workdir=/home/me/code" in text
    hyperpod = make_spec(container="img:1", **{"cluster.container_mounts": [None, "/data", "/x:/y"],
                                               "cluster.workdir": "/data/code"})
    root = BACKEND.render(hyperpod).text
    assert "--container-image=img:1\n" in root
    assert "--container-mounts=/data:/data,/x:/y,/fsx/results/tiny:/fsx/results/tiny\n" in root


@pytest.mark.slow
def test_auto_resume_requeues_and_forwards_usr1():
    plain = BACKEND.render(make_spec()).text
    assert "--requeue" not in plain and "USR1" not in plain and "scontrol requeue" not in plain
    spec = make_spec(**{"cluster.auto_resume": {"enabled": True, "max_restarts": 4, "signal_seconds": 120}})
    text = BACKEND.render(spec).text
    args = directives(text)
    assert "--requeue" in args and "--signal=B:USR1@120" in args
    assert "trap hpctl_on_usr1 USR1" in text
    assert '[ "${SLURM_RESTART_COUNT:-0}" -lt 4 ]' in text
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text
    assert "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1" in text
    bash_n(text)


def test_secrets_stay_out_of_the_script_and_travel_by_environment():
    spec = make_spec(**{"git.token": "ghp_SECRETVALUE", "env_vars.HF_TOKEN": "hf_SECRETVALUE",
                        "recipes.model.hf_access_token": "hf_OTHERSECRET"})
    artifact = BACKEND.render(spec)
    assert "SECRETVALUE" not in artifact.text and "OTHERSECRET" not in artifact.text
    assert artifact.env == {
        "HPCTL_SECRET_ENV_VARS_HF_TOKEN": "env_vars.HF_TOKEN",
        "HPCTL_SECRET_GIT_TOKEN": "git.token",
        "HPCTL_SECRET_RECIPES_MODEL_HF_ACCESS_TOKEN": "recipes.model.hf_access_token",
    }
    assert 'export HF_TOKEN="${HPCTL_SECRET_ENV_VARS_HF_TOKEN}"' in artifact.text
    assert ': "${HPCTL_SECRET_GIT_TOKEN:?' in artifact.text
    assert '"token": "(sensitive)"' in artifact.text
    assert secret_env_name("git.token") == "HPCTL_SECRET_GIT_TOKEN"


@pytest.mark.slow
def test_render_is_byte_deterministic_across_processes(tmp_path):
    spec = make_spec(**{"cluster.env": {"B": "2", "A": "1"}, "git.token": "x"})
    first = BACKEND.render(spec).text
    assert BACKEND.render(copy.deepcopy(spec)).text == first
    code = ("import json, sys; from hpctl.spec import Spec; from hpctl.backends.slurm import BACKEND; "
            "d = json.load(sys.stdin); sys.stdout.write(BACKEND.render(Spec(data=d)).text)")
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(spec.data), cwd=tmp_path,
                             capture_output=True, text=True, env=env, check=True).stdout
        assert out == first


def test_script_name_is_path_safe():
    assert script_path("/r", "../../etc/passwd") == "/r/hpctl/_.._etc_passwd.sbatch"
    spec = make_spec(**{"recipes.run.name": "a/b c"})
    assert list(BACKEND.render(spec).files) == ["/fsx/results/tiny/hpctl/a_b_c.sbatch"]


@pytest.mark.parametrize("changes, key", [
    ({"recipes.run.results_dir": "relative/dir"}, "recipes.run.results_dir"),
    ({"recipes.trainer.num_nodes": "two"}, "recipes.trainer.num_nodes"),
    ({"cluster.env": {"BAD NAME": "x"}}, "cluster.env.BAD NAME"),
    ({"cluster.partition": "gpu\ntouch /tmp/x"}, "cluster.partition"),
    ({"cluster.container": {"image": "i", "mounts": ["/a:/b,/c:/d"]}}, "cluster.container.mounts"),
])
def test_bad_values_are_located_errors(changes, key):
    with pytest.raises(HpctlError) as err:
        BACKEND.render(make_spec(**changes))
    assert err.value.problems[0].key == key


# ---------------------------------------------------------------------------------------------
# Hostile strings: rendered into every free-text field, the script must parse, nothing may run,
# and each value must arrive byte for byte where it belongs.

HOSTILE = [
    "x; touch {pwn}",
    "$(touch {pwn})",
    "`touch {pwn}`",
    "'; touch {pwn}; '",
    '"; touch {pwn}; "',
    "$HOME ${IFS} * ~ !! \\",
    "a b\tc",
    "-n",
    "line1\ntouch {pwn}",
    "\nHPCTL_SPEC_EOF\ntouch {pwn}\n",
    "%j %% 100%",
    "ünïcødé 日本 ☃",
    "#not-a-comment",
]

# Fields whose values land on #SBATCH lines: one line each, so a newline is refused there.
DIRECTIVE_FIELDS = ["recipes.run.name", "cluster.job_name_prefix", "cluster.partition", "cluster.account",
                    "cluster.qos", "cluster.constraint", "cluster.reservation", "cluster.time", "cluster.mem"]


def stand_ins(bin_dir: Path, record: Path, srun_rc: int = 0) -> None:
    """`srun` writes its argv (NUL separated) and the job env; `scontrol` plays a 2-node allocation."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(
        "#!/bin/bash\n"
        f"printf '%s\\0' \"$@\" > {shlex.quote(str(record))}.argv\n"
        f"env -0 > {shlex.quote(str(record))}.env\n"
        f"exit {srun_rc}\n")
    (bin_dir / "scontrol").write_text(
        "#!/bin/bash\n"
        f"echo \"$*\" >> {shlex.quote(str(record))}.scontrol\n"
        "case \"$1 $2\" in\n"
        "  'show hostnames') printf 'n1\\nn2\\n' ;;\n"
        "  'show node') echo \"NodeName=$3 Arch=x86_64 NodeAddr=10.0.0.1 NodeHostName=$3\" ;;\n"
        "esac\n")
    for name in ("srun", "scontrol"):
        (bin_dir / name).chmod(0o755)


def run_script(text: str, tmp_path: Path, restart: int | None = None, secrets: dict[str, str] | None = None,
               srun_rc: int = 0) -> tuple[subprocess.CompletedProcess[str], Path]:
    record = tmp_path / "record"
    stand_ins(tmp_path / "bin", record, srun_rc)
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "HOME": str(tmp_path / "home"),
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NNODES": "2", **(secrets or {})}
    if restart is not None:
        env["SLURM_RESTART_COUNT"] = str(restart)
    proc = subprocess.run(["bash", "-c", text], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    return proc, record


def hostile_spec(results_dir: str, workdir: str, value: str, in_directives: bool) -> Spec:
    changes: dict[str, Any] = {
        "cluster.env": {"HOSTILE": value}, "env_vars.ALSO": value, "cluster.python": value,
        "cluster.workdir": workdir, "cluster.srun_args": [value, "--x=" + value],
        "cluster.container": {"image": value, "mounts": [("/m:/" + value).replace(",", ";")]},
        "recipes.model.free_text": value, "recipes.run.results_dir": results_dir,
    }
    if in_directives:
        changes.update({field: value for field in DIRECTIVE_FIELDS})
    return make_spec(**changes)


@pytest.mark.slow
@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_strings_render_inert(template, tmp_path):
    pwn = tmp_path / "PWNED"
    value = template.replace("{pwn}", str(pwn))
    one_line = not re.search(r"[\x00-\x1f]", value)
    # The results dir and workdir reach #SBATCH lines too (--output, --chdir): one line, no backslash.
    path_safe = re.sub(r"[\x00-\x1f\\/]", "_", value)
    results_dir, workdir = str(tmp_path / "results" / path_safe), "/w/" + path_safe
    spec = hostile_spec(results_dir, workdir, value, in_directives=one_line)
    artifact = BACKEND.render(spec)
    text = artifact.text
    bash_n(text)
    if one_line:  # sbatch reads each #SBATCH value back exactly
        args = directives(text)
        assert f"--partition={value}" in args and f"--job-name={value}{value}" in args
        assert f"--output={results_dir.replace('%', '%%')}/logs/%j.out" in args

    proc, record = run_script(text, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not pwn.exists()
    argv = (record.parent / "record.argv").read_bytes().decode().split("\0")[:-1]
    assert argv[argv.index("--kill-on-bad-exit=1") + 1] == f"--container-image={value}"
    assert value in argv and f"--x={value}" in argv  # srun_args, one word each
    assert f"--container-workdir={workdir}" in argv
    env = dict(item.split("=", 1) for item in (record.parent / "record.env").read_bytes().decode().split("\0") if "=" in item)
    assert env["HOSTILE"] == value and env["ALSO"] == value
    assert env["PYTHONPATH"].startswith(workdir)
    written = json.loads(Path(results_dir, "job_spec.json").read_text())
    assert written == spec.public_data()


def test_newline_in_a_directive_field_is_refused():
    for field in DIRECTIVE_FIELDS:
        with pytest.raises(HpctlError):
            BACKEND.render(make_spec(**{field: "ok\n#SBATCH --uid=0"}))


# ---------------------------------------------------------------------------------------------
# The script's own logic, run by bash with stand-ins.

@pytest.mark.slow
def test_script_writes_spec_and_exit_marker_and_launches_torchrun(tmp_path):
    spec = make_spec(str(tmp_path / "res"), **{"git.token": "t0ken"})
    artifact = BACKEND.render(spec)
    proc, record = run_script(artifact.text, tmp_path, secrets={"HPCTL_SECRET_GIT_TOKEN": "t0ken"}, srun_rc=7)
    assert proc.returncode == 7
    assert (tmp_path / "res" / "logs" / "4242.exit").read_text() == "7\n"
    assert json.loads((tmp_path / "res" / "job_spec.json").read_text())["git"]["token"] == "(sensitive)"
    argv = (tmp_path / "record.argv").read_bytes().decode().split("\0")[:-1]
    assert argv[:4] == ["--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "/opt/venv/bin/python"]
    assert "--rdzv-endpoint=10.0.0.1:" + str(29500 + 4242 % 2000) in argv
    assert argv[-4:] == ["-m", "adapter.train", "--config", str(tmp_path / "res" / "job_spec.json")]
    env = dict(i.split("=", 1) for i in (tmp_path / "record.env").read_bytes().decode().split("\0") if "=" in i)
    assert env["HPCTL_SECRET_GIT_TOKEN"] == "t0ken" and env["NCCL_DEBUG"] == "WARN"


@pytest.mark.slow
def test_script_refuses_to_start_without_its_secrets(tmp_path):
    artifact = BACKEND.render(make_spec(str(tmp_path / "res"), **{"git.token": "t0ken"}))
    proc, record = run_script(artifact.text, tmp_path)
    assert proc.returncode != 0 and "HPCTL_SECRET_GIT_TOKEN" in proc.stderr
    assert not (tmp_path / "record.argv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("restart, requeued", [(None, True), (1, True), (2, False)])
def test_failed_run_requeues_until_max_restarts(tmp_path, restart, requeued):
    spec = make_spec(str(tmp_path / "res"), **{"cluster.auto_resume": {"enabled": True, "max_restarts": 2}})
    proc, record = run_script(BACKEND.render(spec).text, tmp_path, restart=restart, srun_rc=3)
    calls = (tmp_path / "record.scontrol").read_text()
    assert ("requeue 4242" in calls) is requeued
    assert (tmp_path / "res" / "logs" / "4242.exit").exists() is not requeued
    assert proc.returncode == 3


@pytest.mark.slow
def test_usr1_is_forwarded_to_the_launcher_and_requeues(tmp_path):
    """What Slurm does `signal_seconds` before the time limit, without Slurm."""
    spec = make_spec(str(tmp_path / "res"), **{"cluster.auto_resume": {"enabled": True, "max_restarts": 2}})
    text = BACKEND.render(spec).text
    record = tmp_path / "record"
    stand_ins(tmp_path / "bin", record)
    (tmp_path / "bin" / "srun").write_text(  # the launcher: checkpoints on USR1, then exits 0
        "#!/bin/bash\n"
        f"trap 'echo checkpointed > {tmp_path}/usr1; exit 0' USR1\n"
        f"touch {tmp_path}/started\n"
        "for _ in $(seq 300); do sleep 0.1; done\nexit 9\n")
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NNODES": "2"}
    proc = subprocess.Popen(["bash", "-c", text], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    for _ in range(100):
        if (tmp_path / "started").exists():
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert (tmp_path / "usr1").read_text() == "checkpointed\n"
    assert "requeue 4242" in (tmp_path / "record.scontrol").read_text()
    assert "requeueing after exit code 0" in out
