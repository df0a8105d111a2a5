"""A Plan is data: the validated spec, its checks, the rendered artifact and the change to state.

It can be printed (text via rich, or markdown for a pull request), dumped as JSON, saved to a
file and applied. Same inputs give byte-identical output: no clocks, no random ids, sorted keys.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adapter.devices import accelerator_of
from adapter.digest import canonical_json, digest
from adapter.llmft import as_v1
from adapter.modelsize import param_count
from adapter.secret import REDACTED, is_sensitive
from hpctl import checks as preflight
from hpctl import entry
from hpctl import custom_script, ft_launch, memory, model_arch
from hpctl.backends import get_backend
from hpctl.backends.base import Artifact
from hpctl.backends.common import check_no_secrets, job_tag, network_summary
from hpctl.diff import CREATE, DESTROY, NOOP, REPLACE, UPDATE, Change, diff
from hpctl.engines import engine_of, evaluation
from hpctl.errors import HpctlError, Origin
from hpctl.interpolate import env_reference
from hpctl.records import JobRecord, record_digest
from hpctl.spec import Spec
from hpctl.state import State, open_private
from hpctl.validate import validate

FORMAT_VERSION = 1


@dataclass
class Plan:
    job: str
    cluster: str
    backend: str
    recipe: str
    spec: dict[str, Any]  # redacted
    provenance: dict[str, list[dict]]
    artifact: Artifact
    change: Change
    summary: dict[str, Any]
    checks: list[dict[str, Any]]
    state_serial: int
    state_lineage: str
    inputs: dict[str, str]
    args: list[str] = field(default_factory=list)
    workspace: str = ""
    record_digest: str | None = None  # the job's record when planned (records.record_digest): staleness

    @classmethod
    def for_destroy(cls, record: JobRecord, state: State) -> "Plan":
        """The plan `hpctl destroy JOB` shows and applies: cancel if running, forget in state."""
        return cls(record.name, record.cluster, record.backend, "", record.spec, {},
                   Artifact.from_json(record.artifact), diff(record.name, record.spec, "", record, destroy=True),
                   {}, [], state.serial, state.lineage, {}, record_digest=record_digest(record))

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "job": self.job, "cluster": self.cluster, "backend": self.backend, "recipe": self.recipe,
            "summary": self.summary, "checks": self.checks,
            "changes": [self.change.to_json()],
            "counts": self.counts(),
            "spec": self.spec, "provenance": self.provenance,
            "artifact": self.artifact.to_json(),
            "state": {"serial": self.state_serial, "lineage": self.state_lineage},
            "inputs": self.inputs, "args": self.args, "workspace": self.workspace,
            "spec_digest": digest(self.spec), "record_digest": self.record_digest,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Plan":
        ch = d["changes"][0]
        from hpctl.diff import KeyChange
        change = Change(ch["action"], ch["job"], ch["reason"], [KeyChange(**k) for k in ch["keys"]],
                        ch["artifact_changed"])
        return cls(d["job"], d["cluster"], d["backend"], d["recipe"], d["spec"], d["provenance"],
                   Artifact.from_json(d["artifact"]), change, d["summary"], d["checks"],
                   d["state"]["serial"], d["state"]["lineage"], d["inputs"], d.get("args", []),
                   d.get("workspace", ""), d.get("record_digest"))

    def counts(self) -> dict[str, int]:
        a = self.change.action
        return {"add": int(a in (CREATE, REPLACE)), "change": int(a == UPDATE), "destroy": int(a in (DESTROY, REPLACE))}

    @property
    def has_changes(self) -> bool:
        return self.change.action != NOOP

    def save(self, path: Path) -> None:
        with open_private(path) as f:
            f.write(canonical_json(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Plan":
        try:
            doc = json.loads(path.read_text())
            if doc.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {doc.get('format_version')}")
            return cls.from_json(doc)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise HpctlError(f"not a saved hpctl plan: {e}", origin=Origin(str(path)),
                             hint="make one with `hpctl plan ... --out FILE`") from None


def summarize(spec: Spec, estimate: memory.MemoryEstimate | None, platform_network: bool = False) -> dict[str, Any]:
    """The plan's headline. v1 recipes keep the model under `model`; v2 LLMFT recipes keep it
    under `training_config` (model_config, training_args)."""
    r = spec.recipe
    trainer, model = r.get("trainer", {}), r.get("model", {})
    llmft = r.get("training_config") or {}
    args, model_config = llmft.get("training_args") or {}, llmft.get("model_config") or {}
    arch = model_arch.fields(spec.data)  # the checkpoint's architecture where known, else the recipe's
    params = param_count(arch) if arch.get("hidden_size") else None
    active = param_count(arch, active=True) if params else None
    strategy = ((args.get("strategy") or {}).get("fsdp_config") or {}).get("sharding_strategy")
    known = estimate is not None and estimate.known
    return {
        "model": model.get("model_type") or model_config.get("model_name_or_path")
        or ("custom program" if (r.get("run") or {}).get("model_type") == custom_script.MODEL_TYPE else None),
        "parameters": params,
        "active_parameters": active if active != params else None,
        "nodes": trainer.get("num_nodes"), "devices_per_node": trainer.get("devices"),
        "accelerator": accelerator_of(r),
        "tensor_parallel": model.get("tensor_model_parallel_degree", 1),
        "expert_parallel": model.get("expert_model_parallel_degree", 1),
        "context_parallel": model.get("context_parallel_degree", 1),
        "sharding": model.get("sharding_strategy") or (strategy.lower() if isinstance(strategy, str) else None),
        "shard_degree": model.get("shard_degree"),
        "precision": trainer.get("precision") or ((as_v1(r) or {}).get("trainer") or {}).get("precision"),
        "sequence_length": model.get("max_context_width") or args.get("max_len"),
        "max_steps": trainer.get("max_steps") or (f"{args['max_epochs']} epochs" if args.get("max_epochs") else None),
        "peft": (model.get("peft") or {}).get("peft_type") or (model_config.get("peft_config") or {}).get("peft_type"),
        "results_dir": r.get("run", {}).get("results_dir"),
        "entry": entry.summary(spec.data),
        "memory_gb_per_device": round(estimate.total_gb, 2) if known else None,
        "memory_fraction": round(estimate.fraction, 3) if known and estimate.fraction is not None else None,
        "network": network_summary(spec, platform_network),
        "tracking": tracking_destinations(spec),
        "notes": [*spec.notes, *filter(None, [model_arch.note(spec.data)])],
        "fault_tolerance": ft_launch.plan_summary(spec, preflight.world_size(spec)),
    }


def tracking_destinations(spec: Spec) -> list[str]:
    """Where the trainer will send metrics besides metrics.jsonl (MLflow, W&B), as the trainer's
    own config reads the recipe; a value it refuses is an error at its file:line."""
    from adapter.reader import ConfigError
    from adapter.tracking_keys import tracking
    try:
        found = tracking(spec.recipe)
    except ConfigError as exc:
        path = "recipes." + exc.key
        raise HpctlError(exc.message, origin=spec.origin(path), key=path, hint=exc.hint) from None
    return found.destinations() if found else []


def verify(spec: Spec) -> tuple[list[preflight.Check], Artifact]:
    """Everything plan checks, in plan's order: the schema, the pre-flight checks (the trainer's
    own config among them) and rendering. `hpctl validate` runs exactly this. Raises HpctlError
    with every located problem."""
    try:
        validate(spec)
    except HpctlError as schema:  # the trainer's verdict too, so one run shows every problem
        seen = {p.key for p in schema.problems}
        extra = [p for p in preflight.errors_as_problems(spec, preflight.check_trainer(spec, None))
                 if p.key not in seen]
        raise HpctlError(schema.problems + extra) from None
    results = preflight.run_checks(spec)
    problems = preflight.errors_as_problems(spec, results)
    if problems:
        raise HpctlError(problems)
    artifact = get_backend(spec.cluster_type).render(spec)
    check_no_secrets(spec, [artifact.text, *artifact.files.values()])
    return results, artifact


def build(spec: Spec, state: State, destroy: bool = False, args: list[str] | None = None,
          workspace: str = "") -> Plan:
    """Verify, render and diff against the job's record in state."""
    model_from = evaluation.resolve_model(spec, state)  # job:NAME -> that job's export, before anything reads it
    results, artifact = verify(spec)
    backend = get_backend(spec.cluster_type)
    public = spec.public_data()
    record = state.jobs.get(spec.job_name)
    change = diff(spec.job_name, public, artifact.text, record, destroy=destroy)
    estimate = preflight.memory_estimate(spec)
    summary = summarize(spec, estimate, backend.platform_network)
    # where the backend says the results land (a SageMaker job's are in S3, not at run.results_dir)
    summary["results_dir"] = artifact.results_dir or summary["results_dir"]
    engine = engine_of(spec.data)
    if engine:  # an engine states its own model, layout and memory (hpctl.engines)
        summary.update(engine.summary(spec, artifact, preflight.device_memory_gb(spec, None)[0]))
    if model_from:  # run.model_name_or_path: job:NAME, resolved above
        summary["evaluation"]["model_from"] = model_from
    # The tag apply gives the job; a workspace's first apply fixes the lineage it is made of.
    summary["tag"] = job_tag(state.lineage, spec.job_name, public).comment if state.lineage else None
    return Plan(spec.job_name, spec.cluster_name, backend.name, spec.recipe_name, public,
                spec.provenance_json(), artifact, change, summary,
                [asdict(c) for c in results], state.serial, state.lineage, spec.inputs,
                redact_args(args or []), workspace, record_digest(record))


def redact_args(args: list[str]) -> list[str]:
    """Command-line overrides as saved in a plan: values of sensitive keys never stored, except a
    bare ${oc.env:NAME} reference (it names a variable, not a value; the hint for secrets asks
    users to write one), which apply resolves again."""
    out = []
    for a in args:
        key, eq, value = a.partition("=")
        secret = eq and is_sensitive(key.lstrip("+~")) and env_reference(value) is None
        out.append(f"{key}={REDACTED}" if secret else a)
    return out
