"""Starting a Ray cluster for verl outside Kubernetes (Slurm, local): the ports and commands.

Ray's documented Slurm pattern (docs.ray.io, "Deploying on Slurm"): `ray start --head --block` on
the first node of the allocation, `ray start --address=HEAD:PORT --block` on each other node (each
one `srun` step), then the program on the head with RAY_ADDRESS set. `--block` keeps each node in
the foreground of its step, so ending the step (or the job) stops that node.

Every port a node opens is fixed here and shown in the plan: node i takes the block
`ray_port + 100*i ... + 99` (the GCS at the head's first port, then the node's own services, then
its workers' ports), so nodes that share a host (a test Slurm, a local run) never collide and a
firewall can be opened for exactly these. `cluster.ray_port` moves the whole range (default 6379).
"""
from __future__ import annotations

from dataclasses import dataclass

from hpctl.errors import HpctlError
from hpctl.spec import Spec

DEFAULT_PORT = 6379  # Ray's own default GCS port
BLOCK = 100  # ports per node
# service -> offset in a node's block
SERVICES = {"node-manager-port": 1, "object-manager-port": 2, "dashboard-agent-listen-port": 3,
            "dashboard-agent-grpc-port": 4, "metrics-export-port": 5, "runtime-env-agent-port": 6}
HEAD_SERVICES = {"ray-client-server-port": 7, "dashboard-port": 8}
WORKER_PORTS = (10, BLOCK - 1)  # first and last worker port offsets


@dataclass(frozen=True)
class Ports:
    base: int  # the GCS port, on the head

    def node(self, index: int) -> list[str]:
        """`ray start` options fixing every port node `index` (0: the head) opens."""
        start = self.base + BLOCK * index
        options = {**SERVICES, **(HEAD_SERVICES if index == 0 else {})}
        out = [f"--{name}={start + offset}" for name, offset in options.items()]
        return out + [f"--min-worker-port={start + WORKER_PORTS[0]}", f"--max-worker-port={start + WORKER_PORTS[1]}"]

    def describe(self, nodes: int) -> str:
        return f"GCS {self.base}; node i uses {self.base}+{BLOCK}i .. +{BLOCK - 1} (through {self.base + BLOCK * nodes - 1})"


def ports(spec: Spec, nodes: int) -> Ports:
    value = spec.get("cluster.ray_port")
    base = DEFAULT_PORT if value is None else value
    if isinstance(base, bool) or not isinstance(base, int) or not 1024 <= base <= 65535 - BLOCK * nodes:
        raise HpctlError("not a port range Ray can use", key="cluster.ray_port", found=repr(value),
                         expected=f"an integer in 1024..{65535 - BLOCK * nodes} ({BLOCK} ports per node)")
    return Ports(base)
