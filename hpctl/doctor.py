"""`hpctl doctor`: check that this machine can run jobs on the chosen cluster, with a fix for each gap.

Every check is a quick subprocess or file test with a short timeout, so doctor answers in seconds
even when a daemon hangs. torch is only ever imported in a child process (the job's python), never
into hpctl itself.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

TIMEOUT_S = 10


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _run(argv: list[str], timeout: float = TIMEOUT_S, **kw: Any) -> tuple[int | None, str]:
    """(exit status, stdout+stderr); status None when the program is missing or hangs."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except FileNotFoundError:
        return None, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return None, f"{' '.join(argv)}: no answer within {timeout:g} s"
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


# --------------------------------------------------------------------------------------------
# slurm


def slurm_checks(cluster_cfg: dict[str, Any]) -> list[Check]:
    sbatch = shutil.which("sbatch")
    checks = [Check("sbatch on PATH", sbatch is not None, sbatch or "not found",
                    "" if sbatch else "run hpctl on a Slurm login node, or install the Slurm client "
                    "(Debian: apt-get install slurm-client) and its slurm.conf")]
    if sbatch is None:
        return checks
    rc, out = _run(["sbatch", "--version"])
    checks.append(Check("Slurm version", rc == 0, _first_line(out),
                        "" if rc == 0 else "the Slurm client does not run; see its error"))
    rc, out = _run(["scontrol", "ping"])
    up = rc == 0 and "UP" in out
    checks.append(Check("slurmctld answers (scontrol ping)", up, _first_line(out) or out,
                        "" if up else "start slurmctld, or point SLURM_CONF at the cluster's slurm.conf"))
    rc, out = _run(["sinfo", "-h", "-o", "%P %a %D %T"])
    checks.append(Check("sinfo lists partitions", rc == 0 and bool(out), ", ".join(out.splitlines()[:4]) or out,
                        "" if rc == 0 and out else "the controller does not answer sinfo; check slurmctld's log"))
    partition = cluster_cfg.get("partition")
    if partition and rc == 0:
        names = {line.split()[0].rstrip("*") for line in out.splitlines() if line.strip()}
        checks.append(Check(f"partition {partition!r} exists", partition in names, ", ".join(sorted(names)),
                            "" if partition in names else f"set cluster.partition to one of: {', '.join(sorted(names))}"))
    checks.append(_munge_check())
    return checks


def _munge_check() -> Check:
    if shutil.which("munge") is None or shutil.which("unmunge") is None:
        return Check("munge answers", False, "munge/unmunge not found",
                     "install munge (Debian: apt-get install munge) unless the cluster uses another AuthType")
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=TIMEOUT_S)
        dec = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Check("munge answers", False, "munge did not answer", "restart munged")
    ok = cred.returncode == 0 and dec.returncode == 0
    detail = "credential encoded and decoded" if ok else (cred.stderr or dec.stderr).decode(errors="replace").strip()
    return Check("munge answers", ok, detail, "" if ok else "start munged as the munge user "
                 "(su -s /bin/sh munge -c /usr/sbin/munged) and check /etc/munge/munge.key")


# --------------------------------------------------------------------------------------------
# k8s


def _server_reachable(server: str, timeout: float = 2.0) -> tuple[bool, str]:
    url = urlparse(server)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False, f"cannot parse server {server!r}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} accepts connections"
    except OSError as exc:
        return False, f"{host}:{port}: {exc}"


def k8s_checks(cluster_cfg: dict[str, Any]) -> list[Check]:
    path = Path(os.path.expanduser(str(cluster_cfg.get("kubeconfig") or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
                                       or "~/.kube/config")))
    checks = [Check("kubeconfig exists", path.is_file(), str(path),
                    "" if path.is_file() else "set cluster.kubeconfig or KUBECONFIG, or copy the cluster's kubeconfig there")]
    has_pkg = importlib.util.find_spec("kubernetes") is not None
    checks.append(Check("kubernetes package importable", has_pkg, "kubernetes" if has_pkg else "not installed",
                        "" if has_pkg else "pip install 'hpctl[kubernetes]'"))
    if not path.is_file():
        return checks
    try:
        from ruamel.yaml import YAML

        config = YAML(typ="safe").load(path.read_text()) or {}
    except Exception as exc:  # a broken kubeconfig is a finding, not a crash
        checks.append(Check("kubeconfig parses", False, str(exc), "fix the YAML of the kubeconfig"))
        return checks
    context = cluster_cfg.get("context") or config.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or []}
    checks.append(Check("context set", bool(context) and context in contexts, str(context or "none"),
                        "" if context in contexts else
                        f"set cluster.context to one of: {', '.join(sorted(map(str, contexts))) or '(no contexts)'}"))
    if context in contexts:
        cluster_name = contexts[context].get("cluster")
        servers = {c.get("name"): (c.get("cluster") or {}).get("server") for c in config.get("clusters") or []}
        server = servers.get(cluster_name)
        if server:
            ok, detail = _server_reachable(server)
            checks.append(Check("API server reachable", ok, detail,
                                "" if ok else "check the VPN / network path to the API server"))
    return checks


# --------------------------------------------------------------------------------------------
# local

PROBE = ("import json, torch; print(json.dumps({'torch': torch.__version__, "
         "'cuda': torch.cuda.device_count() if torch.cuda.is_available() else 0}))")


def local_checks(cluster_cfg: dict[str, Any]) -> list[Check]:
    python = str(cluster_cfg.get("python") or sys.executable)
    rc, out = _run([python, "-c", PROBE], timeout=120)
    match = re.search(r"\{.*\}", out or "")
    ok = rc == 0 and match is not None
    checks = [Check("torch importable in the job's python", ok,
                    f"{python}: {match.group(0) if match else _first_line(out)}",
                    "" if ok else f"install torch into {python}, or set cluster.python to an interpreter that has it")]
    if ok:
        import json

        info = json.loads(match.group(0))
        checks.append(Check("GPUs visible", True, f"{info['cuda']} CUDA device(s)"
                            + ("" if info["cuda"] else "; jobs run on CPU (gloo)")))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    checks.append(Check("CPUs", True, f"{cpus} usable"))
    return checks


ALIASES = {"kubernetes": "k8s", "sagemaker": "sm_jobs"}  # doctor also takes the schedulers' own names


def reads_general_config(cluster_type: str) -> bool:
    """Whether the checks of this cluster type read the general config (Backend.reads_general_config:
    SageMaker's image may be its `container`); the others do not, so a broken config.yaml does not
    fail them."""
    from hpctl.backends import MODULES, get_backend
    ctype = ALIASES.get(cluster_type, cluster_type)
    return ctype in MODULES and get_backend(ctype).reads_general_config


def run_checks(cluster_type: str, cluster_cfg: dict[str, Any], general_cfg: dict[str, Any] | None = None) -> list[Check]:
    """All checks for one cluster type, in display order: its backend's `doctor` hook."""
    from hpctl.backends import MODULES, get_backend
    ctype = ALIASES.get(cluster_type, cluster_type)
    if ctype not in MODULES:
        return [Check("cluster type", False, f"unknown cluster type {cluster_type!r}",
                      f"use one of: {', '.join(sorted([*MODULES, *ALIASES]))}")]
    return get_backend(ctype).doctor(cluster_cfg or {}, general_cfg or {})
