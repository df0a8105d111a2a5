"""Launching a job with `trainer.fault_tolerance` (replica groups under torchft), per backend.

The trainer's config (adapter/ft_config.py) owns what the section means and which layouts split
into groups; this module owns how each backend starts them:

  - the lighthouse, where every group reaches it (`python -m adapter.lighthouse`);
  - one torchrun per group with the group id and the lighthouse address in its environment
    (HPCTL_REPLICA_GROUP, TORCHFT_LIGHTHOUSE), each in its own restart loop, so one group's exit
    leaves the others running: a group that exits non-zero is started again alone, up to
    `max_restarts` times; the job exits non-zero when a group gave up (0 when every group finished);
  - the plan's line saying all this (`plan_summary`), and the refusals where a backend cannot
    (`check`: SageMaker; a Slurm or Kubernetes layout whose nodes do not split into the groups, by
    `split`; a backend's own in its Backend.preflight).

Local: the lighthouse and the group loops are background processes of the launch script.
Slurm: the lighthouse is its own `srun` step on the first node, each group an `srun` step (with
--kill-on-bad-exit=0, so a lost rank ends only its group's step) over its share of the nodes.
Kubernetes (hpctl.backends.kubernetes_ft): a Deployment and Service for the lighthouse, one
PyTorchJob per group whose failed pods the operator restarts (restartPolicy OnFailure, backoffLimit).
Torch-free: plan calls it.
"""
from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from adapter import ft_config
from adapter.ft_config import GROUP_ENV, LIGHTHOUSE_ENV
from adapter.reader import Reader
from adapter.trainconfig import FaultTolerance
from hpctl.entry import runs_adapter
from hpctl.spec import Spec

if TYPE_CHECKING:
    from hpctl.checks import Check, HostInfo

KEY = f"recipes.{ft_config.KEY}"
LOCAL_HOST = "127.0.0.1"
SLURM_HEAD = "${HPCTL_HEAD_ADDR:-$HPCTL_HEAD_NODE}"  # the batch script's address of the first node


def settings(spec: Spec) -> FaultTolerance | None:
    """The section as the trainer reads it (None: off). Its refusals are the trainer check's."""
    return ft_config.read(Reader(spec.recipe), None, None)  # type: ignore[arg-type]  # no layout rules here


def lighthouse_address(ft: FaultTolerance, host: str = LOCAL_HOST) -> str:
    return f"http://{host}:{ft.lighthouse_port}"


def backend_launch(spec: Spec, ft: FaultTolerance) -> tuple[str, str] | None:
    """(lighthouse address, who restarts a group) as the spec's backend launches the groups; None
    where it cannot (Backend.fault_tolerance, each backend's own answer)."""
    from hpctl.backends import MODULES, get_backend
    return get_backend(spec.cluster_type).fault_tolerance(spec, ft) if spec.cluster_type in MODULES else None


def split(ft: FaultTolerance, nodes: int, devices: int) -> tuple[int, int] | None:
    """(nodes per group, processes per node of a group): whole nodes per group when there are at
    least as many nodes as groups, else whole groups per node; None when neither divides."""
    n = ft.replica_groups
    if nodes >= n:
        return (nodes // n, devices) if nodes % n == 0 else None
    return (1, devices * nodes // n) if n % nodes == 0 else None


def plan_summary(spec: Spec, world: int) -> str | None:
    ft = settings(spec)
    where = backend_launch(spec, ft) if ft is not None else None
    return ft_config.summary(ft, world, *where) if ft is not None and where is not None else None


def check(spec: Spec, host: "HostInfo | None") -> list["Check"]:
    """Refusals of the launch, not of the trainer: where hpctl cannot start the groups."""
    from hpctl.checks import ERROR, Check
    ft = settings(spec)
    if ft is None:
        return []
    enabled = f"{KEY}.enabled"
    if not runs_adapter(spec.data):
        return [Check("fault-tolerance", ERROR, "fault tolerance is hpctl's trainer's (adapter.train): a custom "
                      "entry point runs another program, which would not join the replica groups", [enabled],
                      f"turn {enabled} off, or run the default program")]
    if backend_launch(spec, ft) is None:
        return [Check("fault-tolerance", ERROR, f"the {spec.cluster_type} backend does not launch replica groups: "
                      "it has no per-group restart (a SageMaker training job restarts all hosts together)",
                      [enabled], "use the local, slurm or k8s cluster, or turn fault tolerance off "
                      "(checkpoint-restart remains)")]
    nodes = int(spec.get("recipes.trainer.num_nodes") or 1)
    n = ft.replica_groups
    if split(ft, nodes, 1) is None:
        return [Check("fault-tolerance", ERROR, f"{n} replica groups do not split {nodes} nodes: each group "
                      "needs whole nodes, or each node whole groups", [f"{KEY}.replica_groups",
                                                                       "recipes.trainer.num_nodes"],
                      "choose replica_groups dividing num_nodes, or a multiple of it")]
    return []


def _group_loop(ft: FaultTolerance, launch: str, stop_file: str | None) -> list[str]:
    """The bash function that runs one group (`$1`) until it succeeds, restarting it alone; not
    after `stop_file` appears (a cancel)."""
    return [
        "hpctl_group() {",
        "  local g=$1 restarts=0 rc",
        "  while :; do",
        f"    rc=0; {launch} || rc=$?",
        '    if [ "$rc" -eq 0 ]; then echo "hpctl: replica group $g finished"; return 0; fi',
        *([f'    if [ -e {stop_file} ]; then return "$rc"; fi'] if stop_file else []),
        f'    if [ "$restarts" -ge {ft.max_restarts} ]; then',
        f'      echo "hpctl: replica group $g exited with code $rc and was restarted {ft.max_restarts} times: giving up"',
        '      return "$rc"',
        "    fi",
        "    restarts=$((restarts + 1))",
        f'    echo "hpctl: === replica group $g exited with code $rc; restarting it alone ($restarts of {ft.max_restarts}); '
        'the other groups keep training ==="',
        "  done",
        "}",
    ]


def lighthouse_argv(ft: FaultTolerance, python: str) -> list[str]:
    """`python -m adapter.lighthouse` with the section's port, quorum and heartbeat timeout: every
    backend starts the lighthouse with exactly this."""
    return [python, "-m", "adapter.lighthouse", f"--port={ft.lighthouse_port}", f"--min-replicas={ft.min_replicas}",
            f"--heartbeat-timeout-ms={round(ft.heartbeat_timeout_s * 1000)}"]


def _wait_groups(ft: FaultTolerance, lighthouse_stop: str) -> list[str]:
    starts = [f"hpctl_group {g} & hpctl_groups+=($!)" for g in range(ft.replica_groups)]
    return [
        "hpctl_groups=()",
        *starts,
        "hpctl_rc=0",
        'for pid in "${hpctl_groups[@]}"; do',
        '  rc=0; wait "$pid" || rc=$?',
        '  if [ "$hpctl_rc" -eq 0 ]; then hpctl_rc=$rc; fi',
        "done",
        lighthouse_stop,
    ]


def local_command(ft: FaultTolerance, python: str, group_argv: list[str], exit_dir: str) -> str:
    """The local launch script's command: the lighthouse, then one restart loop per group running
    `group_argv` (torchrun with one group's processes); its status is the job's exit code."""
    lighthouse = shlex.join(lighthouse_argv(ft, python))
    env = f"{GROUP_ENV}=\"$1\" {LIGHTHOUSE_ENV}={lighthouse_address(ft)}"
    stop = shlex.quote(exit_dir) + "/cancelled.$$"  # hpctl cancel's marker: no restart after a cancel
    lines = [
        f"# Fault tolerance: {ft.replica_groups} replica groups (torchft) and their lighthouse; each group",
        "# restarts alone, so one group's exit leaves the others training.",
        f"{lighthouse} &",
        "hpctl_lighthouse=$!",
        *_group_loop(ft, f"{env} {shlex.join(group_argv)}", stop),
        *_wait_groups(ft, 'kill "$hpctl_lighthouse" 2>/dev/null; wait "$hpctl_lighthouse"'),
        '(exit "$hpctl_rc")',
    ]
    return "\n".join(lines)


def slurm_block(ft: FaultTolerance, nodes: int, devices: int, python: str, step_args: list[str],
                torchrun_tail: list[str]) -> str:
    """The batch script's launch under fault tolerance: the lighthouse as its own srun step on the
    first node, then one srun step per group over its nodes (or its share of one node), each in a
    restart loop. `step_args` are the srun options every step takes (container, cluster
    srun_args); `torchrun_tail` is torchrun's tee option, program and --config."""
    n = ft.replica_groups
    shares = split(ft, nodes, devices)
    assert shares is not None, "check() refuses a layout that does not split"
    group_nodes, per_node = shares
    first = f"$(( $1 * {group_nodes} ))" if nodes >= n else f"$(( $1 / {n // nodes} ))"
    step = ["srun", "--overlap", "--kill-on-bad-exit=0", *step_args]
    lighthouse = [*step, "--nodes=1", "--ntasks=1", "--relative=0", *lighthouse_argv(ft, python)]
    group = (f"{GROUP_ENV}=\"$1\" {LIGHTHOUSE_ENV}=\"http://{SLURM_HEAD}:{ft.lighthouse_port}\" "
             f"{shlex.join(step)} --nodes={group_nodes} --ntasks={group_nodes} --ntasks-per-node=1 "
             f"--relative=\"{first}\" "
             f"{shlex.quote(python)} -m torch.distributed.run --nnodes={group_nodes} --nproc-per-node={per_node} "
             "--rdzv-backend=c10d "
             f"--rdzv-endpoint=\"$(hpctl_node_addr \"{first}\"):$((HPCTL_RDZV_PORT + 1 + $1))\" "
             "--rdzv-id=\"${SLURM_JOB_ID}_group$1\" --log-dir=\"$HPCTL_LOG_DIR/torchrun/group$1\" "
             + " ".join(torchrun_tail))
    lines = [
        f"# Fault tolerance: {n} replica groups (torchft). The lighthouse is its own step on the first node;",
        "# each group is an srun step with --kill-on-bad-exit=0 in its own restart loop, so one group's",
        "# exit leaves the others training.",
        "hpctl_node_addr() {",
        '  local node; node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n "$(( $1 + 1 ))p")"',
        '  scontrol show node "$node" --oneliner | sed -n \'s/.* NodeAddr=\\([^ ]*\\).*/\\1/p\' | grep . || echo "$node"',
        "}",
        f"{shlex.join(lighthouse)} &",
        "hpctl_lighthouse=$!",
        *_group_loop(ft, group, None),  # scancel ends the batch script and its loops with it
        *_wait_groups(ft, 'kill "$hpctl_lighthouse" 2>/dev/null || true; wait "$hpctl_lighthouse" || true'),
    ]
    return "\n".join(lines)


def status_note(metrics: dict) -> str:
    """What `hpctl status` adds to a fault-tolerant job's state: live groups and recoveries so far."""
    if "live_groups" not in metrics:
        return ""
    r = metrics.get("recoveries", 0)
    return (f", {metrics['live_groups']}/{metrics.get('replica_groups', '?')} groups live, "
            f"{r} recover{'y' if r == 1 else 'ies'}")  # no square brackets: the table reads them as markup
