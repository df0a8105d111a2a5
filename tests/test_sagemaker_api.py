"""The SageMaker backend's AWS calls: the real boto3 client against moto's server on 127.0.0.1.

moto (https://github.com/getmoto/moto) runs here as a real HTTP server (its ThreadedMotoServer)
and boto3 finds it through AWS_ENDPOINT_URL, as it would find AWS, with dummy credentials. What
moto does not emulate, and how these tests stand in for it:

- moto runs no container: a created job is `Completed` at once and writes no log. The tests put
  log events into moto's CloudWatch Logs under the names SageMaker uses
  (/aws/sagemaker/TrainingJobs, stream <job>/algo-<n>-<epoch>) and read them back through hpctl.
- moto's StopTrainingJob answers HTTP 500 (not implemented), it accepts a second job of the same
  name, and it never refuses access or throttles: those calls are shown with botocore's Stubber
  (a real client whose answers are given by the test), said so in each test.
"""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")
from botocore.stub import Stubber  # noqa: E402

from hpctl.backends import sagemaker as sm  # noqa: E402
from hpctl.backends.base import JobRecord  # noqa: E402

REGION = "us-east-1"
BUCKET = "hpctl-test"
ARGS = ["tiny_llama", "--cluster", "sagemaker", "cluster.image=123456789012.dkr.ecr.us-east-1.amazonaws.com/hpctl:1",
        "cluster.role_arn=arn:aws:iam::123456789012:role/hpctl", f"cluster.region={REGION}",
        "instance_type=ml.g5.12xlarge", f"cluster.sm_jobs_config.output_path=s3://{BUCKET}/out",
        "cluster.sm_jobs_config.inputs.s3.train=s3://hpctl-test/data/train", "base_results_dir=/results"]


@pytest.fixture(scope="module")
def moto_url():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path):
    """The environment boto3 reads: moto's endpoint, dummy credentials, no config files."""
    for key, value in {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    s3 = boto3.client("s3", region_name=REGION)
    if BUCKET not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=BUCKET)
    return moto_url


def _state(ws: Path) -> dict:
    return json.loads((ws / ".hpctl" / "state.json").read_text())


def test_apply_status_logs_through_moto(aws, tmp_path, run_cli):
    """apply uploads the planned spec and sends the planned request; status maps moto's Completed;
    logs reads one host's CloudWatch stream, filtered by rank (events put by the test: moto runs no
    container); cancel of a finished job sends no StopTrainingJob."""
    ws = tmp_path / "ws"
    ws.mkdir()
    rc, out, err = run_cli("apply", "-w", ws, "--auto-approve", *ARGS)
    assert rc == 0, err
    artifact = _state(ws)["jobs"]["tiny-llama"]["artifact"]  # what the plan showed, as recorded
    request = json.loads(artifact["text"])
    [(spec_uri, spec_text)] = artifact["files"].items()
    name = request["TrainingJobName"]
    assert f"as sm_jobs job {name}" in out and out.index('"TrainingJobName"') < out.index("Apply complete")
    client = boto3.client("sagemaker", region_name=REGION)
    job = client.describe_training_job(TrainingJobName=name)
    assert job["RoleArn"] == request["RoleArn"] == "arn:aws:iam::123456789012:role/hpctl"
    assert job["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge" and job["ResourceConfig"]["InstanceCount"] == 1
    assert job["AlgorithmSpecification"]["TrainingImage"] == request["AlgorithmSpecification"]["TrainingImage"]
    assert [c["ChannelName"] for c in job["InputDataConfig"]] == ["hpctl", "train"]
    bucket, _, key = spec_uri.removeprefix("s3://").partition("/")
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert body == spec_text and json.loads(body)["recipes"]["run"]["name"] == "tiny-llama"
    assert _state(ws)["jobs"]["tiny-llama"]["job_id"] == name

    rc, out, err = run_cli("status", "-w", ws, "--json")
    assert rc == 0, err
    [row] = json.loads(out)["jobs"]
    assert (row["state"], row["backend_state"], row["job_id"]) == ("SUCCEEDED", "Completed", name)

    logs = boto3.client("logs", region_name=REGION)
    try:
        logs.create_log_group(logGroupName=sm.LOG_GROUP)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"{name}/algo-1-{int(time.time())}"
    logs.create_log_stream(logGroupName=sm.LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)  # moto drops events dated 1970
    lines = ["adapter.sagemaker_launch: algo-1 is node 0 of 1", "[rank0]: step 1 loss 5.5", "[rank1]: step 1 loss 5.5",
             "[rank0]: step 2 loss 5.1"]
    logs.put_log_events(logGroupName=sm.LOG_GROUP, logStreamName=stream,
                        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(lines)])
    rc, out, err = run_cli("logs", "-w", ws, "tiny-llama")
    assert (rc, out.splitlines()) == (0, lines), err
    rc, out, _ = run_cli("logs", "-w", ws, "tiny-llama", "--rank", "0", "-f")  # finished: -f ends after draining
    assert (rc, out.splitlines()) == (0, ["step 1 loss 5.5", "step 2 loss 5.1"])
    rc, _, err = run_cli("logs", "-w", ws, "tiny-llama", "--rank", "2")
    assert rc == 1 and "no such rank" in err and "expected: 0..1" in err

    rc, out, err = run_cli("cancel", "-w", ws, "tiny-llama")  # Completed: nothing to stop (moto would answer 500)
    assert rc == 0, err


def _record(name: str = "tiny-llama-0123abcd") -> JobRecord:
    spec = {"cluster_type": "sm_jobs", "cluster": {"region": REGION},
            "recipes": {"trainer": {"devices": 2, "num_nodes": 1}}}
    return JobRecord(name="tiny-llama", cluster="sagemaker", backend="sm_jobs", job_id=name, spec_digest="",
                     spec=spec, artifact={}, results_dir="", logs={}, applied_at="")


@pytest.fixture
def stubbed(aws, monkeypatch):
    """A real SageMaker client whose answers the test gives (botocore's Stubber), for what moto lacks."""
    client = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(client)
    monkeypatch.setattr(sm, "client", lambda service, region: client if service == "sagemaker"
                        else boto3.client(service, region_name=region))
    with stubber:
        yield stubber
    stubber.assert_no_pending_responses()


def test_cancel_stops_a_running_job(stubbed):
    """StopTrainingJob through the Stubber: moto's server answers it with HTTP 500."""
    name = "tiny-llama-0123abcd"
    stubbed.add_response("describe_training_job", _described(name, "InProgress", "Training"),
                         {"TrainingJobName": name})
    stubbed.add_response("stop_training_job", {}, {"TrainingJobName": name})
    sm.BACKEND.cancel(_record(name))


@pytest.mark.parametrize("primary, secondary, failure, state", [
    ("InProgress", "Starting", None, "PENDING"),
    ("InProgress", "Downloading", None, "PENDING"),
    ("InProgress", "Training", None, "RUNNING"),
    ("Stopping", "Stopping", None, "RUNNING"),
    ("Stopped", "Stopped", None, "CANCELLED"),
    ("Failed", "Failed", "AlgorithmError: exit code 1", "FAILED"),
    ("Completed", "Completed", None, "SUCCEEDED"),
])
def test_describe_maps_sagemaker_states(stubbed, primary, secondary, failure, state):
    """Running and failed states through the Stubber: moto reports every job Completed at once."""
    name = "tiny-llama-0123abcd"
    stubbed.add_response("describe_training_job", _described(name, primary, secondary, failure),
                         {"TrainingJobName": name})
    status = sm.BACKEND.describe(_record(name))
    assert status.state == state
    assert status.backend_state == (primary if primary == secondary else f"{primary}/{secondary}")
    assert status.detail == failure


@pytest.mark.parametrize("code, message, expect", [
    ("AccessDeniedException", "User is not authorized to perform sagemaker:CreateTrainingJob", "IAM policy"),
    ("ThrottlingException", "Rate exceeded", "throttling"),
    ("ResourceLimitExceeded", "The account-level service limit 'ml.g5.12xlarge for training job usage' is 0 Instances",
     "Service Quotas"),
    ("ResourceInUse", "Training job names must be unique within an AWS account and region", "name exists"),
    ("InternalFailure", "An internal error occurred", "adopted, never created twice"),
    ("ServiceUnavailable", "Service is unavailable", "adopted, never created twice"),
])
def test_create_errors_are_one_clear_message(stubbed, tmp_path, run_cli, code, message, expect):
    """CreateTrainingJob refusals through the Stubber (moto accepts a duplicate name and never
    denies or throttles): one message with AWS's code and a fix, exit 1, nothing recorded."""
    stubbed.add_client_error("create_training_job", service_error_code=code, service_message=message,
                             http_status_code=503 if code == "ServiceUnavailable" else 500 if code == "InternalFailure" else 400)
    ws = tmp_path / "ws"
    ws.mkdir()
    rc, out, err = run_cli("apply", "-w", ws, "--auto-approve", *ARGS)
    assert rc == 1 and "Traceback" not in err
    assert "cannot create training job tiny-llama-" in err and code in err and message in err
    assert expect in err.split("hint:", 1)[1]
    assert not (ws / ".hpctl" / "state.json").exists() or _state(ws)["jobs"] == {}


def test_a_name_in_use_refused_as_validation_is_said_as_in_use(stubbed, tmp_path, run_cli):
    """SageMaker also refuses a taken name as a ValidationException "... already exists" (through the
    Stubber: moto accepts a duplicate): said as ResourceInUse, with its fix, not as a bad value."""
    message = "Training job tiny-llama-0123abcd already exists"
    stubbed.add_client_error("create_training_job", service_error_code="ValidationException",
                             service_message=message, http_status_code=400)
    ws = tmp_path / "ws"
    ws.mkdir()
    rc, out, err = run_cli("apply", "-w", ws, "--auto-approve", *ARGS)
    assert rc == 1 and "Traceback" not in err
    assert f"ResourceInUse: {message}" in err
    assert "a training job of this name exists" in err.split("hint:", 1)[1]


def test_no_credentials_is_one_clear_message(aws, monkeypatch, tmp_path, run_cli):
    """Against the real client and moto's endpoint, with no credentials anywhere in boto3's chain."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    ws = tmp_path / "ws"
    ws.mkdir()
    rc, _, err = run_cli("apply", "-w", ws, "--auto-approve", *ARGS)
    assert rc == 1 and "Traceback" not in err
    assert "no AWS credentials found" in err and "AWS_ACCESS_KEY_ID" in err


def test_a_refused_connection_is_one_clear_message(aws, monkeypatch, tmp_path, run_cli):
    """The real clients against a port nothing listens on (botocore's retries cut to one attempt):
    apply says which call could not connect and what to check, and records nothing."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    ws = tmp_path / "ws"
    ws.mkdir()
    rc, _, err = run_cli("apply", "-w", ws, "--auto-approve", *ARGS)
    assert rc == 1 and "Traceback" not in err
    assert "Error: cannot upload the job spec for tiny-llama-" in err  # the first call: the spec to S3
    assert "Could not connect to the endpoint URL" in err
    assert "network path to AWS" in err
    assert not (ws / ".hpctl" / "state.json").exists() or _state(ws)["jobs"] == {}


def test_a_job_unknown_to_sagemaker_says_so(aws):
    """describe of a name moto does not know: its ValidationException, as one message."""
    from hpctl.errors import HpctlError
    with pytest.raises(HpctlError, match="cannot describe training job no-such-job-00000000: ValidationException"):
        sm.BACKEND.describe(_record("no-such-job-00000000"))


def _described(name: str, primary: str, secondary: str, failure: str | None = None) -> dict:
    from datetime import datetime, timezone
    job = {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
           "TrainingJobStatus": primary, "SecondaryStatus": secondary,
           "AlgorithmSpecification": {"TrainingInputMode": "File"},
           "ResourceConfig": {"InstanceType": "ml.g5.12xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
           "StoppingCondition": {"MaxRuntimeInSeconds": 600}, "CreationTime": datetime(2026, 1, 1, tzinfo=timezone.utc),
           "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/out/{name}/output/model.tar.gz"}}
    if failure:
        job["FailureReason"] = failure
    return job


def test_doctor_checks_credentials_region_role_and_image(aws, tmp_path, run_cli):
    """sts get-caller-identity answered by moto; the role and image forms are checked offline."""
    ws = tmp_path / "ws"
    (ws / "clusters").mkdir(parents=True)
    good = {"type": "sm_jobs", "region": REGION, "role_arn": "arn:aws:iam::123456789012:role/hpctl",
            "image": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/hpctl:1"}
    (ws / "clusters" / "sagemaker.yaml").write_text(json.dumps(good))
    rc, out, err = run_cli("doctor", "-w", ws, "--cluster", "sagemaker", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert rc == 0 and all(c["ok"] for c in checks.values()), checks
    assert "account 123456789012" in checks["credentials accepted (sts get-caller-identity)"]["detail"]
    bad = {**good, "role_arn": "arn:aws:iam::12345:role/x", "image": "docker.io/me/hpctl:1"}
    (ws / "clusters" / "sagemaker.yaml").write_text(json.dumps(bad))
    rc, out, _ = run_cli("doctor", "-w", ws, "--cluster", "sagemaker", "--json")
    failed = {c["name"] for c in json.loads(out)["checks"] if not c["ok"]}
    assert rc == 1 and failed == {"role_arn form", "image is an ECR URI in the job's region"}


def test_doctor_checks_the_image_plan_sends_from_the_general_config(aws, tmp_path, run_cli):
    """No cluster.image: the request names the general config's `container`, so doctor checks that one."""
    ws = tmp_path / "ws"
    (ws / "clusters").mkdir(parents=True)
    cluster = {"type": "sm_jobs", "region": REGION, "role_arn": "arn:aws:iam::123456789012:role/hpctl", "image": None}
    (ws / "clusters" / "sagemaker.yaml").write_text(json.dumps(cluster))
    image = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/hpctl:1"
    (ws / "config.yaml").write_text(json.dumps({"container": image}))
    rc, out, err = run_cli("doctor", "-w", ws, "--cluster", "sagemaker", "--json")
    check = {c["name"]: c for c in json.loads(out)["checks"]}["image is an ECR URI in the job's region"]
    assert rc == 0 and check["ok"] and check["detail"] == f"{image} (from container)", check
    (ws / "config.yaml").write_text(json.dumps({"container": "docker.io/me/hpctl:1"}))
    rc, out, _ = run_cli("doctor", "-w", ws, "--cluster", "sagemaker", "--json")
    check = {c["name"]: c for c in json.loads(out)["checks"]}["image is an ECR URI in the job's region"]
    assert rc == 1 and not check["ok"] and "set container to" in check["fix"]


@pytest.mark.slow
def test_apply_killed_after_create_training_job_adopts_it_by_tag(aws, tmp_path, run_cli, run_hpctl):
    """`hpctl apply` (its own process, against moto's server) SIGKILLed after CreateTrainingJob
    returned, before state recorded the job: the job carries the tag in its Tags, the next apply
    finds it with one Search by that tag, adopts it (Completed: moto runs no container) and sends
    no second CreateTrainingJob (moto would accept one of the same name and renew its CreationTime)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    args = [*ARGS, "run.name=crash-llama"]
    killed = run_hpctl("apply", "-w", ws, "--auto-approve", *args, env={"HPCTL_APPLY_CRASH_AT": "after_submit"})
    assert killed.returncode == -9, killed.stderr
    assert _state(ws)["jobs"] == {}
    client = boto3.client("sagemaker", region_name=REGION)
    [name] = [j["TrainingJobName"] for j in client.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
              if j["TrainingJobName"].startswith("crash-llama-")]
    job = client.describe_training_job(TrainingJobName=name)
    tags = {t["Key"]: t["Value"] for t in client.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags[sm.TAG_KEY].startswith("hpctl-") and len(tags[sm.SPEC_KEY]) == 12

    rc, out, err = run_cli("apply", "-w", ws, "--auto-approve", *args)
    assert rc == 0, err
    assert f"adopted job crash-llama (sm_jobs job {name}, SUCCEEDED) found on the scheduler but missing from state" in err
    assert "No changes" in out
    assert _state(ws)["jobs"]["crash-llama"]["job_id"] == name
    assert client.describe_training_job(TrainingJobName=name)["CreationTime"] == job["CreationTime"]
