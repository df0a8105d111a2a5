"""Evaluation jobs at plan time: lm-evaluation-harness on the model a recipe names.

The recipe's rules (task mapping, strategies, metric names, destinations) belong to the job's
own reader, `adapter.evalspec`; this module asks it, then checks the answer against the lm-eval
registry installed here (its task index is torch-free; the compact form is cached by lm-eval's
version and the task directory's content, since building it reads every task YAML), and says
what the plan shows: the model, each HyperPod task name with the lm-eval task it maps to, the
strategy's settings and where results go. `scores` reads the results the job wrote, for
`hpctl status`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapter import evalspec
from adapter.reader import ConfigError
from hpctl import cache
from hpctl.checks import ERROR, Check
from hpctl.errors import HpctlError
from hpctl.spec import Spec
from hpctl.suggest import did_you_mean

MODEL = "recipes.run.model_name_or_path"


@dataclass(frozen=True)
class Engine:
    """lm-eval as hpctl.engines' interface: a one-process job under the backend's usual launch."""

    name: str = "lm-eval"
    program: str = f"lm-eval (python -m {evalspec.JOB_MODULE})"
    ray: bool = False

    def checks(self, spec: Spec, host: Any) -> list[Check]:
        return check(spec, host)

    def summary(self, spec: Spec, artifact: Any, device_gb: float | None) -> dict[str, Any]:
        return {"evaluation": summary(spec, artifact.results_dir)}


def engine_of(spec_data: Any) -> Engine | None:
    """The lm-eval engine for a resolved spec (recipe under `recipes`) or a bare recipe, else None."""
    if not isinstance(spec_data, dict):
        return None
    recipe = spec_data.get("recipes") if isinstance(spec_data.get("recipes"), dict) else spec_data
    return Engine() if evalspec.is_evaluation(recipe) and evalspec.JUDGE not in recipe else None


def is_evaluation(spec_data: dict[str, Any]) -> bool:
    """Whether the spec's recipe is an evaluation recipe (the job runs lm-eval, not the trainer)."""
    return evalspec.is_evaluation(spec_data.get("recipes") if isinstance(spec_data, dict) else None)


def _problem(spec: Spec, error: ConfigError) -> Any:
    from hpctl.errors import Problem
    path = f"recipes.{error.key}"
    value = spec.get(path)
    hint = error.hint
    if error.key == "evaluation.strategy" and isinstance(value, str) and value not in evalspec.STRATEGIES:
        hint = did_you_mean(value, evalspec.STRATEGIES) or hint
    return Problem(error.message, spec.origin(path), path, found=repr(value) if value is not None else None, hint=hint)


def registry(include_path: str | None) -> dict[str, dict[str, Any]]:
    """lm-eval's tasks (evalspec.registry_info), from the cache when lm-eval and the task
    directory are unchanged. HpctlError when lm-eval is not installed."""
    from importlib import metadata
    try:
        version = metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        raise HpctlError("evaluation recipes need lm-eval (lm-evaluation-harness) where hpctl plans: its task "
                         "registry is what the plan checks the task against",
                         hint="pip install 'hpctl[evaluation]' (lm-eval==0.4.13)") from None
    key = cache.key("lm-eval-registry", version, evalspec.REGISTRY_FORMAT,
                    _directory_digest(include_path) if include_path else "")
    found = cache.get("lm-eval-registry", key)
    if isinstance(found, dict):
        return found
    info = evalspec.registry_info(include_path)
    cache.put("lm-eval-registry", key, info)
    return info


def _directory_digest(root: str) -> str:
    h = hashlib.sha256(root.encode())
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def check(spec: Spec, host: Any) -> list[Check]:
    """The plan's checks of an evaluation job: the recipe as the job reads it, and its tasks,
    strategy and metric against lm-eval's registry. (The model is resolve_model's.)"""
    if not is_evaluation(spec.data):
        return []
    try:
        cfg = evalspec.from_recipe(spec.recipe)
    except ConfigError as exc:
        return [Check("evaluation", ERROR, e.message, [f"recipes.{e.key}"], _problem(spec, e).hint)
                for e in exc.errors]
    found = [Check("evaluation", ERROR, e.message, [f"recipes.{e.key}"], e.hint)
             for e in check_registry(cfg, registry(cfg.include_path))]
    local = (spec.get("cluster.type") or spec.cluster_type) == "local"
    if local and cfg.accelerator == "gpu" and host is not None and host.gpu_count == 0:
        found.append(Check("evaluation", ERROR, "trainer.accelerator is gpu but this machine has no GPU (nvidia-smi "
                           "lists none)", ["recipes.trainer.accelerator"], "set trainer.accelerator: cpu"))
    if spec.cluster_type == "sm_jobs":  # its backend's preflight places the model and results (sagemaker_checks)
        return found
    for key, value in (("output.eval_results_dir", cfg.results_dir), ("output.eval_tensorboard_results_dir",
                                                                     cfg.tensorboard_dir)):
        if value and "://" in value and not evalspec.is_s3(value):
            found.append(Check("evaluation", ERROR, f"{value} is neither a file-system path nor an s3:// URI",
                               [f"recipes.{key}"], "give a directory the job's nodes mount, or an S3 prefix (the "
                               "job uploads with boto3 and the credentials of its environment)"))
    return found


def resolve_model(spec: Spec, state: Any) -> str | None:
    """`run.model_name_or_path: job:NAME` made that job's latest Hugging Face export (or the one its
    last step will write, while it has not finished), in the spec itself, so the plan shows and the
    job reads the path. For a local job the model directory must exist, unless it is the export of
    a job that is still to finish (chain it with `--after NAME`). Returns what the plan says about
    where the model comes from, or None."""
    if not is_evaluation(spec.data):
        return None
    value = spec.get(MODEL)
    if not isinstance(value, str):
        return None  # the recipe's own reader reports it
    note, pending = None, False
    if value.startswith(evalspec.JOB_PREFIX):
        name = value[len(evalspec.JOB_PREFIX):]
        record = state.jobs.get(name)
        if record is None:
            raise HpctlError(f"no job {name!r} in state to take the model from", origin=spec.origin(MODEL), key=MODEL,
                             found=value, hint=did_you_mean(name, state.jobs) or "apply the training job first")
        path, written = export_of(record.spec)
        if path is None:
            raise HpctlError(f"job {name} writes no Hugging Face export hpctl can find", origin=spec.origin(MODEL),
                             key=MODEL, found=value, hint="its recipe needs exp_manager.export_full_model.save_last: "
                             "true (hpctl's trainer writes checkpoints/full/step_N)")
        from hpctl.apply import backend_of
        status = record.status if written else backend_of(record).describe(record).state
        pending = not written and status not in ("SUCCEEDED", "FAILED", "CANCELLED")
        if not written and not pending:
            raise HpctlError(f"job {name} ended {status} without its export {path}", origin=spec.origin(MODEL),
                             key=MODEL, found=value, hint=f"see hpctl logs {name}")
        spec.data["recipes"]["run"]["model_name_or_path"] = path
        note = f"{value}: {'its latest export' if written else f'the export it writes when it finishes ({status})'}"
    model = spec.get(MODEL)
    local = (spec.get("cluster.type") or spec.cluster_type) == "local"
    if local and not pending and not evalspec.is_s3(model) and not Path(model, "config.json").is_file():
        raise HpctlError(f"{model} is not a Hugging Face model directory (no config.json)", origin=spec.origin(MODEL),
                         key=MODEL, found=model, hint="give a directory a training job exported "
                         "(checkpoints/full/step_N), or job:NAME for a job in this workspace's state")
    return note


def export_of(training: dict[str, Any]) -> tuple[str | None, bool]:
    """(the newest Hugging Face export of a training job's spec, whether it is on disk yet): the
    newest complete `full/step_N` under its checkpoint dir, else the one its last step writes."""
    recipe = training.get("recipes") or {}
    exp = recipe.get("exp_manager") or {}
    exp_dir = exp.get("exp_dir") or (recipe.get("run") or {}).get("results_dir")  # as adapter.config reads it
    root = exp.get("checkpoint_dir") or (f"{exp_dir}/checkpoints" if isinstance(exp_dir, str) else None)
    if not isinstance(root, str):
        return None, False
    full = Path(root) / "full"
    done = sorted(p for p in full.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")
                  and (p / "config.json").is_file())
    if done:
        return str(done[-1]), True
    steps = (recipe.get("trainer") or {}).get("max_steps")
    if (exp.get("export_full_model") or {}).get("save_last") and isinstance(steps, int):
        return str(full / f"step_{steps:08d}"), False
    return None, False


def check_registry(cfg: evalspec.EvalConfig, reg: dict[str, dict[str, Any]]) -> list[ConfigError]:
    """Every way the tasks, the strategy and the metric do not fit lm-eval's registry."""
    errors: list[ConfigError] = []
    names = cfg.tasks or tuple(evalspec.default_tasks(reg))
    if not names:
        return [ConfigError("evaluation.task", f"{cfg.include_path} defines no lm-eval task")]
    key = "evaluation.subtask" if cfg.subtask else "evaluation.task"  # where the failing names came from
    for name in names:
        if name not in reg:
            where = f"in {cfg.include_path}" if cfg.include_path else "in lm-eval's registry"
            mapped = f" (HyperPod's {cfg.mapped_from} with strategy {cfg.strategy})" if cfg.mapped_from else ""
            errors.append(ConfigError(key, f"no task or group {name!r}{mapped} {where}",
                                      did_you_mean(name, reg) or "`lm-eval ls tasks` lists them"))
            continue
        leaves = evalspec.leaves(name, reg)
        types = sorted({str(reg[leaf].get("output_type")) for leaf in leaves})
        if cfg.strategy == "zs_cot" and evalspec.GENERATE not in types:
            errors.append(ConfigError("evaluation.strategy", f"zs_cot (chain of thought) needs a task that generates "
                                      f"text; {name} is scored by log-likelihood ({', '.join(types)})",
                                      "use strategy zs or fs, or a generate_until task"))
        if cfg.strategy == "fs" and cfg.num_fewshot and not any(reg[leaf].get("fewshot") for leaf in leaves):
            errors.append(ConfigError("evaluation.strategy", f"few-shot needs examples to draw from; {name} has no "
                                      "fewshot, training or validation split", "use strategy zs"))
        if cfg.metric != "all":
            offered = sorted({m for leaf in leaves for m in reg[leaf].get("metrics", [])})
            wanted = {m for leaf in leaves for m in (cfg.metric_names(reg[leaf].get("output_type")) or ())}
            missing = sorted(wanted - set(offered))
            if offered and missing:
                errors.append(ConfigError("evaluation.metric", f"{name} does not report {', '.join(missing)}"
                                          + (f" (HyperPod's {cfg.metric})" if cfg.metric in evalspec.ACCURACY else ""),
                                          did_you_mean(cfg.metric, offered) or "it reports: " + ", ".join(offered)))
    return errors


def summary(spec: Spec, results_dir: str | None = None) -> dict[str, Any]:
    """The plan summary's `evaluation` entry: what lm-eval will run, and where results go
    (`results_dir`: where the backend says the job's results land, for SageMaker's S3 output)."""
    cfg = evalspec.from_recipe(spec.recipe)  # verified by `check` before the summary is made
    out: dict[str, Any] = {
        "model": cfg.model,
        "tasks": list(cfg.tasks) or f"every task in {cfg.include_path}",
        "strategy": cfg.strategy, "num_fewshot": cfg.num_fewshot, "metric": cfg.metric,
        "results_dir": cfg.results_dir,
    }
    if spec.cluster_type == "sm_jobs" and results_dir:  # adapter.sagemaker_launch puts them in the job's output
        out["results_dir"] = f"{results_dir}/output/output.tar.gz ({evalspec.EVAL_DIR}/)"
    if cfg.mapped_from:
        out["mapping"] = f"HyperPod {cfg.mapped_from} ({cfg.strategy}) -> lm-eval {', '.join(cfg.tasks)}"
    if cfg.include_path:
        out["include_path"] = cfg.include_path
    if cfg.generation:
        out["generation"] = cfg.generation.kwargs()
    if cfg.limit:
        out["limit"] = cfg.limit
    if cfg.mlflow:
        out["mlflow"] = {k: v for k, v in cfg.mlflow.items()}
    if cfg.tensorboard_dir:
        out["tensorboard"] = cfg.tensorboard_dir
    return out


def summary_rows(ev: dict[str, Any]) -> list[tuple[str, str]]:
    """The plan's text rows for an evaluation summary."""
    tasks = ev["tasks"] if isinstance(ev["tasks"], str) else ", ".join(ev["tasks"])
    shots = {"fs": f"{ev['num_fewshot']}-shot", "zs_cot": "zero-shot chain of thought"}.get(ev["strategy"], "zero-shot")
    rows = [("model", ev["model"] + (f" ({ev['model_from']})" if ev.get("model_from") else "")), ("tasks", tasks)]
    rows += [("mapping", ev["mapping"])] if ev.get("mapping") else []
    rows += [("task dir", ev["include_path"])] if ev.get("include_path") else []
    rows += [("strategy", f"{ev['strategy']} ({shots})"), ("metric", ev["metric"])]
    rows += [("generation", json.dumps(ev["generation"], sort_keys=True))] if ev.get("generation") else []
    rows += [("limit", f"{ev['limit']} documents per task")] if ev.get("limit") else []
    rows += [("eval results", ev["results_dir"])]
    rows += [("mlflow", json.dumps(ev["mlflow"], sort_keys=True))] if ev.get("mlflow") else []
    rows += [("tensorboard", ev["tensorboard"])] if ev.get("tensorboard") else []
    return rows


def scores(spec_data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Each task's metrics with their stderr from the results the job wrote, or None when the
    job has written none (yet) or is not an evaluation job."""
    if not is_evaluation(spec_data):
        return None
    try:
        cfg = evalspec.from_recipe(spec_data["recipes"])
        here = Path(cfg.staging, "results") if evalspec.is_s3(cfg.results_dir) else Path(cfg.results_dir)
        output = json.loads((here / evalspec.RESULTS_FILE).read_text())  # the job's own copy
        return evalspec.score_rows(output, cfg.metric) if isinstance(output.get("results"), dict) else None
    except (ConfigError, OSError, ValueError, KeyError, TypeError, AttributeError):  # not (yet) lm-eval's output
        return None


def scores_table(job: str, found: list[dict[str, Any]]) -> Any:
    """`hpctl status`'s table of an evaluation job's scores: task, metric, value ± stderr."""
    from rich.table import Table
    table = Table("task", "metric", "value", "± stderr", title=f"{job}: lm-eval scores")
    for row in found:
        metric = row["metric"] + (f" ({row['filter']})" if row["filter"] and row["filter"] != "none" else "")
        stderr = f"{row['stderr']:.4f}" if isinstance(row["stderr"], (int, float)) else "-"
        table.add_row(row["task"], metric, f"{row['value']:.4f}", stderr)
    return table
