"""Experiment tracking: which recipe keys send metrics where, read without I/O.

`tracking` turns a recipe's MLflow / W&B keys into a TrackingConfig (adapter/tracking.py sends the
metrics); hpctl's plan asks it to show the destinations. Which key holds the W&B API key is the
secret rule's (adapter.secret.LLMFT_WANDB). Torch-free.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from adapter import llmft
from adapter.reader import ConfigError, Reader
from adapter.secret import LLMFT_WANDB, redact
from adapter.trainconfig import MlflowConfig, TrackingConfig, WandbConfig

WANDB_MODES = ("online", "offline", "disabled", "shared")
MLFLOW_SCHEMES = ("http", "https", "file", "databricks", "databricks-uc", "sqlite", "postgresql", "mysql", "mssql")
SAGEMAKER_MLFLOW_ARN = "arn:aws:sagemaker:"  # SageMaker managed MLflow (needs the sagemaker-mlflow plugin)
LLMFT_MLFLOW = "training_config.mlflow."


def tracking(recipe: Mapping[str, Any]) -> TrackingConfig | None:
    """MLflow and W&B as the recipe asks for them, or None. Read without I/O, so hpctl can ask
    at plan time. v1: exp_manager.create_mlflow_logger + mlflow_logger_kwargs (tracking_uri,
    experiment_name, run_name, run_id, tags, artifact_location) and create_wandb_logger +
    wandb_logger_kwargs (project, name, save_dir, mode, entity, group, tags, api_key). v2 LLMFT:
    training_config.mlflow (tracking_uri, run_id) and training_args.use_wandb. Any recipe:
    run.mlflow_tracking_uri, mlflow_experiment_name, mlflow_run_name (HyperPod's v2 layout).
    Experiment, project and run names default to run.name."""
    r = Reader(recipe)
    name = r.str("run.name") or "train"
    exp_key = llmft.TA + "training_dir" if llmft.is_llmft(recipe) else "exp_manager.exp_dir"
    exp_dir = r.str(exp_key) or r.str("run.results_dir") or "."
    mlflow, wandb = _mlflow(r, name, exp_dir), _wandb(r, name, exp_dir)
    if mlflow is None and wandb is None:
        return None
    return TrackingConfig(mlflow, wandb, params=flatten(redact(dict(recipe))))


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Mappings become dotted keys; lists and scalars become their JSON text (strings as they are)."""
    if isinstance(data, Mapping) and data:
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data if isinstance(data, str) else json.dumps(data)}


def _mlflow(r: Reader, name: str, exp_dir: str) -> MlflowConfig | None:
    kw = "exp_manager.mlflow_logger_kwargs."
    if r.bool("exp_manager.create_mlflow_logger", False):
        key, uri_key = "exp_manager.create_mlflow_logger", kw + "tracking_uri"
    elif r.str(LLMFT_MLFLOW + "tracking_uri"):
        key = uri_key = LLMFT_MLFLOW + "tracking_uri"
    elif r.str("run.mlflow_tracking_uri"):
        key = uri_key = "run.mlflow_tracking_uri"
    else:
        return None
    uri = r.str(uri_key)
    tags = r.raw(kw + "tags", {})
    if not isinstance(tags, Mapping) or any(isinstance(v, (Mapping, list)) for v in tags.values()):
        raise ConfigError(kw + "tags", f"expected a mapping of tag names to values, found {tags!r}")
    return MlflowConfig(
        key=key, tracking_uri=tracking_uri(uri_key, uri) if uri else None, local_store=f"{exp_dir}/mlruns",
        experiment=r.str(kw + "experiment_name") or r.str("run.mlflow_experiment_name") or name,
        run_name=r.str(kw + "run_name") or r.str("run.mlflow_run_name") or name,
        run_id=r.str(kw + "run_id") or r.str(LLMFT_MLFLOW + "run_id"),
        tags={str(k): str(v) for k, v in tags.items()},
        artifact_location=r.str(kw + "artifact_location"),
    )


def tracking_uri(key: str, uri: str) -> str:
    """A tracking URI MLflow can use, else ConfigError. Credentials never go in it: the URI is
    shown in plans and logs, so a password there is refused (MLFLOW_TRACKING_USERNAME/PASSWORD or
    MLFLOW_TRACKING_TOKEN in env_vars travel as secrets)."""
    import difflib
    from urllib.parse import urlsplit
    if uri.startswith(SAGEMAKER_MLFLOW_ARN):
        return uri
    parts = urlsplit(uri)
    if parts.password:
        raise ConfigError(key, "carries a password, which plans and logs would show",
                          "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
                          "in env_vars from ${oc.env:...}; hpctl passes them as secrets")
    scheme = parts.scheme.lower()
    if len(scheme) <= 1:  # a path (or a Windows drive letter): MLflow's local file store
        return uri
    if scheme.split("+")[0] not in MLFLOW_SCHEMES:
        close = difflib.get_close_matches(scheme, MLFLOW_SCHEMES, n=1)
        hint = (f"did you mean '{close[0]}://'?" if close else
                f"did you mean 'http://{uri}'?" if parts.path.isdigit() else
                "use http(s)://HOST:PORT, a directory, file:, databricks or a SageMaker MLflow ARN")
        raise ConfigError(key, f"{uri!r} is not a tracking URI MLflow knows (scheme {scheme!r})", hint)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(key, f"{uri!r} has a malformed port", "write http(s)://HOST:PORT") from None
    if scheme in ("http", "https") and not parts.hostname:
        raise ConfigError(key, f"{uri!r} names no host", "write http(s)://HOST:PORT")
    return uri


def _wandb(r: Reader, name: str, exp_dir: str) -> WandbConfig | None:
    kw = "exp_manager.wandb_logger_kwargs."
    if r.bool("exp_manager.create_wandb_logger", False):
        key = "exp_manager.create_wandb_logger"
        api_key_from = kw + "api_key" if r.raw(kw + "api_key") not in (None, "") else None
    elif r.raw(LLMFT_WANDB) not in (None, "", False):
        key = api_key_from = LLMFT_WANDB
    else:
        return None
    mode = r.str(kw + "mode")
    if mode is not None and mode.lower() not in WANDB_MODES:
        import difflib
        close = ["offline"] if mode.lower() == "dryrun" else difflib.get_close_matches(mode.lower(), WANDB_MODES, n=1)
        raise ConfigError(kw + "mode", f"{mode!r} is not a W&B mode",
                          f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(WANDB_MODES)}")
    tags = r.raw(kw + "tags", [])
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, (str, int, float)) for t in tags):
        raise ConfigError(kw + "tags", f"expected a list of tags, found {tags!r}")
    return WandbConfig(
        key=key, project=r.str(kw + "project") or name, name=r.str(kw + "name") or name,
        save_dir=r.str(kw + "save_dir") or exp_dir, mode=mode.lower() if mode else None,
        entity=r.str(kw + "entity"), group=r.str(kw + "group"), tags=tuple(str(t) for t in tags),
        api_key_from=api_key_from,
    )
