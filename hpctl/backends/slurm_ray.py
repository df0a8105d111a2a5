"""verl on Slurm: a batch script that starts a Ray cluster across the allocation and runs verl's
entry point on its head (templates/slurm_ray.sbatch.j2, hpctl.backends.ray_start).

HyperPod's launcher refuses verl on Slurm; hpctl runs it with Ray's documented Slurm pattern. The
script is a Slurm batch job like any other hpctl writes (the same directives, environment, exit
marker and log files), so submit, status, logs and cancel are the Slurm backend's own.
"""
from __future__ import annotations

from hpctl.backends import slurm
from hpctl.backends.base import Artifact
from hpctl.backends.common import positive_int, secret_vars
from hpctl.backends.ray_start import ports
from hpctl.devices import uses_gpus
from hpctl.engines import verl
from hpctl.entry import entry_point
from hpctl.spec import Spec
from hpctl.templating import render, shquote, tojson

TEMPLATE = "slurm_ray.sbatch.j2"


def render_job(spec: Spec) -> Artifact:
    results_dir = slurm._results_dir(spec)
    cluster = spec.cluster
    workdir = slurm._workdir(spec)
    engine = verl.engine_of(spec.data)
    assert engine is not None
    nodes, per_node = verl.world(spec)
    planned = positive_int(spec, "recipes.trainer.num_nodes", 1)
    layout = ports(spec, max(nodes, planned))
    env = secret_vars(spec)
    python = cluster.get("python") or "python3"
    text = render(
        TEMPLATE,
        directives=slurm._directives(spec, results_dir, workdir, {"enabled": False}),
        results_dir=results_dir,
        secret_checks=[f'"${{{var}:?is not set: hpctl passes it at submit time}}"' for var in env],
        exports=slurm._exports(spec),
        spec_json=tojson(spec.public_data(), indent=2),
        verl_config=verl.config_text(spec), config_file=verl.CONFIG_FILE, verl_07=engine.version == "0.7",
        setup=[str(c) for c in cluster.get("setup") or [] if c not in (None, "")],
        pythonpath=entry_point(spec, results_dir).pythonpath,
        container_args=slurm.container_args(spec, results_dir, workdir),
        srun_args=[str(a) for a in cluster.get("srun_args") or [] if a is not None],
        python=python, gpus=per_node if uses_gpus(spec.data) else 0,
        nodes=planned, gcs_port=layout.base, head_ports=layout.node(0),
        worker_ports=[layout.node(i) for i in range(1, planned)],
        command=[shquote(a) for a in verl.entrypoint(spec, '"$HPCTL_VERL_DIR"', python)],
    )
    text = text.replace(shquote('"$HPCTL_VERL_DIR"'), '"$HPCTL_VERL_DIR"')  # the directory is the script's variable
    logs_dir = f"{results_dir}/logs"
    logs = {"stdout": f"{logs_dir}/%j.out", "ray": "/tmp/hpctl-ray-%j/session_latest/logs (on each node)"}
    if cluster.get("stderr_to_stdout") is False:
        logs["stderr"] = f"{logs_dir}/%j.err"
    return Artifact(kind="sbatch", text=text, language="bash",
                    files={slurm.script_path(results_dir, spec.job_name): text},
                    env=env, logs=logs, results_dir=results_dir,
                    meta={"ray_ports": layout.describe(planned)},
                    submit=cluster.get("slurm_create_submission_file_only") is not True)
