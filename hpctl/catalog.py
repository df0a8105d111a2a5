"""The recipe catalog as tables: what `hpctl recipes list` and `hpctl recipes check` show.

`list` reads each recipe's own file (no merge or resolve), so listing stays fast; fields that are
interpolations show as unknown. `check` takes every recipe of a HyperPod checkout through the
whole plan pipeline for each cluster and says where and why one cannot run.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapter import evalspec
from adapter.config import DATA_PATHS
from adapter.keypath import get_path
from adapter.llmft import LLMFT_KEY, is_llmft
from adapter.modelsize import param_count
from adapter.numbers import whole
from hpctl import compat
from hpctl.backends import get_backend
from hpctl.checks import errors_as_problems, run_checks
from hpctl.compose import compose
from hpctl.engines import engine_of
from hpctl.errors import HpctlError
from hpctl.loader import load_file
from hpctl.validate import validate
from hpctl.workspace import Workspace


def kind(recipe: dict[str, Any]) -> str:
    if evalspec.is_evaluation(recipe):
        return "evaluation"
    model = recipe.get("model") or {}
    peft = (model.get("peft") or {}).get("peft_type")
    if peft:
        return str(peft)
    if (model.get("dpo") or {}).get("enabled"):
        return "dpo"
    return "fine-tune" if model.get("do_finetune") else "pretrain"


def describe(name: str, recipe: dict[str, Any]) -> dict[str, Any]:
    model = recipe.get("model") or {}
    trainer = recipe.get("trainer") or {}
    try:
        params = param_count(model) if all(whole(model.get(k)) for k in ("hidden_size", "num_hidden_layers")) else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        params = None
    human = "?" if not params else (f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.1f}M")
    nodes, devices = whole(trainer.get("num_nodes")), whole(trainer.get("devices"))
    return {"name": name, "family": model.get("model_type"), "params": params, "params_h": human,
            "type": kind(recipe), "nodes": nodes, "devices": devices,
            "layout": f"{nodes or '?'} x {devices or '?'}", "seq": whole(model.get("max_context_width"))}


def describe_all(ws: Workspace) -> list[dict[str, Any]]:
    rows = []
    for name, found in sorted(ws.recipes().items()):
        try:
            rows.append(describe(name, load_file(found.path, found.display).data))
        except HpctlError as e:
            rows.append({"name": name, "family": None, "params": None, "params_h": "?", "type": "unreadable",
                         "nodes": None, "devices": None, "layout": "?", "seq": None, "error": e.render()})
    return rows


CHECK_CLUSTERS = ("slurm", "k8s", "sm_jobs")
# Checks that say whether the program accepts the recipe (hpctl's trainer, or an engine's own rules such
# as verl's): a recipe failing only these is planned but not trainable.
TRAINER_CHECKS = ("trainer", "engine")
# A checkout without its own cluster file of that name is checked with this built-in cluster.
BUILTIN_FALLBACK = {"sm_jobs": "sagemaker"}


def cluster_overrides(overrides: Sequence[str], cluster: str) -> list[str]:
    """The overrides for one cluster: plain ones apply to all, `CLUSTER:key=value` to that one only
    (a SageMaker job needs a role and an S3 output path that other clusters have no key for)."""
    out = []
    for item in overrides:
        name, sep, rest = item.partition(":")
        if sep and name in CHECK_CLUSTERS and "=" not in name:
            if name == cluster:
                out.append(rest)
        else:
            out.append(item)
    return out

# Inputs a recipe leaves to its user (HyperPod ships them empty): the training data and, for a
# fine-tune, the base model. `recipes check` fills the empty ones with these stand-ins, since a
# job without them cannot start and only the user can name them (a user's own overrides win).
# The data keys are the trainer's (adapter.config.DATA_PATHS, and llmft.LLMFT_KEY for LLMFT recipes).
TRAIN, BASE_MODEL = DATA_PATHS["train"], "model.hf_model_name_or_path"
STAND_INS = {
    TRAIN: "/stand-in/data/train",
    BASE_MODEL: "/stand-in/base-model",
    LLMFT_KEY[TRAIN]: "/stand-in/data/train.jsonl",
    LLMFT_KEY[BASE_MODEL]: "/stand-in/base-model",
}

# verl recipes (hpctl.engines.verl): the training data verl reads
VERL_STAND_INS = {"training_config.data.train_files": "/stand-in/data/train.parquet"}
EVAL_MODEL = "run.model_name_or_path"  # an evaluation recipe's model (hpctl.engines.evaluation)


def stand_ins(recipe: dict[str, Any], overrides: Sequence[str] = (), cluster: str | None = None) -> list[str]:
    """HyperPod-form overrides filling the user inputs this recipe leaves empty or out (see
    STAND_INS): its own format's keys only, the base model only for a fine-tune, and nothing the
    given overrides already set."""
    if evalspec.is_evaluation(recipe):  # an evaluation recipe's one user input: the model it scores
        run = recipe.get("run") if isinstance(recipe.get("run"), dict) else {}
        given = any(o.lstrip("+~").split("=", 1)[0] in (EVAL_MODEL, f"recipes.{EVAL_MODEL}") for o in overrides)
        if run.get("model_name_or_path") or given:
            return []
        if cluster == "sm_jobs":  # a SageMaker job reads its model from an input channel
            return [f"++recipes.{EVAL_MODEL}=/opt/ml/input/data/model",
                    "++cluster.sm_jobs_config.inputs.s3.model=s3://stand-in/model"]
        return [f"++recipes.{EVAL_MODEL}=/stand-in/model"]
    llmft = is_llmft(recipe)
    model = recipe.get("model") if isinstance(recipe.get("model"), dict) else {}
    verl = engine_of(recipe) is not None
    out = []
    for key, value in (VERL_STAND_INS if verl else STAND_INS).items():
        if not verl and key.startswith("training_config.") != llmft:
            continue
        if key == BASE_MODEL and model.get("do_finetune") is not True:
            continue
        node = get_path(recipe, key)
        given = any(o.lstrip("+~").split("=", 1)[0] in (key, f"recipes.{key}") for o in overrides)
        if node in (None, "") and not given:
            out.append(f"++recipes.{key}={value}")
    return out


@dataclass
class RecipeCheck:
    """What `hpctl recipes check` found for one recipe of a HyperPod checkout."""

    name: str
    model_type: str | None = None
    supported: bool = False  # a recipe format hpctl runs (compat.SUPPORTED_MODEL_TYPES)
    parsed: bool = False
    valid: bool = False
    # Rendered for that cluster with every launcher check passing (the trainer's verdict aside).
    planned: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(CHECK_CLUSTERS, False))
    trainable: bool = False  # the trainer's config accepts it: `hpctl plan` passes only when this holds too
    family: str | None = None
    kind: str | None = None  # why not: a compat.Refusal kind, or unreadable, invalid, pre-flight, render, trainer
    reason: str | None = None  # the first cluster's reason (prefixed with it); not_planned has each cluster's
    location: str | None = None
    not_planned: dict[str, str] = field(default_factory=dict)  # cluster -> every "key: message" of why it did not plan

    @property
    def planned_everywhere(self) -> bool:
        return all(self.planned.values())


def check_collection(root: Path, overrides: Sequence[str] = ()) -> list[RecipeCheck]:
    """Every recipe under ROOT/recipes through hpctl's own pipeline, in-process: compose, validate,
    pre-flight checks and render, once per cluster in CHECK_CLUSTERS (ROOT's cluster/ files).

    A recipe whose own file already shows a training stack hpctl does not run is refused from that
    file alone: composing it would end in the same refusal, or earlier, at an interpolation
    resolver only HyperPod's launchers define."""
    ws = Workspace(root)
    base = root / "recipes"
    return [_check_one(ws, p.relative_to(base).with_suffix("").as_posix(), p, overrides)
            for p in sorted(base.rglob("*.yaml"))]


def _check_one(ws: Workspace, name: str, path: Path, overrides: Sequence[str]) -> RecipeCheck:
    row = RecipeCheck(name)
    display = f"recipes/{name}.yaml"
    try:
        layer = load_file(path, display)
    except HpctlError as e:
        return _failed(row, "unreadable", e)
    row.parsed = True
    run = layer.data.get("run")
    row.model_type = run.get("model_type") if isinstance(run, dict) and isinstance(run.get("model_type"), str) else None
    found = compat.refusal({"recipes": layer.data})
    row.supported = row.model_type in compat.SUPPORTED_MODEL_TYPES or (found is None and evalspec.is_evaluation(layer.data))
    if found:
        origin = layer.origins.get(found.key.removeprefix("recipes."))
        row.kind, row.reason, row.location = found.kind, found.reason, str(origin or display)
        return row
    validated, trainer_refusal, program = 0, None, "hpctl's trainer"
    for cluster in CHECK_CLUSTERS:
        stage = "invalid"
        try:
            file = cluster if cluster in ws.clusters() else BUILTIN_FALLBACK.get(cluster, cluster)
            given = cluster_overrides(overrides, cluster)
            spec = compose([f"recipes={name}", f"cluster={file}", *stand_ins(layer.data, given, cluster), *given], None, ws)
            validate(spec)
            validated += 1
            stage = "pre-flight"
            results = run_checks(spec)
            trainer = errors_as_problems(spec, [c for c in results if c.id in TRAINER_CHECKS])
            if trainer and trainer_refusal is None:
                trainer_refusal = HpctlError(trainer)
                program = "its engine" if any(c.id == "engine" and c.severity == "error" for c in results) \
                    else "hpctl's trainer"
            problems = errors_as_problems(spec, [c for c in results if c.id not in TRAINER_CHECKS])
            if problems:
                raise HpctlError(problems)
            stage = "render"
            get_backend(spec.cluster_type).render(spec)
        except HpctlError as e:
            row.not_planned[cluster] = "; ".join((f"{p.key}: " if p.key else "") + p.message for p in e.problems)
            if row.reason is None:
                _failed(row, stage, e, cluster)
            continue
        row.planned[cluster] = True
        row.family = row.family or compat.family(spec.data)[0]
    row.valid = validated == len(CHECK_CLUSTERS)
    row.trainable = row.valid and trainer_refusal is None
    if row.planned_everywhere and trainer_refusal is not None:
        _failed(row, "trainer", trainer_refusal)
        row.reason = f"not runnable by {program}: {row.reason}"
    return row


def _failed(row: RecipeCheck, kind: str, error: HpctlError, cluster: str | None = None) -> RecipeCheck:
    first = error.problems[0]
    row.kind, row.location = kind, str(first.origin) if first.origin else None
    row.reason = (f"{cluster}: " if cluster else "") + (f"{first.key}: " if first.key else "") + first.message
    return row


def check_summary(rows: list[RecipeCheck]) -> dict[str, Any]:
    """Counts for the summary line; `ok` is whether every supported recipe plans on every cluster
    and its trainer accepts it (what `hpctl plan` requires). `planned` counts recipes planned on
    every cluster; `planned_by_cluster` each cluster's, and `not_planned_by_cluster` why a
    supported recipe did not plan there (reason -> recipes), so a cluster that lacks an input
    (sm_jobs without a role) is told apart from recipes that cannot run. `refused` counts recipes
    not planned on every cluster; `refused_nowhere_planned` those no cluster planned."""
    refused = Counter(r.kind or "invalid" for r in rows if not r.planned_everywhere)
    nowhere = Counter(r.kind or "invalid" for r in rows if not any(r.planned.values()))
    why_not = {c: Counter(r.not_planned[c] for r in rows if r.supported and c in r.not_planned)
               for c in CHECK_CLUSTERS}
    return {
        "recipes": len(rows),
        "supported": sum(r.supported for r in rows),
        "planned": sum(r.planned_everywhere for r in rows),
        "planned_by_cluster": {c: sum(r.planned[c] for r in rows) for c in CHECK_CLUSTERS},
        "not_planned_by_cluster": {c: dict(n.most_common()) for c, n in why_not.items() if n},
        "refused": sum(refused.values()),
        "refused_by_kind": dict(sorted(refused.items())),
        "refused_nowhere_planned": sum(nowhere.values()),
        "refused_nowhere_planned_by_kind": dict(sorted(nowhere.items())),
        "trainable": sum(r.trainable for r in rows),
        "ok": all(r.planned_everywhere and r.trainable for r in rows if r.supported),
    }


def summary_line(s: dict[str, Any]) -> str:
    """One line for people. Where the clusters' counts differ, each is given with the most common
    reason a supported recipe did not plan there (what that cluster's inputs lack); "refused" then
    counts only the recipes no cluster planned, so a missing input is not read as a refusal."""
    by_cluster = s["planned_by_cluster"]
    refused, kinds = s["refused"], s["refused_by_kind"]
    if all(n == s["planned"] for n in by_cluster.values()):
        planned = f"{s['planned']} planned for {', '.join(CHECK_CLUSTERS[:-1])} and {CHECK_CLUSTERS[-1]}"
    else:
        whys = []
        for cluster, reasons in s["not_planned_by_cluster"].items():
            reason, n = next(iter(reasons.items()))
            others = len(reasons) - 1
            whys.append(f"{cluster}: {reason} ({n} recipes" + (f", {others} other reasons)" if others else ")"))
        planned = (f"planned: {', '.join(f'{c} {n}' for c, n in by_cluster.items())} "
                   f"({s['planned']} on every cluster; not planned on {'; '.join(whys)})")
        refused, kinds = s["refused_nowhere_planned"], s["refused_nowhere_planned_by_kind"]
    listed = ", ".join(f"{kind} {n}" for kind, n in kinds.items())
    return (f"{s['recipes']} recipes: {s['supported']} supported, {planned}, {refused} refused"
            + (f" ({listed})" if listed else "") + f"; {s['trainable']} runnable by their program (hpctl's trainer or their engine)")
