"""verl on this machine: a single-node Ray cluster started for the job and stopped when it ends
(templates/local_ray.sh.j2), verl's entry point run against it. The launch script is the local
backend's usual one (started detached, exit code recorded, cancelled by its process group, which
stops Ray's `--block`ed head with it), so submit, status, logs and cancel are that backend's."""
from __future__ import annotations

import json
import shlex
import sys

from hpctl.backends.base import Artifact
from hpctl.backends.common import USER_ENV_PREFIXES, job_env, secret_vars
from hpctl.backends.ray_start import ports
from hpctl.devices import uses_gpus
from hpctl.engines import verl
from hpctl.entry import entry_point
from hpctl.spec import Spec
from hpctl.templating import render


def render_job(spec: Spec) -> Artifact:
    results = str(spec.get("recipes.run.results_dir"))
    engine = verl.engine_of(spec.data)
    assert engine is not None
    _, per_node = verl.world(spec)
    python = spec.get("cluster.python") or sys.executable
    config_dir = f"{results}/verl"
    layout = ports(spec, 1)
    secrets = secret_vars(spec)
    text = render("local_ray.sh.j2", job=spec.job_name, recipe=spec.recipe_name,
                  env=sorted(job_env(spec), key=lambda v: v.name),
                  secret_refs=sorted(v for v, p in secrets.items() if not p.startswith(USER_ENV_PREFIXES)),
                  verl_07=engine.version == "0.7", pythonpath=entry_point(spec, results).pythonpath,
                  python=python, gcs_port=layout.base, head_ports=layout.node(0),
                  gpus=per_node if uses_gpus(spec.data) else 0,
                  command=shlex.join(verl.entrypoint(spec, config_dir, python)), exit_dir=f"{results}/hpctl")
    return Artifact(
        kind="command", text=text, language="bash",
        files={f"{results}/job_spec.json": json.dumps(spec.public_data(), indent=2, sort_keys=True) + "\n",
               f"{config_dir}/{verl.CONFIG_FILE}": verl.config_text(spec),
               f"{results}/hpctl/launch.sh": text},
        env=secrets, logs={"stdout": f"{results}/logs/stdout.log"}, results_dir=results,
        meta={"ray_ports": layout.describe(1)})
