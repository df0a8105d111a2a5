"""Custom entry points (the spec's `git` section): one owner, hpctl.entry, asked by every backend.

Refusals are checked once on the owner and once through each backend's render; the rendered
launch steps are run for real where no scheduler is needed: the local launch script and the Slurm
batch script by bash with stand-ins for python / srun / scontrol, the Kubernetes init container's
command by sh, each cloning a real git repository made here.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hpctl.backends import get_backend
from hpctl.compose import compose
from hpctl.entry import DEFAULT_PROGRAM, entry_point, runs_adapter, summary
from hpctl.errors import HpctlError, Origin
from hpctl.spec import Spec
from hpctl.validate import validate
from hpctl.workspace import Workspace
from test_k8s_render import validate_all
from test_k8s_render import parse as parse_manifest
from tests.helpers.workspace import GENERAL_CONFIG

REPO = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-c", "init.defaultBranch=main"]
SHA = "0123456789abcdef0123456789abcdef01234567"


def spec_of(git: dict[str, Any], results_dir: str | None = "/r/job") -> Spec:
    """A spec whose git values come from config.yaml lines 10.. (so errors are located)."""
    prov = {f"git.{k}": [Origin("config.yaml", 10 + i, 3)] for i, k in enumerate(git)}
    data = {"git": git, "recipes": {"run": {"name": "job", "results_dir": results_dir}}}
    return Spec(data=data, provenance=prov)


def make_repo(root: Path, files: dict[str, str]) -> str:
    """A git repository at root with one commit of `files`; returns the commit's sha."""
    root.mkdir(parents=True)
    subprocess.run([*GIT, "init", "-q", str(root)], check=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run([*GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-qm", "code"], check=True)
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def commit_more(root: Path, name: str, text: str) -> None:
    (root / name).write_text(text)
    subprocess.run([*GIT, "-C", str(root), "commit", "-qam", "later"], check=True)


# ---------------------------------------------------------------------------------------------
# The owner


def test_default_is_the_builtin_trainer():
    for git in (None, {}, {"repo_url_or_path": None, "entry_script": None, "update_adapter": False,
                           "use_default": True, "token": "t"}):
        data = {} if git is None else {"git": git}
        ep = entry_point(Spec(data=data), "/r")
        assert ep.program == DEFAULT_PROGRAM and ep.clone is None and ep.pythonpath is None
        assert runs_adapter(data) and summary(data) is None
    assert entry_point(Spec(data={}), None).argv("/r/job_spec.json") == ["-m", "adapter.train", "--config",
                                                                        "/r/job_spec.json"]


@pytest.mark.parametrize("git, program, clone, pythonpath, line", [
    ({"entry_script": "/opt/t.py"}, ("/opt/t.py",), False, None, "script /opt/t.py"),
    ({"entry_module": "pkg.train"}, ("-m", "pkg.train"), False, None, "module pkg.train"),
    ({"repo_url_or_path": "https://h/r.git", "entry_script": "ex/./t.py"}, ("/r/job/code/ex/t.py",), True, None,
     "script ex/./t.py from https://h/r.git"),
    ({"repo_url_or_path": "https://h/r.git", "branch": "v1.2", "entry_module": "m"}, ("-m", "m"), True,
     "/r/job/code", "module m from https://h/r.git branch v1.2"),
    ({"repo_url_or_path": "/src/fork", "commit": SHA, "update_adapter": True}, DEFAULT_PROGRAM, True,
     "/r/job/code", f"adapter.train of the clone from /src/fork commit {SHA}"),
])
def test_programs(git, program, clone, pythonpath, line):
    ep = entry_point(spec_of(git), "/r/job/")
    assert ep.program == program and (ep.clone is not None) == clone and ep.pythonpath == pythonpath
    assert not runs_adapter({"git": git}) and summary({"git": git}) == line
    assert ep.argv("S")[-2:] == ["--config", "S"]


@pytest.mark.slow
def test_the_token_reaches_git_through_its_credential_helper_only():
    ep = entry_point(Spec(data={"git": {"repo_url_or_path": "https://example.com/r.git", "entry_module": "m",
                                        "token": "t0ken"}}), "/r/job")
    (clone_line,) = [s for s in ep.clone.steps() if " clone " in s]
    assert "t0ken" not in clone_line
    words = shlex.split(clone_line)
    git_options = words[:words.index("clone")]  # git -c credential.helper= -c credential.helper=!f ...
    asked = subprocess.run([*git_options, "credential", "fill"], input="protocol=https\nhost=example.com\n\n",
                           capture_output=True, text=True, timeout=30,
                           env={**os.environ, "HPCTL_SECRET_GIT_TOKEN": "t0ken", "GIT_TERMINAL_PROMPT": "0"})
    assert asked.returncode == 0, asked.stderr
    assert "username=x-access-token" in asked.stdout.splitlines() and "password=t0ken" in asked.stdout.splitlines()


BAD = [  # (git values, the key of the first problem, a phrase of its message)
    ({"entry_script": "/a.py", "entry_module": "m"}, "git.entry_module", "both set"),
    ({"entry_script": "/a/train.sh"}, "git.entry_script", "must be a Python file"),
    ({"entry_script": "train.py"}, "git.entry_script", "relative entry script needs a repository"),
    ({"entry_script": "/a\n.py"}, "git.entry_script", "control characters"),
    ({"repo_url_or_path": "https://h/r", "entry_script": "/abs/t.py"}, "git.entry_script", "inside the repository"),
    ({"repo_url_or_path": "https://h/r", "entry_script": "a/../../t.py"}, "git.entry_script", "inside the repository"),
    ({"entry_module": "my-pkg.train"}, "git.entry_module", "not a Python module name"),
    ({"entry_module": "-c"}, "git.entry_module", "not a Python module name"),
    ({"entry_module": 5}, "git.entry_module", "expected a string"),
    ({"repo_url_or_path": "https://h/r", "commit": "main", "entry_module": "m"}, "git.commit", "hex sha"),
    ({"repo_url_or_path": "https://h/r", "commit": "abc$(id)", "entry_module": "m"}, "git.commit", "hex sha"),
    ({"repo_url_or_path": "https://h/r", "commit": SHA, "branch": "main", "entry_module": "m"}, "git.branch",
     "both set"),
    ({"repo_url_or_path": "https://h/r", "branch": "-b", "entry_module": "m"}, "git.branch", "branch or tag"),
    ({"repo_url_or_path": "https://h/r", "branch": "a..b", "entry_module": "m"}, "git.branch", "branch or tag"),
    ({"repo_url_or_path": "https://h/r", "branch": "x;id", "entry_module": "m"}, "git.branch", "branch or tag"),
    ({"repo_url_or_path": "https://h/r", "branch": "a/", "entry_module": "m"}, "git.branch", "branch or tag"),
    ({"repo_url_or_path": "https://h/r x", "entry_module": "m"}, "git.repo_url_or_path", "safely"),
    ({"repo_url_or_path": "https://h/r;touch /tmp/x", "entry_module": "m"}, "git.repo_url_or_path", "safely"),
    ({"repo_url_or_path": "https://h/$(id)", "entry_module": "m"}, "git.repo_url_or_path", "safely"),
    ({"repo_url_or_path": "https://h/`id`", "entry_module": "m"}, "git.repo_url_or_path", "safely"),
    ({"repo_url_or_path": "--upload-pack=id", "entry_module": "m"}, "git.repo_url_or_path", "safely"),
    ({"repo_url_or_path": "https://h/r\n", "entry_module": "m"}, "git.repo_url_or_path", "safely"),
    ({"repo_url_or_path": "code/repo", "entry_module": "m"}, "git.repo_url_or_path", "absolute path"),
    ({"repo_url_or_path": "ext::sh", "entry_module": "m"}, "git.repo_url_or_path", "absolute path"),
    ({"repo_url_or_path": "https://me:hunter2@h/r", "entry_module": "m"}, "git.repo_url_or_path", "password"),
    ({"branch": "main"}, "git.branch", "needs git.repo_url_or_path"),
    ({"commit": SHA}, "git.commit", "needs git.repo_url_or_path"),
    ({"update_adapter": True}, "git.update_adapter", "needs git.repo_url_or_path"),
    ({"repo_url_or_path": "https://h/r"}, "git.repo_url_or_path", "nothing runs from it"),
]


@pytest.mark.parametrize("git, key, phrase", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_values_that_cannot_work_are_located_errors(git, key, phrase):
    with pytest.raises(HpctlError) as err:
        entry_point(spec_of(git), "/r/job")
    problem = err.value.problems[0]
    assert problem.key == key and phrase in problem.message, err.value.render()
    assert str(problem.origin) == f"config.yaml:{10 + list(git).index(key.split('.')[1])}:3"
    assert "hunter2" not in err.value.render()


def test_every_problem_is_reported_at_once():
    git = {"repo_url_or_path": "rel", "commit": "zz", "branch": "b", "entry_script": "a.sh", "entry_module": "1x"}
    with pytest.raises(HpctlError) as err:
        entry_point(spec_of(git), "/r/job")
    keys = sorted(p.key for p in err.value.problems)
    assert keys == ["git.branch", "git.commit", "git.entry_module", "git.entry_module", "git.entry_script",
                    "git.repo_url_or_path"]


def test_the_clone_needs_an_absolute_results_dir():
    for results in (None, "results/job", "/r/a\nb"):
        with pytest.raises(HpctlError) as err:
            entry_point(spec_of({"repo_url_or_path": "https://h/r", "entry_module": "m"}, results), results)
        assert [p.key for p in err.value.problems] == ["recipes.run.results_dir"]
    with pytest.raises(HpctlError) as err:  # a relative script is still judged against the repository
        entry_point(spec_of({"repo_url_or_path": "https://h/r", "entry_script": "t.py"}, None), None)
    assert [p.key for p in err.value.problems] == ["recipes.run.results_dir"]


# ---------------------------------------------------------------------------------------------
# Through the backends


def compose_spec(tmp_path: Path, cluster: str, *overrides: str) -> Spec:
    fixed = ["base_results_dir=/results", "container=example.com/hpctl:1", "cluster.python=python3"]
    spec = compose(["tiny_llama", *fixed, *(["cluster.workdir=/opt/hpctl"] if cluster == "slurm" else []),
                    *overrides], cluster, Workspace(tmp_path))
    validate(spec)
    return spec


def launch_tail(cluster: str, text: str) -> list[str]:
    """The program and its arguments, as each backend's launcher receives them."""
    if cluster == "local":
        return shlex.split(text.split("--tee=3 ", 1)[1].splitlines()[0])
    if cluster == "slurm":
        block = text.split("  --tee=3\n", 1)[1].split("\n)\n", 1)[0]
        return [w for line in block.splitlines() for w in shlex.split(line.replace('"$HPCTL_SPEC"', "SPEC"))]
    _, job = parse_manifest(text)
    return job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]


SPEC_ARG = {"local": "/results/tiny-llama/job_spec.json", "slurm": "SPEC", "k8s": "/config/job_spec.json"}


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["local", "slurm", "k8s"])
def test_each_backend_runs_the_program_the_owner_names(tmp_path, cluster):
    cases = [
        (["git.entry_script=/opt/my train.py"], ["/opt/my train.py"]),
        (["+git.entry_module=pkg.train"], ["-m", "pkg.train"]),
        (["git.repo_url_or_path=https://example.com/r.git", "git.commit=abcdef1", "git.entry_script=ex/t.py"],
         ["/results/tiny-llama/code/ex/t.py"]),
    ]
    for overrides, program in cases:
        spec = compose_spec(tmp_path, cluster, *overrides)
        text = get_backend(spec.cluster_type).render(spec).text
        assert launch_tail(cluster, text) [-len(program) - 2:] == [*program, "--config", SPEC_ARG[cluster]]
        assert "adapter.train" not in text.split("HPCTL_SPEC_EOF")[-1]
        if cluster == "k8s":
            validate_all(*parse_manifest(text))
        else:
            subprocess.run(["bash", "-n"], input=text, text=True, check=True)
        if "git.commit=abcdef1" in overrides:
            assert "git -C /results/tiny-llama/code checkout --quiet --detach abcdef1" in text.replace("$$", "$")


@pytest.mark.parametrize("cluster", ["local", "slurm", "k8s"])
def test_each_backend_refuses_through_the_owner(tmp_path, cluster):
    spec = compose_spec(tmp_path, cluster, "git.entry_script=train.sh", "git.commit=abc")
    with pytest.raises(HpctlError) as err:
        get_backend(spec.cluster_type).render(spec)
    located = sorted((p.key, p.origin.text) for p in err.value.problems)
    assert located == [("git.commit", "git.commit=abc"), ("git.commit", "git.commit=abc"),  # not hex; no repository
                       ("git.entry_script", "git.entry_script=train.sh")]


def test_plan_shows_the_program_and_refuses_at_file_line(tiny_workspace, run_cli):
    ws = tiny_workspace({"config.yaml": GENERAL_CONFIG + "git:\n  repo_url_or_path: https://example.com/r.git\n"
                                                         "  commit: main\n  entry_script: train.py\n"})
    code, out, err = run_cli("plan", "mini", "--cluster", "local", "--workspace", ws, "--no-color")
    assert code == 1 and "Traceback" not in out + err
    assert "config.yaml:11:11: git.commit: a commit is a hex sha" in err
    code, out, err = run_cli("plan", "mini", "--cluster", "local", "--workspace", ws, "--no-color", f"git.commit={SHA}")
    assert code == 0, err
    assert f"program script train.py from https://example.com/r.git commit {SHA}" in " ".join(out.split())
    assert f"git -C {ws}/results/mini/code checkout --quiet --detach {SHA}" in out


# ---------------------------------------------------------------------------------------------
# The rendered steps, run for real (git, bash, sh; stand-ins for python, srun and scontrol)

HOSTILE_DIR = "d $(touch {pwn}) `touch {pwn}` '; touch {pwn}; ' \" $HOME"


def fake_python(path: Path, record: Path) -> None:
    """Records its argv (NUL-separated) and PYTHONPATH, like torchrun would receive them."""
    path.write_text("#!/bin/bash\n"
                    f"printf '%s\\0' \"$@\" > {shlex.quote(str(record))}.argv\n"
                    f"printf '%s' \"${{PYTHONPATH:-}}\" > {shlex.quote(str(record))}.pythonpath\n")
    path.chmod(0o755)


def argv_of(record: Path) -> list[str]:
    return Path(f"{record}.argv").read_bytes().decode().split("\0")[:-1]


def local_spec(tmp_path: Path, results: Path, git: dict[str, Any], python: Path) -> Spec:
    return Spec(data={"git": git, "cluster": {"python": str(python)},
                      "recipes": {"run": {"name": "x", "results_dir": str(results)}, "trainer": {"devices": 2}}},
                recipe_name="x", cluster_name="local")


@pytest.mark.slow
def test_local_script_clones_the_pinned_commit_and_runs_the_module_from_it(tmp_path):
    pwn = tmp_path / "PWNED"
    repo = tmp_path / "repo"
    first = make_repo(repo, {"pkg/__init__.py": "", "pkg/train.py": "", "adapter/train.py": ""})
    commit_more(repo, "pkg/train.py", "later = True\n")
    results = tmp_path / HOSTILE_DIR.format(pwn=pwn)
    (results / "hpctl").mkdir(parents=True)
    fake_python(tmp_path / "python", tmp_path / "rec")
    (results / "code").mkdir()
    (results / "code" / "stale").write_text("from an earlier run")
    git = {"repo_url_or_path": str(repo), "commit": first[:12], "entry_module": "pkg.train", "update_adapter": True}
    text = get_backend("local").render(local_spec(tmp_path, results, git, tmp_path / "python")).text
    proc = subprocess.run(["bash", "-c", text], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not pwn.exists()
    assert f"hpctl: code from {repo} at {first}" in proc.stdout
    code = results / "code"
    assert sorted(p.name for p in code.iterdir()) == [".git", "adapter", "pkg"]  # emptied, then cloned
    assert (code / "pkg" / "train.py").read_text() == ""  # the pinned commit, not the later one
    assert argv_of(tmp_path / "rec")[-4:] == ["-m", "pkg.train", "--config", f"{results}/job_spec.json"]
    assert Path(f"{tmp_path / 'rec'}.pythonpath").read_text().split(":")[0] == str(code)
    assert (results / "hpctl" / next(p.name for p in (results / "hpctl").iterdir())).read_text() == "0\n"


@pytest.mark.slow
def test_local_script_stops_when_the_clone_fails(tmp_path):
    results = tmp_path / "res"
    (results / "hpctl").mkdir(parents=True)
    repo = tmp_path / "repo"
    make_repo(repo, {"t.py": ""})  # no adapter/: update_adapter must refuse it at run time
    fake_python(tmp_path / "python", tmp_path / "rec")
    for git, message in [({"repo_url_or_path": str(tmp_path / "missing"), "entry_script": "t.py"}, "fatal"),
                         ({"repo_url_or_path": str(repo), "update_adapter": True}, "has no adapter/train.py")]:
        text = get_backend("local").render(local_spec(tmp_path, results, git, tmp_path / "python")).text
        proc = subprocess.run(["bash", "-c", text], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and message in proc.stderr
        assert "fetching the code (git.repo_url_or_path) failed" in proc.stderr
        assert not Path(f"{tmp_path / 'rec'}.argv").exists()
        assert {p.read_text() for p in (results / "hpctl").glob("exit.*")} == {"1\n"}


@pytest.mark.slow
def test_slurm_script_clones_once_on_the_batch_node_and_srun_runs_the_script(tmp_path):
    from test_slurm_render import make_spec, run_script
    pwn = tmp_path / "PWNED"
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"ex/it's a (test).py": "print()\n"})
    results = tmp_path / HOSTILE_DIR.format(pwn=pwn)
    spec = make_spec(str(results), **{"git.repo_url_or_path": f"file://{repo}", "git.branch": "main",
                                      "git.entry_script": "ex/it's a (test).py", "git.token": "t0ken"})
    text = get_backend("slurm").render(spec).text
    assert "t0ken" not in text
    proc, record = run_script(text, tmp_path, secrets={"HPCTL_SECRET_GIT_TOKEN": "t0ken"})
    assert proc.returncode == 0, proc.stderr
    assert not pwn.exists() and f"at {sha}" in proc.stdout
    assert "t0ken" not in (results / "code" / ".git" / "config").read_text()  # the helper is not stored
    argv = (tmp_path / "record.argv").read_bytes().decode().split("\0")[:-1]
    assert argv[-3:] == [f"{results}/code/ex/it's a (test).py", "--config", f"{results}/job_spec.json"]
    assert Path(argv[-3]).is_file()


@pytest.mark.slow
def test_kubernetes_init_container_clones_into_the_pods_code_volume(tmp_path):
    from test_k8s_render import make_spec
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"train.py": ""})
    results = tmp_path / "res"
    spec = make_spec({"volumes": [{"volumeName": "fsx", "hostPath": "/fsx", "mountPath": "/fsx"}]},
                     git={"repo_url_or_path": str(repo), "commit": sha, "entry_module": "train", "token": "t0ken"},
                     env_vars={"PYTHONPATH": "/extra"})
    spec.data["recipes"]["run"]["results_dir"] = str(results)
    artifact = get_backend("k8s").render(spec)
    config_map, job = parse_manifest(artifact.text)
    validate_all(config_map, job)
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    (init,) = pod["initContainers"]
    main = pod["containers"][0]
    assert init["image"] == main["image"] and init["env"] == main["env"]
    assert {"name": "hpctl-code", "emptyDir": {}} in pod["volumes"]
    for container in (init, main):  # the code volume is mounted last, over any volume holding the results
        assert container["volumeMounts"][-1] == {"name": "hpctl-code", "mountPath": f"{results}/code"}
    env = {e["name"]: e for e in main["env"]}
    assert env["PYTHONPATH"]["value"] == f"{results}/code:/extra"
    assert main["command"][-4:] == ["-m", "train", "--config", "/config/job_spec.json"]
    # Kubernetes turns $$ into $; then the pod's sh runs it.
    command = [c.replace("$$", "$") for c in init["command"]]
    assert command[:2] == ["sh", "-c"] and "t0ken" not in artifact.text
    (results / "code").mkdir(parents=True)  # the emptyDir mount point
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HPCTL_SECRET_GIT_TOKEN": "t0ken"})
    assert proc.returncode == 0, proc.stderr
    assert f"at {sha}" in proc.stdout and (results / "code" / "train.py").is_file()


# ---------------------------------------------------------------------------------------------
# End to end: hpctl apply of the example custom script, cloned from a repository, on CPU


@pytest.mark.slow
def test_apply_runs_the_example_script_cloned_at_a_commit(tmp_path):
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torch is not installed beside this interpreter")
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"train_tiny.py": (REPO / "examples" / "train_tiny.py").read_text()})
    commit_more(repo, "train_tiny.py", "raise SystemExit(7)\n")  # HEAD would fail: the pin must hold
    ws = tmp_path / "ws"
    ws.mkdir()
    args = ["tiny_llama", "--cluster", "local", "trainer.max_steps=3", f"git.repo_url_or_path={repo}",
            f"git.commit={sha}", "git.entry_script=train_tiny.py", "--workspace", str(ws), "--no-color"]

    def hpctl(*argv: str) -> str:
        r = subprocess.run([sys.executable, "-m", "hpctl", *argv], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        return r.stdout

    out = " ".join(hpctl("apply", *args, "--auto-approve").split())  # the summary table wraps long rows
    assert f"program script train_tiny.py from {repo} commit {sha}" in out
    logs = hpctl("logs", "tiny-llama", "-f", "--workspace", str(ws), "--no-color")
    assert f"hpctl: code from {repo} at {sha}" in logs and "train_tiny: finished at step 3" in logs
    deadline = time.monotonic() + 60
    while (st := json.loads(hpctl("status", "tiny-llama", "--json", "--workspace", str(ws)))["jobs"][0])["state"] \
            not in ("SUCCEEDED", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert st["state"] == "SUCCEEDED" and st["exit_code"] == 0
    results = ws / "results" / "tiny-llama"
    lines = [json.loads(x) for x in (results / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert all(m["z_loss"] > 0 and m["loss"] > 0 for m in lines)  # the custom loop's own metric
    assert (results / "checkpoints" / "sharded" / "step_00000003" / "COMMITTED").is_file()
