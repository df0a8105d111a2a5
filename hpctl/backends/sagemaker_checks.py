"""The checks only a SageMaker job needs: at plan time (its input channels against the recipe's data
paths) and in `hpctl doctor` (boto3, credentials, region, the role's and the image's form).

The SageMaker backend runs them through the Backend hooks (`preflight`, `doctor`), so hpctl's
general checks and doctor never import this backend.
"""
from __future__ import annotations

import importlib.util
import re
from typing import Any

from adapter import evalspec
from adapter.config import data_paths
from adapter.reader import ConfigError
from adapter.sagemaker import CHANNELS, container_path
from hpctl.backends.sagemaker import data_channels, field_problems, training_image
from hpctl.checks import ERROR, WARNING, Check
from hpctl.doctor import TIMEOUT_S
from hpctl.doctor import Check as DoctorCheck
from hpctl.entry import runs_adapter
from hpctl.spec import Spec


def data_channel_checks(spec: Spec) -> list[Check]:
    """A SageMaker job with input channels whose recipe reads its data from elsewhere: the trainer
    would not find the channels' data. A warning, not an error: the path may be in the image, and
    `hpctl recipes check` fills stand-in paths."""
    if not runs_adapter(spec.data):
        return []
    channels = data_channels(spec)
    if not channels:
        return []
    root = container_path(CHANNELS) + "/"
    found = []
    for role, (key, value) in data_paths(spec.recipe).items():
        if value.startswith(root):
            continue
        path = f"recipes.{key}"
        meant = _likely_channel(role, value, channels)
        found.append(Check("data-channels", WARNING,
                           f"{path} is {value} (set at {spec.origin(path) or 'default'}), outside {root}, where "
                           f"the job's input channels are ({', '.join(sorted(channels))}): the trainer reads its data "
                           "there, not from the channels"
                           + (f"; did you mean {meant}?" if meant else ""), [path]))
    return found


def evaluation_checks(spec: Spec) -> list[Check]:
    """A SageMaker job reads its model from an input channel and writes its results into the job's
    output (lm-eval's files under eval/ of output.tar.gz at the output path) and TensorBoard to
    the request's TensorBoardOutputConfig, as adapter.sagemaker_launch places them."""
    if not evalspec.is_evaluation(spec.recipe):
        return []
    try:
        cfg = evalspec.from_recipe(spec.recipe)
    except ConfigError:
        return []  # hpctl.engines.evaluation reports the recipe's own refusals
    found = []
    output = spec.get("cluster.sm_jobs_config.output_path") or ""
    given = spec.get("recipes.output.eval_results_dir")
    if given and not (output and str(given).rstrip("/").startswith(str(output).rstrip("/"))):
        found.append(Check("evaluation", ERROR, f"on SageMaker lm-eval's results go into the job's output (eval/ in "
                           f"output.tar.gz under {output or 'cluster.sm_jobs_config.output_path'}), not {given}",
                           ["recipes.output.eval_results_dir"], "leave it empty, or name a prefix of that output path"))
    tensorboard = spec.get("cluster.sm_jobs_config.tensorboard_config.output_path")
    if cfg.tensorboard_dir and cfg.tensorboard_dir != tensorboard:
        found.append(Check("evaluation", ERROR, "on SageMaker TensorBoard files go to the job's TensorBoardOutputConfig "
                           f"({tensorboard or 'none configured'}), not {cfg.tensorboard_dir}",
                           ["recipes.output.eval_tensorboard_results_dir"],
                           "set cluster.sm_jobs_config.tensorboard_config (output_path, container_logs_path) and give "
                           "the same output_path here"))
    channels = data_channels(spec)
    if not any(cfg.model == where or cfg.model.startswith(where + "/") for where, _ in channels.values()):
        found.append(Check("evaluation", ERROR, f"a SageMaker job reads its model from an input channel; {cfg.model} "
                           "is in none (" + (", ".join(w for w, _ in channels.values()) or "the job has none") + ")",
                           ["recipes.run.model_name_or_path"], "add the model's S3 URI as a channel "
                           "(cluster.sm_jobs_config.inputs.s3.<name>) and give its container path, "
                           "/opt/ml/input/data/<name>"))
    return found


def _likely_channel(role: str, value: str, channels: dict[str, tuple[str, str]]) -> str | None:
    """The container path a data path most likely meant: the same place inside a channel that holds
    it (its S3 URI or file-system directory), else the channel named for its role (train, val) or
    its last part, else for training data the only channel."""
    for where, held in channels.values():
        held = held.rstrip("/")
        if held and (value == held or value.startswith(held + "/")):
            return where + value[len(held):]
    base = value.rstrip("/").rsplit("/", 1)[-1]
    for name in sorted(channels):
        if name in (role, base) or name.startswith(role):
            return channels[name][0]
    return next(iter(channels.values()))[0] if len(channels) == 1 and role == "train" else None


ECR_IMAGE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+(:[\w.-]+|@sha256:[0-9a-f]{64})?$")


def doctor_checks(cluster_cfg: dict[str, Any], general_cfg: dict[str, Any] | None = None) -> list[DoctorCheck]:
    """boto3, credentials (and whose: STS), region, the role's form (botocore's RoleArn rule, through
    the backend's request check) and the image's form (an ECR URI in the job's region). The image is
    the one the request would name, which may be the general config's `container` (the backend decides)."""
    has_pkg = importlib.util.find_spec("boto3") is not None
    checks = [DoctorCheck("boto3 importable", has_pkg, "boto3" if has_pkg else "not installed",
                    "" if has_pkg else "pip install 'hpctl[sagemaker]'")]
    role = cluster_cfg.get("role_arn")
    image, image_key = training_image({**(general_cfg or {}), "cluster": cluster_cfg})
    problems = field_problems("RoleArn", role) if role else ["not set"]
    checks.append(DoctorCheck("role_arn form", not problems, str(role or "") + (f": {problems[0]}" if problems else ""),
                        "" if not problems else "set cluster.role_arn=arn:aws:iam::<account>:role/<name>, a role "
                        "SageMaker can assume (trust policy: sagemaker.amazonaws.com)"))
    if not has_pkg:
        return checks
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    session = boto3.session.Session(region_name=cluster_cfg.get("region") or None)
    region = session.region_name
    checks.append(DoctorCheck("region", bool(region), region or "none",
                        "" if region else "set cluster.region, or AWS_REGION / AWS_DEFAULT_REGION"))
    match = ECR_IMAGE.match(str(image or ""))
    same = bool(match) and (not region or match.group(2) == region)
    checks.append(DoctorCheck("image is an ECR URI in the job's region", same,
                        f"{image} (from {image_key})" if image else "not set (cluster.image, or the general config's container)",
                        "" if same else f"push the image to ECR in {region or 'the job region'} and set {image_key} "
                        "to <account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>"))
    credentials = session.get_credentials()
    checks.append(DoctorCheck("AWS credentials found", credentials is not None,
                        f"from {credentials.method}" if credentials else "none in boto3's chain",
                        "" if credentials else "set AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run "
                        "`aws configure` / `aws sso login`"))
    if credentials is None or not region:
        return checks
    try:
        sts = session.client("sts", config=Config(connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S,
                                                  retries={"max_attempts": 1}))
        who = sts.get_caller_identity()
        checks.append(DoctorCheck("credentials accepted (sts get-caller-identity)", True,
                            f"account {who.get('Account')}, {who.get('Arn')}"))
    except (BotoCoreError, ClientError) as exc:
        checks.append(DoctorCheck("credentials accepted (sts get-caller-identity)", False, str(exc).splitlines()[0],
                            "refresh or replace the credentials (expired session? `aws sso login`)"))
    return checks
