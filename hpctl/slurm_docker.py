"""HyperPod's `cluster.slurm_docker_cfg` on Slurm: refused where it would be ignored, naming pyxis's way.

HyperPod's launcher runs a Slurm job's container in one of two ways (`get_container_type` in its
launcher/nemo/stages.py): a `.sqsh` image through pyxis (`srun --container-image`), anything else
with Docker on each node (`launch_docker_container.sh`: ECR login, `docker run --gpus 8 --privileged
--net=host --ipc=host` with the EFA devices, `slurm_docker_cfg.docker_args`, then
`post_launch_commands` and `docker exec` of the training script). hpctl runs every image through
pyxis, which pulls a registry image itself (`--container-image=registry#image`), so a non-.sqsh
image runs too, but `docker run` arguments and commands run inside a long-lived container have no
place there.

hpctl does not emulate the Docker path: it needs an ECR login and privileged Docker on every node
(which a pyxis cluster does not have to have), a named container per node that two jobs on one node
would fight over, and an SSH daemon inside it for multi-node runs; pyxis gives the same image, GPUs,
EFA devices and host network without them. So a `slurm_docker_cfg` value that would do something
under HyperPod is refused at its line, with the pyxis equivalent, rather than carried in the spec
where nothing reads it. Empty values (HyperPod's cluster/slurm.yaml ships them empty) are fine.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpctl.checks import Check
    from hpctl.spec import Spec

KEY = "cluster.slurm_docker_cfg"
# docker run argument -> what does its job under pyxis
EQUIVALENTS = {
    "-v": "cluster.container_mounts (pyxis --container-mounts)",
    "--volume": "cluster.container_mounts (pyxis --container-mounts)",
    "--mount": "cluster.container_mounts (pyxis --container-mounts)",
    "-e": "env_vars",
    "--env": "env_vars",
    "--runtime": "nothing: pyxis gives the job its GPUs through enroot's NVIDIA hook",
    "--gpus": "nothing: pyxis gives the job its GPUs through enroot's NVIDIA hook",
    "-w": "nothing: the trainer runs in its results dir",
    "--workdir": "nothing: the trainer runs in its results dir",
}
GENERAL = ("cluster.container_mounts for volumes, env_vars for the environment, cluster.srun_args for "
           "srun's and pyxis's own options (--container-*)")


def _set(value: Any) -> list[str]:
    return [str(v) for v in value if v not in (None, "")] if isinstance(value, list) else \
        ([] if value in (None, "") else [str(value)])


def check(spec: "Spec") -> list["Check"]:
    """One error per slurm_docker_cfg key that HyperPod would apply and hpctl would ignore."""
    from hpctl.checks import ERROR, Check
    cfg = spec.get(KEY)
    if not isinstance(cfg, dict):  # the Slurm backend's preflight hook asks
        return []
    image = spec.get("container")
    how = (f"the image {image} is not a .sqsh, so HyperPod would run it with Docker on each node; hpctl runs it "
           "with pyxis, " if isinstance(image, str) and image and not image.endswith(".sqsh")
           else "hpctl runs the container with pyxis, ")
    out = []
    args = _set(cfg.get("docker_args"))
    if args:
        flags = [a.split("=", 1)[0].split()[0] for a in args if a.startswith("-")]
        known = sorted({f"{f} -> {EQUIVALENTS[f]}" for f in flags if f in EQUIVALENTS})
        out.append(Check("slurm-docker", ERROR, f"{KEY}.docker_args {args}: {how}which takes no docker run arguments",
                         [f"{KEY}.docker_args"], "use " + ("; ".join(known) + "; otherwise " if known else "") + GENERAL))
    commands = _set(cfg.get("post_launch_commands"))
    if commands:
        out.append(Check("slurm-docker", ERROR, f"{KEY}.post_launch_commands {commands}: {how}which starts the "
                         "container for the job's own processes only; there is no long-lived container to run "
                         "commands in first", [f"{KEY}.post_launch_commands"],
                         "bake them into the image, or run them before the job with cluster.setup (on the batch "
                         "host, outside the container)"))
    return out
