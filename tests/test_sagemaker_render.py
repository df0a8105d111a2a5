"""The SageMaker request as plan renders it: pure, byte-identical, checked against botocore's model.

Every refusal here is an HpctlError located at the key (and file:line or override) that caused it.
"""
from __future__ import annotations

import json

import pytest

from hpctl.backends import get_backend
from hpctl.backends.sagemaker import job_name, time_limit_seconds
from hpctl.compose import compose
from hpctl.errors import HpctlError
from hpctl.workspace import Workspace

BASE = ["cluster.image=123456789012.dkr.ecr.us-east-1.amazonaws.com/hpctl:1",
        "cluster.role_arn=arn:aws:iam::123456789012:role/hpctl", "instance_type=p5.48xlarge",
        "cluster.sm_jobs_config.output_path=s3://bucket/out", "base_results_dir=/results"]


def render(tmp_path, *args: str):
    spec = compose(["tiny_llama", *BASE, *args], "sagemaker", Workspace(tmp_path))
    return spec, get_backend(spec.cluster_type).render(spec)


def refusal(tmp_path, *args: str) -> str:
    with pytest.raises(HpctlError) as exc:
        render(tmp_path, *args)
    return exc.value.render()


def test_the_request_is_deterministic_and_names_what_runs(tmp_path):
    spec, a = render(tmp_path)
    _, b = render(tmp_path)
    assert a.text == b.text and a.files == b.files
    request = json.loads(a.text)
    assert request["ResourceConfig"] == {"InstanceType": "ml.p5.48xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 600}  # run.time_limit 0-00:10:00
    assert request["CheckpointConfig"] == {"S3Uri": "s3://bucket/out/tiny-llama/checkpoints", "LocalPath": "/opt/ml/checkpoints"}
    [(uri, text)] = a.files.items()
    assert uri == f"s3://bucket/out/{request['TrainingJobName']}/input/hpctl/job_spec.json"
    assert json.loads(text) == spec.public_data()
    _, other = render(tmp_path, "trainer.max_steps=21")
    assert json.loads(other.text)["TrainingJobName"] != request["TrainingJobName"]  # a new spec, a new job


def test_estimator_arguments_map_onto_the_request(tmp_path):
    kw = "cluster.sm_jobs_config.additional_estimator_kwargs"
    _, a = render(tmp_path, f"{kw}.max_run=3600", f"+{kw}.use_spot_instances=true", f"+{kw}.subnets=[subnet-1]",
                  f"+{kw}.security_group_ids=[sg-1]", "cluster.auto_resume.enabled=true", "+cluster.tags.team=llm",
                  "cluster.sm_jobs_config.tensorboard_config.output_path=s3://bucket/tb",
                  "cluster.sm_jobs_config.tensorboard_config.container_logs_path=/opt/ml/output/tensorboard")
    r = json.loads(a.text)
    assert r["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 3600}
    assert r["EnableManagedSpotTraining"] is True and r["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    assert r["RetryStrategy"] == {"MaximumRetryAttempts": 3} and r["Tags"] == [{"Key": "team", "Value": "llm"}]
    assert r["TensorBoardOutputConfig"] == {"S3OutputPath": "s3://bucket/tb", "LocalPath": "/opt/ml/output/tensorboard"}
    assert r["AlgorithmSpecification"]["ContainerArguments"][-2:] == ["--tensorboard-dir", "/opt/ml/output/tensorboard"]


def test_profiler_and_debugger_arguments_are_sent_as_the_sdk_sends_them(tmp_path):
    """HyperPod users' disable_profiler / debugger_hook_config: the SageMaker SDK's estimator sends
    ProfilerConfig {DisableProfiler: true} for the first and no DebugHookConfig for false."""
    kw = "cluster.sm_jobs_config.additional_estimator_kwargs"
    _, a = render(tmp_path, f"+{kw}.disable_profiler=true", f"+{kw}.debugger_hook_config=false")
    r = json.loads(a.text)
    assert r["ProfilerConfig"] == {"DisableProfiler": True} and "DebugHookConfig" not in r
    _, b = render(tmp_path, f"+{kw}.disable_profiler=false")
    assert "ProfilerConfig" not in json.loads(b.text)
    message = refusal(tmp_path, f"+{kw}.disable_profiler=yes please")
    assert f"{kw}.disable_profiler: wrong type" in message and "expected: bool" in message
    message = refusal(tmp_path, f"+{kw}.debugger_hook_config=true")
    assert f"{kw}.debugger_hook_config: hpctl sends no Debugger hook config" in message


def data_warnings(tmp_path, *args: str) -> list[str]:
    """The plan's data-channels warnings (plan still succeeds: a warning is no error)."""
    from hpctl.plan import verify
    spec = compose(["tiny_llama", *BASE, "model.data.use_synthetic_data=false", *args], "sagemaker", Workspace(tmp_path))
    results, _ = verify(spec)
    return [c.message for c in results if c.id == "data-channels" and c.severity == "warning"]


def test_data_paths_outside_the_input_channels_are_a_warning_naming_the_channel(tmp_path):
    s3, fs = "cluster.sm_jobs_config.inputs.s3", "cluster.sm_jobs_config.inputs.file_system"
    [message] = data_warnings(tmp_path, f"{s3}.train=s3://b/data/train", "+model.data.train_dir=/fsx/data/train")
    assert message.startswith("recipes.model.data.train_dir is /fsx/data/train (set at override 8 "
                              "(+model.data.train_dir=/fsx/data/train)), outside /opt/ml/input/data/")
    assert message.endswith("did you mean /opt/ml/input/data/train?")
    [message] = data_warnings(tmp_path, f"{s3}.train=s3://b/data/train", f"{s3}.val=s3://b/data/val",
                              "+model.data.train_dir=/opt/ml/input/data/train", "+model.data.val_dir=s3://b/data/val/part-1")
    assert message.startswith("recipes.model.data.val_dir is s3://b/data/val/part-1")
    assert "input channels are (train, val)" in message and message.endswith("/opt/ml/input/data/val/part-1?")
    vpc = ["+cluster.sm_jobs_config.additional_estimator_kwargs.subnets=[subnet-1]",
           "+cluster.sm_jobs_config.additional_estimator_kwargs.security_group_ids=[sg-1]"]
    [message] = data_warnings(tmp_path, f"{fs}.id=fs-0123456789abcdef0", f"{fs}.type=FSxLustre", f"{fs}.directory_path=/fsx/data",
                              *vpc, "+model.data.train_dir=/fsx/data/tokenized/train")
    assert message.endswith("did you mean /opt/ml/input/data/training/tokenized/train?")
    assert data_warnings(tmp_path, f"{s3}.train=s3://b/data/train", "+model.data.train_dir=/opt/ml/input/data/train") == []
    assert data_warnings(tmp_path, "+model.data.train_dir=/fsx/data/train") == []  # no channels: the data is elsewhere


def test_the_trainer_names_its_data_keys():
    """What the data-channels warning asks: v1 recipes' model.data.*_dir, LLMFT recipes' own keys."""
    from adapter.config import data_paths
    assert data_paths({"model": {"data": {"train_dir": "/d/t", "val_dir": None}}}) == {"train": ("model.data.train_dir", "/d/t")}
    assert data_paths({"model": {"data": {"train_dir": "/d/t", "use_synthetic_data": True}}}) == {}
    llmft = {"run": {"model_type": "llm_finetuning_aws"},
             "training_config": {"datasets": {"train_data": {"file_path": "/d/t.jsonl"}}}}
    assert data_paths(llmft) == {"train": ("training_config.datasets.train_data.file_path", "/d/t.jsonl")}


def test_file_system_input(tmp_path):
    """One channel named `training`, as the SageMaker SDK names the FileSystemInput HyperPod's launcher
    gives fit(); the job must be in the file system's VPC, which botocore's model cannot check."""
    fs = "cluster.sm_jobs_config.inputs.file_system"
    kw = "cluster.sm_jobs_config.additional_estimator_kwargs"
    given = [f"{fs}.id=fs-0123456789abcdef0", f"{fs}.type=FSxLustre", f"{fs}.directory_path=/fsx/data"]
    _, a = render(tmp_path, *given, f"+{kw}.subnets=[subnet-1]", f"+{kw}.security_group_ids=[sg-1]")
    [_, channel] = json.loads(a.text)["InputDataConfig"]
    assert channel["ChannelName"] == "training"
    assert channel["DataSource"]["FileSystemDataSource"] == {"FileSystemId": "fs-0123456789abcdef0", "FileSystemType": "FSxLustre",
                                                             "DirectoryPath": "/fsx/data", "FileSystemAccessMode": "ro"}
    message = refusal(tmp_path, *given)
    assert f"{fs}: a file-system input needs the job in its VPC" in message and f"+{kw}.subnets=" in message
    message = refusal(tmp_path, f"{fs}.id=fs-0123456789abcdef0", "cluster.sm_jobs_config.inputs.s3.train=s3://b/t")
    assert "set either inputs.s3 or inputs.file_system, not both" in message


@pytest.mark.parametrize("args, words", [
    (["instance_type=ml.p5.48xlarg"], ["override", "instance_type", "ResourceConfig.InstanceType", "did you mean 'ml.p5.48xlarge'"]),
    (["cluster.role_arn=arn:aws:iam::12:role/x"], ["cluster.role_arn", "RoleArn", "pattern"]),
    (["cluster.auto_resume.enabled=true", "cluster.auto_resume.max_restarts=31"], ["RetryStrategy", "above the maximum 30"]),
    (["+cluster.sm_jobs_config.inputs.s3.hpctl=s3://b/x"], ["hpctl's own"]),
    (["cluster.sm_jobs_config.inputs.s3.train=s3://b/t", "cluster.sm_jobs_config.inputs.s3.val=b/v"],  # the channel's own key
     ["(cluster.sm_jobs_config.inputs.s3.val=b/v): cluster.sm_jobs_config.inputs.s3.val:", "InputDataConfig.2"]),
    (["cluster.sm_jobs_config.inputs.file_system.id=fs-0123456789abcdef0", "cluster.sm_jobs_config.inputs.file_system.type=Lustre",
      "cluster.sm_jobs_config.inputs.file_system.directory_path=/fsx",
      "+cluster.sm_jobs_config.additional_estimator_kwargs.subnets=[subnet-1]",
      "+cluster.sm_jobs_config.additional_estimator_kwargs.security_group_ids=[sg-1]"],
     ["(cluster.sm_jobs_config.inputs.file_system.type=Lustre): cluster.sm_jobs_config.inputs.file_system.type:", "did you mean 'FSxLustre'"]),
    (["+cluster.sm_jobs_config.additional_estimator_kwargs.max_rn=1"], ["unknown estimator argument", "did you mean 'max_run'"]),
    (["cluster.sm_jobs_config.tensorboard_config.output_path=s3://b/tb"], ["both output_path and container_logs_path"]),
    (["+env_vars.HF_TOKEN=hf_abc123"], ["env_vars.HF_TOKEN", "secret", "stored in clear", "Secrets Manager"]),
    (["cluster.role_arn=null"], ["cluster.role_arn", "IAM role"]),
    (["run.time_limit=soon"], ["recipes.run.time_limit", "not a time limit"]),
    # apply adds hpctl's own two tags: a user's of the same name, or 49 of the 50, would fail at apply
    (["cluster.tags={hpctl:tag: mine}"], ["cluster.tags", "'hpctl:tag' is set by hpctl"]),
    (["cluster.tags={" + ", ".join(f"t{i}: v" for i in range(49)) + "}"], ["49 tags", "hpctl adds 2", "at most 48"]),
])
def test_bad_values_are_plan_errors_at_their_key(tmp_path, args, words):
    message = refusal(tmp_path, *args)
    for word in words:
        assert word in message, message
    assert "hf_abc123" not in message


def test_every_missing_account_input_is_reported_at_once(tmp_path):
    """A first plan against a new account usually lacks several inputs: each is a located error,
    all in one run, rather than one per attempt."""
    spec = compose(["tiny_llama", "base_results_dir=/results"], "sagemaker", Workspace(tmp_path))
    with pytest.raises(HpctlError) as exc:
        get_backend(spec.cluster_type).render(spec)
    assert [(p.key, str(p.origin).split(":")[0]) for p in exc.value.problems] == [
        ("cluster.image", "<builtin>/clusters/sagemaker.yaml"), ("cluster.role_arn", "<builtin>/clusters/sagemaker.yaml"),
        ("cluster.sm_jobs_config.output_path", "<builtin>/clusters/sagemaker.yaml"), ("instance_type", "<builtin>/config.yaml")]
    assert all(p.hint for p in exc.value.problems)


def test_job_names_fit_sagemakers_pattern(tmp_path):
    spec, _ = render(tmp_path, "run.name=" + "a_very.long name " * 8)
    name = job_name(spec)
    assert len(name) <= 63 and name.startswith("a-very-long-name-") and "--" not in name


@pytest.mark.parametrize("value, seconds", [("0-00:10:00", 600), ("6-00:00:00", 518400), ("1:30:00", 5400),
                                            ("90", 5400), ("5:30", 330), ("1-2", 93600), (None, None)])
def test_slurm_time_limits(value, seconds):
    assert time_limit_seconds(value) == seconds


def test_the_plan_says_the_results_are_in_s3(tmp_path, run_cli):
    """The container writes its results under /opt/ml, which SageMaker uploads to the output path:
    the plan's results line names that S3 prefix, not the recipe's run.results_dir."""
    rc, out, err = run_cli("plan", "tiny_llama", "--cluster", "sagemaker", "-w", tmp_path, *BASE, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    name = json.loads(doc["artifact"]["text"])["TrainingJobName"]
    assert doc["summary"]["results_dir"] == f"s3://bucket/out/{name}" != doc["spec"]["recipes"]["run"]["results_dir"]
