"""The SageMaker backend: one CreateTrainingJob request, shown by plan exactly as apply sends it.

HyperPod's launcher hands a recipe to the SageMaker Python SDK, which builds the API request out
of sight. Here `render` builds the request itself (pure: the same spec gives the same bytes) and
checks it against botocore's own model of the SageMaker API (`request_problems`), so a value the
API would refuse is a plan error at the file and line that set it.

What the request holds, and where it comes from:

- TrainingJobName: the run name, made a valid SageMaker name, plus 8 hex digits of the spec's
  digest. Deterministic (no clock, no random suffix), and a changed spec gets a new name, since
  SageMaker never reuses one; applying an unchanged spec again is refused as "already in use".
- AlgorithmSpecification: `image` (else the general config's `container`), File input mode, and
  the container command `python3 -m adapter.sagemaker_launch ...` (see that module).
- ResourceConfig: the general config's `instance_type` in SageMaker's `ml.` spelling
  (hpctl.instances), InstanceCount = trainer.num_nodes, the volume size.
- InputDataConfig: the `hpctl` channel (the resolved spec, uploaded by apply to
  <output_path>/<job>/input/hpctl/job_spec.json, shown in the plan as the artifact's file), then
  the S3 channels (null ones dropped) or the one file-system channel.
- OutputDataConfig, CheckpointConfig (<checkpoint_s3_uri> <-> /opt/ml/checkpoints),
  TensorBoardOutputConfig, StoppingCondition (max_run, else run.time_limit, else 24 h),
  Environment (env_vars and cluster.env; secrets are refused: SageMaker stores the environment in
  clear), RetryStrategy (auto_resume), VpcConfig and the rest of the estimator arguments
  (ESTIMATOR_KWARGS), Tags.

boto3 is imported only by submit, describe, logs and cancel; render needs only botocore's model
loader. Credentials and region come from boto3's usual chain (cluster.region first); the
endpoint from AWS_ENDPOINT_URL when set (the tests point it at moto).
"""
from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from adapter import sagemaker as container
from adapter.digest import digest
from adapter.keypath import get_path, join
from adapter.reader import Reader
from adapter.secret import REDACTED
from hpctl.backends.base import (CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, TERMINAL, UNKNOWN, Artifact,
                                 Backend, JobRecord, JobStatus, TaggedJob)
from hpctl.engines import uses_ray
from hpctl.errors import HpctlError, Problem, optional_import
from hpctl.instances import sagemaker_name
from hpctl.backends.common import JobTag, job_env, rank_lines, scalar_text
from hpctl.spec import Spec
from hpctl.suggest import did_you_mean

SMC = "cluster.sm_jobs_config"
KWARGS = f"{SMC}.additional_estimator_kwargs"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
DEFAULT_MAX_RUN = 86400  # the SDK's default StoppingCondition
DEFAULT_VOLUME_GB = 30  # the SDK's default volume size
MAX_NAME = 63
NAME_DIGITS = 8
TAG_KEY, SPEC_KEY = "hpctl:tag", "hpctl:spec"  # apply's JobTag, as request Tags (find_tagged searches them)
MAX_TAGS = 50  # CreateTrainingJob's limit (botocore's model: Tags max 50)
# The channel of a file-system input: HyperPod's launcher passes its one FileSystemInput to the SDK's
# fit(), which names it "training", so the recipe finds the data at /opt/ml/input/data/training.
FS_CHANNEL = "training"
FS_KEYS = {"FileSystemId": "id", "FileSystemType": "type", "DirectoryPath": "directory_path"}

# The PyTorch estimator's arguments (HyperPod's additional_estimator_kwargs) hpctl maps onto the
# request: name -> (request path, expected Python type). Anything else is refused by name. Two are
# sent only as the SDK's estimator sends them (_estimator_kwargs): disable_profiler true is
# ProfilerConfig {DisableProfiler: true}, and debugger_hook_config false is no DebugHookConfig.
ESTIMATOR_KWARGS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "max_run": ("StoppingCondition.MaxRuntimeInSeconds", int),
    "max_wait": ("StoppingCondition.MaxWaitTimeInSeconds", int),
    "max_pending_time": ("StoppingCondition.MaxPendingTimeInSeconds", int),
    "volume_size": ("ResourceConfig.VolumeSizeInGB", int),
    "volume_kms_key": ("ResourceConfig.VolumeKmsKeyId", str),
    "keep_alive_period_in_seconds": ("ResourceConfig.KeepAlivePeriodInSeconds", int),
    "output_kms_key": ("OutputDataConfig.KmsKeyId", str),
    "use_spot_instances": ("EnableManagedSpotTraining", bool),
    "enable_network_isolation": ("EnableNetworkIsolation", bool),
    "encrypt_inter_container_traffic": ("EnableInterContainerTrafficEncryption", bool),
    "enable_remote_debug": ("RemoteDebugConfig.EnableRemoteDebug", bool),
    "enable_infra_check": ("InfraCheckConfig.EnableInfraCheck", bool),
    "max_retry_attempts": ("RetryStrategy.MaximumRetryAttempts", int),
    "input_mode": ("AlgorithmSpecification.TrainingInputMode", str),
    "subnets": ("VpcConfig.Subnets", list),
    "security_group_ids": ("VpcConfig.SecurityGroupIds", list),
    "checkpoint_s3_uri": ("CheckpointConfig.S3Uri", str),
    "environment": ("Environment", dict),
    "tags": ("Tags", list),
    "disable_profiler": ("ProfilerConfig.DisableProfiler", bool),
    "debugger_hook_config": ("DebugHookConfig", bool),
}

# TrainingJobStatus -> hpctl state; InProgress is refined by the secondary status.
STATUS = {"Completed": SUCCEEDED, "Failed": FAILED, "Stopped": CANCELLED, "Stopping": RUNNING,
          "InProgress": RUNNING}
PENDING_SECONDARY = {"Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
                     "DownloadingTrainingImage"}


def _err(spec: Spec, key: str, message: str, **kw: Any) -> HpctlError:
    return HpctlError(Problem(message, spec.origin(key), key, **kw))


def job_name(spec: Spec) -> str:
    """<run name as [A-Za-z0-9-]>-<8 hex of the spec digest>, at most 63 characters."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", spec.job_name).strip("-") or "hpctl"
    suffix = digest(spec.public_data()).split(":", 1)[1][:NAME_DIGITS]
    return f"{base[:MAX_NAME - NAME_DIGITS - 1].rstrip('-')}-{suffix}"


def time_limit_seconds(value: Any) -> int | None:
    """Slurm's time formats (run.time_limit): M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 60
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
    if not match:
        raise ValueError(value)
    days, a, b, c = match.groups()
    if days is not None:  # D-H[:M[:S]]
        h, m, s = int(a), int(b or 0), int(c or 0)
    elif c is not None:  # H:M:S
        h, m, s = int(a), int(b), int(c)
    else:  # M or M:S
        h, m, s = 0, int(a), int(b or 0)
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def _s3_join(prefix: str, *parts: str) -> str:
    return "/".join([prefix.rstrip("/"), *parts])


def _set(request: dict[str, Any], path: str, value: Any) -> None:
    node = request
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _channels(spec: Spec) -> list[dict[str, Any]]:
    """S3 channels (null ones dropped) or the one file-system channel, never both."""
    inputs = spec.get(f"{SMC}.inputs") or {}
    s3 = {k: v for k, v in (inputs.get("s3") or {}).items() if v not in (None, "")}
    fs = {k: v for k, v in (inputs.get("file_system") or {}).items() if v not in (None, "")}
    if s3 and fs:
        raise _err(spec, f"{SMC}.inputs", "set either inputs.s3 or inputs.file_system, not both",
                   found=f"s3 channels {', '.join(sorted(s3))} and file_system {fs.get('id')}",
                   hint="remove one, e.g. ~cluster.sm_jobs_config.inputs.file_system")
    channels = []
    for name in sorted(s3):
        if name == container.SPEC_CHANNEL:
            raise _err(spec, f"{SMC}.inputs.s3.{name}", f"the channel name '{name}' is hpctl's own (it carries the job spec)",
                       hint="name the channel otherwise")
        channels.append({"ChannelName": str(name), "InputMode": "File", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": scalar_text(s3[name]), "S3DataDistributionType": "FullyReplicated"}}})
    if fs:
        missing = [k for k in ("id", "type", "directory_path") if k not in fs]
        if missing:
            raise _err(spec, f"{SMC}.inputs.file_system", "a file-system input needs id, type and directory_path",
                       found="missing " + ", ".join(missing))
        channels.append({"ChannelName": FS_CHANNEL, "InputMode": "File", "DataSource": {"FileSystemDataSource": {
            "FileSystemId": scalar_text(fs["id"]), "FileSystemType": scalar_text(fs["type"]),
            "DirectoryPath": scalar_text(fs["directory_path"]), "FileSystemAccessMode": "ro"}}})
    return channels


def data_channels(spec: Spec) -> dict[str, tuple[str, str]]:
    """The job's data channels (hpctl's own aside): name -> (where the container finds it, what the
    channel holds: an S3 URI or the file system's directory). {} when there are none, or when the
    inputs are wrong (render says how)."""
    try:
        found = _channels(spec)
    except HpctlError:
        return {}
    out = {}
    for channel in found:
        source = channel["DataSource"]
        held = (source.get("S3DataSource") or {}).get("S3Uri") or (source.get("FileSystemDataSource") or {}).get("DirectoryPath")
        out[channel["ChannelName"]] = (f"{container.container_path(container.CHANNELS)}/{channel['ChannelName']}", held or "")
    return out


def _environment(spec: Spec) -> dict[str, str]:
    """env_vars then cluster.env (null values dropped). Secrets cannot be sent: SageMaker keeps the
    environment in clear in the job's description. Every secret counts, by key name or by source
    (a value read from a sensitive environment variable), or the job would get it empty."""
    found = sorted(p for p, v in spec.secrets().items() if Reader({"v": v}).str("v") is not None)
    if found:  # a value the trainer reads as absent ("None", as HyperPod's falcon recipe writes) is no secret
        raise _err(spec, found[0], "a secret cannot be sent to a SageMaker training job: its environment is "
                   "stored in clear in the job's description", found=REDACTED,
                   hint="remove it here; give the job's role access to the secret instead (AWS Secrets "
                        "Manager or an IAM policy), and read it in the container")
    return dict(sorted((v.name, v.value) for v in job_env(spec, platform_network=True)))


def _estimator_kwargs(spec: Spec, request: dict[str, Any], sources: dict[str, str]) -> None:
    kwargs = spec.get(KWARGS) or {}
    for name, value in sorted(kwargs.items()):
        key = join(KWARGS, name)
        if value is None:
            continue
        if name not in ESTIMATOR_KWARGS:
            raise _err(spec, key, f"unknown estimator argument '{name}'", expected=", ".join(sorted(ESTIMATOR_KWARGS)),
                       hint=did_you_mean(name, ESTIMATOR_KWARGS))
        path, kind = ESTIMATOR_KWARGS[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _err(spec, key, "wrong type", expected=getattr(kind, "__name__", str(kind)), found=repr(value))
        if name == "environment":  # its secrets were refused with the rest of the spec's (_environment)
            request["Environment"] = dict(sorted({**request.get("Environment", {}),
                                                  **{str(k): scalar_text(v) for k, v in value.items()}}.items()))
        elif name == "tags":
            request.setdefault("Tags", []).extend(value)
        elif name == "disable_profiler":  # false: the SDK's profiler defaults, which hpctl never turns on
            if not value:
                continue
            _set(request, path, value)
        elif name == "debugger_hook_config":  # false: no hook config, as the SDK sends none
            if value:
                raise _err(spec, key, "hpctl sends no Debugger hook config: its trainer runs no smdebug hook, so "
                           "there would be nothing to collect", expected="false", found="true",
                           hint=f"remove {name} or set it to false")
            continue
        else:
            _set(request, path, value)
        sources[path] = key


def training_image(root: Mapping[str, Any]) -> tuple[Any, str]:
    """(the image the request names, the key it comes from) for a merged root (general config keys,
    `cluster`): cluster.image, else the general config's `container`. `hpctl doctor` asks this too,
    so it checks the image plan would send."""
    cluster = root.get("cluster") or {}
    if cluster.get("image"):
        return cluster["image"], "cluster.image"
    return root.get("container"), "container"


def request_for(spec: Spec) -> tuple[dict[str, Any], dict[str, str], str]:
    """(CreateTrainingJob request, request path -> spec key, the spec's S3 URI). Pure."""
    cluster = spec.cluster
    sources: dict[str, str] = {}
    image, sources["AlgorithmSpecification.TrainingImage"] = training_image(spec.data)
    role, output, instance = cluster.get("role_arn"), spec.get(f"{SMC}.output_path"), spec.get("instance_type")
    missing = [_err(spec, key, message, hint=hint).problems[0] for given, key, message, hint in (
        (image, "cluster.image", "a SageMaker job needs a container image",
         "set cluster.image (or the general config's `container`) to an ECR image with torch and hpctl's adapter "
         "installed"),
        (role, "cluster.role_arn", "a SageMaker job needs an IAM role to run as",
         "+cluster.role_arn=arn:aws:iam::<account>:role/<name> (a role SageMaker can assume, with access to the "
         "S3 paths)"),
        (output, f"{SMC}.output_path", "a SageMaker job needs an S3 output path",
         "cluster.sm_jobs_config.output_path=s3://<bucket>/<prefix>"),
        (instance, "instance_type", "a SageMaker job needs an instance type", "instance_type=ml.p5.48xlarge"),
    ) if not given]
    if missing:  # all at once: a new account's first plan usually lacks several
        raise HpctlError(missing)
    nodes = spec.get("recipes.trainer.num_nodes") or 1
    devices = spec.get("recipes.trainer.devices") or 1
    name = job_name(spec)
    run_prefix = _s3_join(str(output), re.sub(r"[^A-Za-z0-9._-]+", "-", spec.job_name))
    spec_prefix = _s3_join(str(output), name, "input", container.SPEC_CHANNEL) + "/"
    checkpoint_uri = cluster.get("checkpoint_s3_uri") or _s3_join(run_prefix, "checkpoints")

    tb = spec.get(f"{SMC}.tensorboard_config") or {}
    tb_given = {k: tb.get(k) for k in ("output_path", "container_logs_path") if tb.get(k)}
    if len(tb_given) == 1:
        raise _err(spec, f"{SMC}.tensorboard_config", "TensorBoard needs both output_path and container_logs_path",
                   found=", ".join(f"{k}={v}" for k, v in tb_given.items()))
    python = cluster.get("python") or "python3"
    arguments = ["--config", f"{container.container_path(container.CHANNELS)}/{container.SPEC_CHANNEL}/{container.SPEC_FILE}",
                 "--nproc-per-node", str(devices), "--master-port", str(cluster.get("master_port") or 29500),
                 "--python", str(python)]
    if tb_given:
        arguments += ["--tensorboard-dir", str(tb["container_logs_path"])]

    try:
        max_run = time_limit_seconds(spec.get("recipes.run.time_limit"))
    except ValueError:
        raise _err(spec, "recipes.run.time_limit", "not a time limit", found=repr(spec.get("recipes.run.time_limit")),
                   expected="D-HH:MM:SS, HH:MM:SS or minutes") from None
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": str(role),
        "AlgorithmSpecification": {
            "TrainingImage": str(image), "TrainingInputMode": "File",
            "ContainerEntrypoint": [str(python), "-m", "adapter.sagemaker_launch"],
            "ContainerArguments": arguments,
        },
        "ResourceConfig": {"InstanceType": sagemaker_name(str(instance)), "InstanceCount": nodes,
                           "VolumeSizeInGB": DEFAULT_VOLUME_GB},
        "InputDataConfig": [{"ChannelName": container.SPEC_CHANNEL, "InputMode": "File", "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec_prefix,
                             "S3DataDistributionType": "FullyReplicated"}}}, *_channels(spec)],
        "OutputDataConfig": {"S3OutputPath": str(output)},
        "CheckpointConfig": {"S3Uri": str(checkpoint_uri), "LocalPath": container.container_path(container.CHECKPOINTS)},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_run or DEFAULT_MAX_RUN},
        "Environment": _environment(spec),
    }
    sources.update({"RoleArn": "cluster.role_arn", "OutputDataConfig.S3OutputPath": f"{SMC}.output_path",
                    "ResourceConfig.InstanceType": "instance_type", "ResourceConfig.InstanceCount": "recipes.trainer.num_nodes",
                    "CheckpointConfig.S3Uri": "cluster.checkpoint_s3_uri", "TrainingJobName": "recipes.run.name",
                    "StoppingCondition.MaxRuntimeInSeconds": "recipes.run.time_limit",
                    "Environment": "env_vars", "InputDataConfig": f"{SMC}.inputs"})
    for i, channel in enumerate(request["InputDataConfig"][1:], start=1):  # each channel's own key
        source = channel["DataSource"].get("FileSystemDataSource")
        if source is None:
            sources[f"InputDataConfig.{i}"] = join(f"{SMC}.inputs.s3", channel["ChannelName"])
        else:
            for member, key in FS_KEYS.items():
                sources[f"InputDataConfig.{i}.DataSource.FileSystemDataSource.{member}"] = f"{SMC}.inputs.file_system.{key}"
    if tb_given:
        request["TensorBoardOutputConfig"] = {"S3OutputPath": str(tb["output_path"]),
                                              "LocalPath": str(tb["container_logs_path"])}
        sources["TensorBoardOutputConfig.S3OutputPath"] = f"{SMC}.tensorboard_config.output_path"
    auto = cluster.get("auto_resume") or {}
    if auto.get("enabled"):
        request["RetryStrategy"] = {"MaximumRetryAttempts": auto.get("max_restarts") or 1}
        sources["RetryStrategy.MaximumRetryAttempts"] = "cluster.auto_resume.max_restarts"
    _estimator_kwargs(spec, request, sources)
    file_system = any("FileSystemDataSource" in c["DataSource"] for c in request["InputDataConfig"])
    if file_system and "VpcConfig" not in request:
        # SageMaker reaches FSx and EFS only inside their VPC; botocore's model cannot say so
        raise _err(spec, f"{SMC}.inputs.file_system", "a file-system input needs the job in its VPC",
                   hint=f"+{KWARGS}.subnets=[subnet-...] +{KWARGS}.security_group_ids=[sg-...] "
                        "(the file system's subnets and a security group that reaches it)")
    tags = [{"Key": str(k), "Value": scalar_text(v)} for k, v in sorted((cluster.get("tags") or {}).items())]
    if tags or request.get("Tags"):
        request["Tags"] = tags + request.get("Tags", [])
        sources.setdefault("Tags", "cluster.tags")
    _check_own_tags(spec, request.get("Tags", []))
    if request.get("EnableManagedSpotTraining") and "MaxWaitTimeInSeconds" not in request["StoppingCondition"]:
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = request["StoppingCondition"]["MaxRuntimeInSeconds"]
    return request, sources, spec_prefix + container.SPEC_FILE


def _check_own_tags(spec: Spec, tags: list[dict[str, str]]) -> None:
    """Apply adds hpctl's two tags (TAG_KEY, SPEC_KEY) at submit: a user's tag of either name, or
    more than MAX_TAGS - 2 tags, would make CreateTrainingJob refuse the job at apply."""
    own = sorted({t["Key"] for t in tags} & {TAG_KEY, SPEC_KEY})
    if own:
        raise _err(spec, "cluster.tags", f"the tag {own[0]!r} is set by hpctl (it finds the job by it)",
                   hint="use another tag key")
    if len(tags) > MAX_TAGS - 2:
        raise _err(spec, "cluster.tags", f"{len(tags)} tags: SageMaker takes {MAX_TAGS} and hpctl adds 2",
                   expected=f"at most {MAX_TAGS - 2}")


# ---- the request checked against botocore's model of the SageMaker API

def _botocore(module: str) -> Any:
    """botocore.<module> (the `sagemaker` extra), or a clear error saying how to install it."""
    return optional_import(f"botocore.{module}", "sagemaker", "a SageMaker training job")


@lru_cache(maxsize=1)
def _operation() -> Any:
    """CreateTrainingJob's input shape from botocore's bundled service model (no boto3, no network)."""
    loaders, models = _botocore("loaders"), _botocore("model")
    model = models.ServiceModel(loaders.Loader().load_service_model("sagemaker", "service-2"), "sagemaker")
    return model.operation_model("CreateTrainingJob").input_shape


def _pattern(pattern: str) -> re.Pattern[str] | None:
    """A model pattern as a Python regex; None when it uses Java-only syntax (\\p{L} classes)."""
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _walk(shape: Any, value: Any, path: str, out: list[tuple[str, str]]) -> None:
    """Every constraint of the model for this value: required and unknown members, type, length,
    range, enum and pattern (botocore's own ParamValidator checks only some of these)."""
    kind, meta = shape.type_name, shape.metadata
    types = {"structure": dict, "map": dict, "list": list, "string": str, "boolean": bool,
             "integer": int, "long": int, "double": (int, float), "float": (int, float)}
    expected = types.get(kind)
    if expected is not None and (not isinstance(value, expected) or (kind in ("integer", "long") and isinstance(value, bool))):
        out.append((path, f"expected {kind}, found {type(value).__name__} {value!r}"))
        return
    size = len(value) if isinstance(value, (str, list, dict)) else value if isinstance(value, (int, float)) else None
    word = "length" if isinstance(value, (str, list, dict)) else "value"
    if size is not None and not isinstance(value, bool):
        if "min" in meta and size < meta["min"]:
            out.append((path, f"{word} {size} is below the minimum {meta['min']}"))
        if "max" in meta and size > meta["max"]:
            out.append((path, f"{word} {size} is above the maximum {meta['max']}"))
    if kind == "string":
        if shape.enum and value not in shape.enum:
            hint = did_you_mean(value, shape.enum)
            out.append((path, f"{value!r} is not one of SageMaker's values" + (f" ({hint})" if hint else "")))
        regex = _pattern(meta["pattern"]) if "pattern" in meta else None
        if regex is not None and not regex.fullmatch(value):
            out.append((path, f"{value!r} does not match SageMaker's pattern {meta['pattern']}"))
    elif kind == "structure":
        for req in shape.required_members:
            if req not in value:
                out.append((join(path, req) if path else req, "missing required member"))
        for key, sub in value.items():
            if key not in shape.members:
                out.append((join(path, key) if path else key, "not a member of " + shape.name))
            else:
                _walk(shape.members[key], sub, join(path, key) if path else key, out)
    elif kind == "list":
        for i, item in enumerate(value):
            _walk(shape.member, item, f"{path}.{i}", out)
    elif kind == "map":
        for key, sub in value.items():
            _walk(shape.key, key, f"{path}.{key}(key)", out)
            _walk(shape.value, sub, f"{path}.{key}", out)


def request_problems(request: dict[str, Any]) -> list[tuple[str, str]]:
    """(request path, what is wrong) for every violation of the API's model; [] when valid."""
    shape = _operation()
    ParamValidator = _botocore("validate").ParamValidator
    out: list[tuple[str, str]] = []
    _walk(shape, request, "", out)
    report = ParamValidator().validate(request, shape)
    if not out and report.has_errors():  # a check botocore makes that the walk does not
        out.append(("", report.generate_report()))
    return out


def field_problems(member: str, value: Any) -> list[str]:
    """What the API's model says is wrong with one top-level member of the request (doctor's role check)."""
    out: list[tuple[str, str]] = []
    _walk(_operation().members[member], value, member, out)
    return [message for _, message in out]


def _source(path: str, sources: dict[str, str]) -> str | None:
    """The spec key behind a request path or its closest parent: a list item's own (an input
    channel's) before the list's."""
    parts = path.split(".")
    while parts:
        for joined in (".".join(parts), ".".join(p for p in parts if not p.isdigit() and not p.endswith("(key)"))):
            if joined in sources:
                return sources[joined]
        parts.pop()
    return None


class SageMakerBackend(Backend):
    name = "sm_jobs"
    reads_general_config = True
    platform_network = True  # SageMaker provides EFA and the NCCL environment on its instances

    def doctor(self, cluster: dict[str, Any], general: dict[str, Any]) -> list[Any]:
        from hpctl.backends.sagemaker_checks import doctor_checks
        return doctor_checks(cluster, general)

    def preflight(self, spec: Spec) -> list[Any]:
        from hpctl.backends.sagemaker_checks import data_channel_checks, evaluation_checks
        return data_channel_checks(spec) + evaluation_checks(spec)

    def render(self, spec: Spec) -> Artifact:
        request, sources, spec_uri = request_for(spec)
        spec_json = json.dumps(spec.public_data(), indent=2, sort_keys=True, ensure_ascii=True, default=str) + "\n"
        files = {spec_uri: spec_json}
        if uses_ray(spec.data):  # verl: the request the SDK's recipe support sends (hpctl.backends.sagemaker_verl)
            from hpctl.backends import sagemaker_verl
            request, files = sagemaker_verl.request(spec, request)
        problems = []
        for path, message in request_problems(request):
            key = _source(path, sources)
            problems.append(Problem(f"the CreateTrainingJob request is invalid at {path or 'the top level'}: {message}",
                                    spec.origin(key) if key else None, key,
                                    hint="botocore's model of the SageMaker API (the request boto3 would send)"))
        if problems:
            raise HpctlError(problems)
        name = request["TrainingJobName"]
        return Artifact(
            kind="CreateTrainingJob", language="json", text=json.dumps(request, indent=2, sort_keys=True) + "\n",
            files=files,
            logs={"cloudwatch": f"{LOG_GROUP} {name}/algo-*"},
            results_dir=_s3_join(request["OutputDataConfig"]["S3OutputPath"], name))

    def submit(self, artifact: Artifact, secrets: dict[str, str], tag: JobTag | None = None) -> str:
        request = json.loads(artifact.text)
        if tag is not None:
            request["Tags"] = [*request.get("Tags", []), {"Key": TAG_KEY, "Value": tag.value},
                               {"Key": SPEC_KEY, "Value": tag.spec}]
        region = _region_of(artifact)
        with aws_errors(f"upload the job spec for {request['TrainingJobName']}"):
            s3 = client("s3", region)
            for uri, content in sorted(artifact.files.items()):
                bucket, _, key = uri.removeprefix("s3://").partition("/")
                s3.put_object(Bucket=bucket, Key=key, Body=content.encode())
        with aws_errors(f"create training job {request['TrainingJobName']}"):
            client("sagemaker", region).create_training_job(**request)
        return request["TrainingJobName"]

    def find_tagged(self, artifact: Artifact, tag: JobTag) -> list[TaggedJob]:
        """One Search of training jobs by the tag (SageMaker keeps ended jobs and their tags)."""
        expression = {"Filters": [{"Name": f"Tags.{TAG_KEY}", "Operator": "Equals", "Value": tag.value}]}
        with aws_errors(f"search training jobs tagged {TAG_KEY}={tag.value}"):
            found = client("sagemaker", _region_of(artifact)).search(Resource="TrainingJob", SearchExpression=expression)
        jobs = sorted((r["TrainingJob"] for r in found.get("Results") or [] if r.get("TrainingJob")),
                      key=lambda j: str(j.get("CreationTime") or ""))
        return [TaggedJob(j["TrainingJobName"], job_status(j).state,
                          next((t["Value"] for t in j.get("Tags") or [] if t.get("Key") == SPEC_KEY), ""))
                for j in jobs]

    def describe(self, record: JobRecord) -> JobStatus:
        with aws_errors(f"describe training job {record.job_id}"):
            job = client("sagemaker", _region(record)).describe_training_job(TrainingJobName=record.job_id)
        return job_status(job)

    def logs(self, record: JobRecord, follow: bool = False, rank: int | None = None) -> Iterator[str]:
        devices = int(get_path(record.spec, "recipes.trainer.devices") or 1)
        nodes = int(get_path(record.spec, "recipes.trainer.num_nodes") or 1)
        if rank is not None and not 0 <= rank < nodes * devices:
            raise HpctlError("no such rank", found=str(rank), expected=f"0..{nodes * devices - 1}")
        host = f"algo-{(rank or 0) // devices + 1}"
        done = lambda: self.describe(record).state in TERMINAL  # noqa: E731
        yield from rank_lines(follow_stream(client("logs", _region(record)), record.job_id, host, follow, done), rank)

    def cancel(self, record: JobRecord) -> None:
        sm = client("sagemaker", _region(record))
        with aws_errors(f"stop training job {record.job_id}"):
            if job_status(sm.describe_training_job(TrainingJobName=record.job_id)).state in TERMINAL:
                return
            sm.stop_training_job(TrainingJobName=record.job_id)


def job_status(job: dict[str, Any]) -> JobStatus:
    """describe_training_job's answer as hpctl's state, with SageMaker's words for it."""
    primary, secondary = job.get("TrainingJobStatus"), job.get("SecondaryStatus")
    state = STATUS.get(primary, UNKNOWN)
    if primary == "InProgress" and secondary in PENDING_SECONDARY:
        state = PENDING
    backend_state = f"{primary}/{secondary}" if secondary and secondary != primary else primary
    transitions = job.get("SecondaryStatusTransitions") or []
    detail = job.get("FailureReason") or (transitions[-1].get("StatusMessage") if transitions else None)
    return JobStatus(state, exit_code=0 if state == SUCCEEDED else None, backend_state=backend_state, detail=detail)


# ---- talking to AWS (boto3 is imported only from here on)

def client(service: str, region: str | None) -> Any:
    """A boto3 client from the default credential chain; tests replace this to add a Stubber."""
    boto3 = optional_import("boto3", "sagemaker", "a SageMaker training job")

    with aws_errors(f"create the {service} client"):
        return boto3.session.Session(region_name=region or None).client(service)


def _region_of(artifact: Artifact) -> str | None:
    for content in artifact.files.values():
        return (json.loads(content).get("cluster") or {}).get("region")
    return None


def _region(record: JobRecord) -> str | None:
    return (record.spec.get("cluster") or {}).get("region")


HINTS = {
    "AccessDenied": "the credentials lack permission for this call: check the IAM policy of the user or role "
                    "(sagemaker:CreateTrainingJob, iam:PassRole on role_arn, s3:PutObject on output_path)",
    "AccessDeniedException": "the credentials lack permission for this call: check the IAM policy of the user "
                             "or role (sagemaker:*TrainingJob*, sagemaker:Search, iam:PassRole on role_arn, "
                             "logs:GetLogEvents)",
    "ResourceInUse": "a training job of this name exists: this exact spec was applied before (SageMaker "
                     "never reuses a name); see `hpctl status`, or change the spec to submit a new job",
    "ThrottlingException": "AWS is throttling the calls: wait a little and retry",
    "ResourceLimitExceeded": "the account's quota for this instance type (or for training jobs) is too low: ask for "
                             "more in the Service Quotas console (SageMaker, '<instance type> for training job "
                             "usage'), or plan a smaller instance_type or trainer.num_nodes",
    "ResourceNotFound": "no such training job in this account and region (check cluster.region)",
    "ValidationException": "SageMaker refused a value of the request",
    **dict.fromkeys(("InternalFailure", "InternalServerError", "ServiceUnavailable"),
                    "AWS failed the call on its side after botocore's retries: try again in a minute (a job that "
                    "was created all the same is found by its tags and adopted, never created twice)"),
    "NoSuchBucket": "the bucket of output_path does not exist (or is in another account)",
}


@contextlib.contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """botocore's exceptions as one HpctlError each: what was tried, AWS's code and message, a fix."""
    from botocore.exceptions import (BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError,
                                     NoRegionError, PartialCredentialsError)

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as e:
        raise HpctlError(f"cannot {what}: no AWS credentials found ({e})",
                         hint="configure them as boto3 reads them: AWS_PROFILE, AWS_ACCESS_KEY_ID / "
                              "AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, or an instance role") from None
    except NoRegionError:
        raise HpctlError(f"cannot {what}: no AWS region", key="cluster.region",
                         hint="set cluster.region, or AWS_REGION / AWS_DEFAULT_REGION") from None
    except EndpointConnectionError as e:
        raise HpctlError(f"cannot {what}: {e}", hint="check the network path to AWS (or AWS_ENDPOINT_URL)") from None
    except ClientError as e:
        err = e.response.get("Error") or {}
        code, message = err.get("Code") or "Error", err.get("Message") or str(e)
        if code == "ValidationException" and "already" in message.lower() and "exist" in message.lower():
            code = "ResourceInUse"
        raise HpctlError(f"cannot {what}: {code}: {message}", hint=HINTS.get(code)) from None
    except BotoCoreError as e:  # the rest of botocore's own: a missing profile, an expired SSO token, ...
        raise HpctlError(f"cannot {what}: {e}", hint="check the AWS configuration boto3 reads (AWS_PROFILE, "
                         "~/.aws/config, the SSO login)") from None


def follow_stream(logs: Any, job: str, host: str, follow: bool, done: Callable[[], bool],
                  poll_s: float = 2.0) -> Iterator[str]:
    """The lines of one host's CloudWatch streams; with follow, until `done()` and drained.

    SageMaker names each host's stream `<job>/algo-<n>-<epoch seconds>`; a retried job adds a new
    stream per attempt, so every matching stream is read, oldest first."""
    tokens: dict[str, str | None] = {}
    last_pass = not follow
    while True:
        with aws_errors(f"list the log streams of {job}"):
            try:
                found = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job}/{host}-")
            except logs.exceptions.ResourceNotFoundException:  # the group appears with the first log line
                found = {}
        for _, stream in sorted((s.get("creationTime", 0), s["logStreamName"]) for s in found.get("logStreams") or []):
            while True:
                kw = {"nextToken": tokens[stream]} if tokens.get(stream) else {"startFromHead": True}
                with aws_errors(f"read the log stream {stream}"):
                    page = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, **kw)
                for event in page.get("events") or []:
                    yield event.get("message", "").rstrip("\n")
                more = bool(page.get("events")) and page.get("nextForwardToken") != tokens.get(stream)
                tokens[stream] = page.get("nextForwardToken")
                if not more:
                    break
        if last_pass:
            return
        if done():
            last_pass = True  # one more pass reads what was written before the end
            continue
        time.sleep(poll_s)


BACKEND = SageMakerBackend()
