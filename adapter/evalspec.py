"""What an evaluation recipe asks lm-evaluation-harness to do: the one owner of those rules.

An evaluation recipe (HyperPod's `evaluation/open-source/open_source_deterministic_eval` layout,
and hpctl's own `recipes/evaluation/`) has `run.model_name_or_path` (a Hugging Face model
directory), an `evaluation` section (`task`, `strategy`, `metric`, `subtask`), generation
settings under `inference` and destinations under `output`. `hpctl plan` reads it through
`from_recipe` and checks the result against lm-eval's registry (`registry_info`); the job
(`adapter.evaluate`) reads it through the same function, so what the plan showed is what runs.

`evaluation.task` is one of:
- a name from HyperPod's table (`HYPERPOD_TASKS`): mapped, per strategy, to the lm-eval task or
  group that implements it; `subtask` narrows it (`mmlu` + `abstract_algebra` -> `mmlu_abstract_algebra`);
- an lm-eval task or group name (comma-separated for several);
- a directory of lm-eval task YAMLs (lm-eval's `--include_path`): every task and group defined
  there, or the ones `subtask` names. lm-eval runs from that directory, so a task's
  `data_files` may be relative to it.

Strategies: `zs` zero-shot; `zs_cot` zero-shot chain of thought: the task must generate text,
and `inference` gives the generation settings; `fs` few-shot with `evaluation.num_fewshot`
examples (default 5): the task must have a split to draw them from.

`metric` is an lm-eval metric name, `all`, or HyperPod's `accuracy` (lm-eval's `acc` for a
log-likelihood task, `exact_match` for a generation task).

Torch-free, and free of lm-eval except in `registry_info`, which imports only lm-eval's task
index (no torch), so hpctl can call everything here at plan time.
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any

from adapter.devices import read_accelerator
from adapter.reader import ConfigError, Reader
from adapter.tracking_keys import tracking_uri

EVALUATION = "evaluation"
JUDGE = "llm_as_judge"
STRATEGIES = ("zs", "zs_cot", "fs")
DEFAULT_FEWSHOT = 5
JOB_MODULE = "adapter.evaluate"  # what a job of an evaluation recipe runs (python -m), on every backend
EVAL_DIR = "eval"  # the results dir's subdirectory for lm-eval's files when output.eval_results_dir is empty
JOB_PREFIX = "job:"  # run.model_name_or_path naming a job in hpctl's state (hpctl resolves it at plan)
GENERATE = "generate_until"
REGISTRY_FORMAT = "1"  # bump when registry_info's data changes meaning (hpctl caches it)
RESULTS_FILE = "results.json"  # lm-eval's results dict, as its CLI writes it
SAMPLES_FILE = "samples_{task}.jsonl"  # one line per scored document (lm-eval's per-sample log)

# HyperPod task -> strategy -> lm-eval task or group. A strategy missing here is one HyperPod's
# task does not support in lm-eval. A subtask is appended to the name with `_`.
HYPERPOD_TASKS: dict[str, dict[str, str]] = {
    "mmlu": {"zs": "mmlu", "zs_cot": "mmlu_flan_cot_zeroshot", "fs": "mmlu"},
    "mmlu_pro": {"zs_cot": "mmlu_pro"},
    "bbh": {"zs_cot": "bbh_cot_zeroshot", "fs": "bbh_cot_fewshot"},
    "gpqa": {"zs": "gpqa_main_zeroshot", "zs_cot": "gpqa_main_cot_zeroshot", "fs": "gpqa_main_n_shot"},
    "math": {"zs_cot": "hendrycks_math", "fs": "minerva_math"},
    "ifeval": {"zs": "ifeval"},
}
# HyperPod's metric names -> lm-eval's, by whether the task generates text.
ACCURACY = {"accuracy": ("acc", "exact_match")}
JUDGE_REASON = ("LLM-as-judge evaluation needs a judge model endpoint (HyperPod calls Amazon Bedrock "
                "with run.judge_model_id) and the inference outputs to judge (run.inference_data_s3_path); "
                "lm-eval scores a model directly and hpctl does not call a judge service")
JUDGE_HINT = ("for scores hpctl computes, use an evaluation recipe (evaluation.task, strategy, metric) such as "
              "evaluation/open-source/open_source_deterministic_eval")


@dataclass(frozen=True)
class Generation:
    """lm-eval's gen_kwargs from `inference`."""

    max_gen_toks: int | None
    temperature: float
    top_p: float | None
    top_k: int | None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"do_sample": self.temperature > 0, "temperature": self.temperature}
        if self.max_gen_toks is not None:
            out["max_gen_toks"] = self.max_gen_toks
        if self.temperature > 0 and self.top_p is not None:
            out["top_p"] = self.top_p
        if self.temperature > 0 and self.top_k is not None and self.top_k > 0:
            out["top_k"] = self.top_k
        return out


@dataclass(frozen=True)
class EvalConfig:
    """An evaluation recipe as lm-eval's settings."""

    model: str
    subtask: str | None  # evaluation.subtask as written
    tasks: tuple[str, ...]  # lm-eval task or group names
    include_path: str | None  # a task directory (lm-eval runs from it)
    strategy: str
    num_fewshot: int
    metric: str  # as written: accuracy, all or an lm-eval metric
    generation: Generation | None  # zs_cot: the inference settings
    limit: int | None  # documents per task (hpctl's evaluation.limit), None: all
    accelerator: str  # trainer.accelerator as adapter.devices reads it: gpu, cpu or auto
    batch_size: int
    results_dir: str  # output.eval_results_dir (a directory or s3:// prefix), else <run.results_dir>/eval
    staging: str  # <run.results_dir>/eval: where the job writes what goes to S3, and an S3 model's copy
    tensorboard_dir: str | None
    mlflow: dict[str, str] = field(default_factory=dict)  # tracking_uri, experiment_name, run_id, run_name
    mapped_from: str | None = None  # the HyperPod task name, when the table mapped it

    def metric_names(self, output_type: str | None) -> tuple[str, ...] | None:
        """lm-eval metric names this recipe reports for a task of `output_type`; None: all."""
        return metric_names(self.metric, output_type)


def metric_names(metric: str, output_type: str | None) -> tuple[str, ...] | None:
    """The lm-eval metric names a recipe's `metric` selects for a task of `output_type` (None: all).
    HyperPod's `accuracy` is `acc` for a log-likelihood task and `exact_match` for a generation
    task; where the kind is not known (a group's aggregate row) it is whichever of the two is there."""
    if metric == "all":
        return None
    if metric in ACCURACY:
        ll, gen = ACCURACY[metric]
        return {GENERATE: (gen,), None: (ll, gen)}.get(output_type, (ll,))
    return (metric,)


def is_s3(path: str | None) -> bool:
    """Whether a model or results path is an S3 URI (the job copies it down or up with boto3)."""
    return bool(path) and str(path).startswith("s3://")


def is_evaluation(recipe: Any) -> bool:
    """Whether a recipe is an evaluation recipe (HyperPod's `evaluation` or `llm_as_judge` section)."""
    return isinstance(recipe, dict) and (EVALUATION in recipe or JUDGE in recipe)


def _bounded(r: Reader, key: str, maximum: float | None = None) -> float | None:
    """A number >= 0 (and <= maximum), read as the trainer reads numbers; None when unset."""
    value = r.float(key)
    if value is not None and not 0 <= value <= (maximum if maximum is not None else math.inf):
        bound = "" if maximum is None else f" and <= {maximum:g}"
        r.refuse(key, f"expected a number >= 0{bound}, found {value:g}")
        return None
    return value


def from_recipe(recipe: dict[str, Any]) -> EvalConfig:
    """The lm-eval settings of an evaluation recipe; InvalidConfig with every refusal, each at
    its key (relative to the recipe). Values are read through the trainer's `Reader`, so a value
    is typed, bounded and refused (an unresolved `${...}` included) exactly as a training recipe's."""
    if JUDGE in recipe:
        raise ConfigError(JUDGE, JUDGE_REASON, JUDGE_HINT)
    r = Reader(recipe)
    model = r.str("run.model_name_or_path")
    if model is None:
        r.refuse("run.model_name_or_path", "names no model to evaluate",
                 "give a Hugging Face model directory, or job:NAME for the model a training job in this "
                 "workspace exported")
    task = r.str("evaluation.task")
    if task is None:
        r.refuse("evaluation.task", "names no task", "an lm-eval task or group, a directory of task YAMLs, or "
                 "one of HyperPod's: " + ", ".join(sorted(HYPERPOD_TASKS)))
    strategy = r.str("evaluation.strategy") or "zs"
    if strategy not in STRATEGIES:
        close = difflib.get_close_matches(strategy, STRATEGIES, n=1)
        r.refuse("evaluation.strategy", f"{strategy!r} is not a strategy",
                 (f"did you mean {close[0]!r}? " if close else "") + "one of " + ", ".join(STRATEGIES))
    subtask = r.str("evaluation.subtask")
    metric = r.str("evaluation.metric") or "all"
    fewshot = r.int("evaluation.num_fewshot", minimum=0)
    if strategy in ("zs", "zs_cot") and fewshot:
        r.refuse("evaluation.num_fewshot", f"strategy {strategy} is zero-shot, found num_fewshot {fewshot}",
                 "use strategy: fs for few-shot")
    limit = r.int("evaluation.limit", minimum=1)
    batch = r.int("evaluation.batch_size", 1, minimum=1) or 1
    max_new = r.int("inference.max_new_tokens", minimum=1)
    temperature = _bounded(r, "inference.temperature") or 0.0
    top_p = _bounded(r, "inference.top_p", 1.0)
    top_k = r.int("inference.top_k", minimum=-1)  # -1: off (HyperPod's spelling)
    tasks, include, mapped = (), None, None
    if task is not None and strategy in STRATEGIES:
        tasks, include, mapped = r.guard(((), None, None), _tasks, task, strategy, subtask)
    staging = _default_results(r.str("run.results_dir"))
    results = r.str("output.eval_results_dir") or staging
    tensorboard = r.str("output.eval_tensorboard_results_dir")
    mlflow = {k: v for k in ("tracking_uri", "experiment_name", "run_id", "run_name")
              if (v := r.str(f"output.mlflow_{k}"))}
    if "tracking_uri" in mlflow:  # the trainer's rule: a URI MLflow knows, and never a password in it
        if r.guard(None, tracking_uri, "output.mlflow_tracking_uri", mlflow["tracking_uri"]) is None:
            del mlflow["tracking_uri"]
    accelerator = read_accelerator(r)
    r.check()
    assert model is not None  # refused above otherwise
    generation = Generation(max_new, temperature, top_p, top_k) if strategy == "zs_cot" else None
    return EvalConfig(model=model, subtask=subtask, tasks=tasks, include_path=include, strategy=strategy,
                      num_fewshot=(fewshot if fewshot is not None else DEFAULT_FEWSHOT) if strategy == "fs" else 0,
                      metric=metric, generation=generation, limit=limit, accelerator=accelerator,
                      batch_size=batch, results_dir=results, staging=staging,
                      tensorboard_dir=tensorboard, mlflow=mlflow, mapped_from=mapped)


def _default_results(results_dir: str | None) -> str:
    return f"{results_dir.rstrip('/')}/{EVAL_DIR}" if results_dir else EVAL_DIR


def _tasks(task: str, strategy: str, subtask: str | None) -> tuple[tuple[str, ...], str | None, str | None]:
    """(lm-eval names, include path, HyperPod name mapped from) for evaluation.task."""
    subtasks = tuple(s.strip() for s in subtask.split(",") if s.strip()) if subtask else ()
    if task.startswith("/") or task.startswith("./") or os.sep in task:
        if not os.path.isdir(task):
            raise ConfigError("evaluation.task", f"{task} is not a directory of task YAMLs",
                              "a task directory must exist where the plan is made and where the job runs")
        return subtasks, task, None
    if task in HYPERPOD_TASKS:
        by_strategy = HYPERPOD_TASKS[task]
        if strategy not in by_strategy:
            raise ConfigError("evaluation.strategy", f"HyperPod's task {task} does not support strategy {strategy} "
                              "in lm-eval", "use one of: " + ", ".join(by_strategy))
        base = by_strategy[strategy]
        return (tuple(f"{base}_{s}" for s in subtasks) or (base,)), None, task
    names = tuple(t.strip() for t in task.split(",") if t.strip())
    if subtasks:
        names = tuple(f"{n}_{s}" for n in names for s in subtasks)
    return names, None, None


# ---------------------------------------------------------------- lm-eval's registry, torch-free


def registry_info(include_path: str | None) -> dict[str, dict[str, Any]]:
    """Every task, group and tag lm-eval knows (its built-in ones, or only the directory's when
    `include_path` is set), as plain data: {name: {kind, output_type, metrics, fewshot, children}}.
    Imports lm-eval's task index only (YAML parsing, no torch, no datasets)."""
    from lm_eval.tasks import TaskManager  # noqa: PLC0415 - heavy: only when asked
    return registry_from(TaskManager(include_path=include_path, include_defaults=include_path is None))


def registry_from(manager: Any) -> dict[str, dict[str, Any]]:
    """registry_info's plain data from an lm-eval TaskManager."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in manager.task_index.items():
        cfg = entry.cfg or {}
        kind = entry.kind.name.lower()
        item: dict[str, Any] = {"kind": kind}
        if kind in ("task", "py_task"):
            item["output_type"] = cfg.get("output_type")
            item["metrics"] = sorted({m["metric"] for m in cfg.get("metric_list") or []
                                      if isinstance(m, dict) and isinstance(m.get("metric"), str)})
            item["fewshot"] = bool(cfg.get("fewshot_split") or cfg.get("training_split") or cfg.get("validation_split")
                                   or (cfg.get("fewshot_config") or {}).get("samples"))
        elif kind == "group":
            item["children"] = _children(cfg.get("task"))
        out[name] = item
    for name, entry in manager.task_index.items():  # tags: the tasks that carry them
        for tag in entry.tags:
            if tag in out and out[tag]["kind"] == "tag":
                out[tag].setdefault("children", []).append(name)
    return out


def _children(value: Any) -> list[str]:
    """The task, group and tag names a group's `task:` lists, inline sub-groups included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [name for item in value for name in _children(item)]
    if isinstance(value, dict):
        return _children(value.get("task"))
    return []


def leaves(name: str, registry: dict[str, dict[str, Any]], seen: frozenset[str] = frozenset()) -> list[str]:
    """The tasks a task, group or tag runs (a group's children, recursively)."""
    item = registry.get(name)
    if item is None or name in seen:
        return []
    if item["kind"] in ("task", "py_task"):
        return [name]
    return [leaf for child in item.get("children", []) for leaf in leaves(child, registry, seen | {name})]


def default_tasks(registry: dict[str, dict[str, Any]]) -> list[str]:
    """What a task directory runs when no subtask is named: its groups, and its tasks that no
    group there holds (so no task runs twice)."""
    grouped = {leaf for name, item in registry.items() if item["kind"] == "group" for leaf in leaves(name, registry)}
    return sorted(name for name, item in registry.items()
                  if item["kind"] == "group" or (item["kind"] in ("task", "py_task") and name not in grouped))


def score_rows(output: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """Each task's scores that the recipe's `metric` selects, from lm-eval's output (its `results`
    section, `{task: {"acc,none": v, "acc_stderr,none": e, "alias": ...}}`, and each task's
    `configs` for its output type): task, metric, filter, value, stderr."""
    configs = output.get("configs") or {}
    out = []
    for task, values in sorted((output.get("results") or {}).items()):
        config = configs.get(task)
        wanted = metric_names(metric, config.get("output_type") if isinstance(config, dict) else None)
        for name, value in sorted(values.items()):
            name_, comma, filt = name.partition(",")  # other keys (alias, sample_len) are not scores
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not comma or not number or name_.endswith("_stderr") or (wanted is not None and name_ not in wanted):
                continue
            stderr = values.get(f"{name_}_stderr,{filt}")
            out.append({"task": task, "metric": name_, "filter": filt or None, "value": value,
                        "stderr": stderr if isinstance(stderr, (int, float)) else None})
    return out
