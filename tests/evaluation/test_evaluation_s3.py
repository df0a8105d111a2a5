"""S3 paths, as HyperPod's evaluation launcher script gives them: the job copies an s3:// model
down and uploads lm-eval's results and TensorBoard files to s3:// prefixes (boto3, with the job's
credentials), against moto's S3 server on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.evaluation.helpers import TASKS, lm_eval_directly, word_tokenizer
from tests.helpers.trainer import REPO, env, export_dir, ok, tiny_recipe, torchrun, write_spec

pytest.importorskip("lm_eval", reason="evaluation jobs need lm-eval (the evaluation extra)")
boto3 = pytest.importorskip("boto3", reason="S3 paths need boto3 (the sagemaker extra)")
moto_server = pytest.importorskip("moto.server", reason="the S3 stand-in is moto's server (the test extra)")
pytestmark = pytest.mark.slow


def test_an_s3_model_is_scored_and_the_results_land_in_s3(tmp_path: Path) -> None:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        aws = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-west-2",
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_EC2_METADATA_DISABLED": "true"}
        s3 = boto3.client("s3", region_name="us-west-2", endpoint_url=aws["AWS_ENDPOINT_URL"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        s3.create_bucket(Bucket="evals", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})

        results = tmp_path / "train"
        ok(torchrun(tiny_recipe(results, model={"data": {"tokenizer_name_or_path": str(word_tokenizer(tmp_path / "tok"))}}), 1))
        export = export_dir(results, 6)
        for path in export.iterdir():
            s3.upload_file(str(path), "models", f"tiny/step6/{path.name}")

        spec = write_spec({
            "run": {"name": "score", "results_dir": str(tmp_path / "score"), "model_name_or_path": "s3://models/tiny/step6"},
            "trainer": {"accelerator": "cpu"},
            "evaluation": {"task": str(TASKS), "metric": "all"},
            "output": {"eval_results_dir": "s3://evals/run1", "eval_tensorboard_results_dir": "s3://evals/tb"},
        }, tmp_path / "score.json")
        proc = subprocess.run([sys.executable, "-m", "adapter.evaluate", "--config", str(spec)], cwd=REPO,
                              env={**env(), **aws}, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="evals")["Contents"]}
        assert {"run1/results.json", "run1/samples_tiny_choice.jsonl", "run1/samples_tiny_gen.jsonl"} <= keys
        assert any(k.startswith("tb/events.out.tfevents.") for k in keys)
        ours = json.loads(s3.get_object(Bucket="evals", Key="run1/results.json")["Body"].read())["results"]
        direct = lm_eval_directly(export, tmp_path / "direct")["results"]
        for task, metric in {"tiny_choice": "acc,none", "tiny_gen": "exact_match,none"}.items():
            assert ours[task][metric] == direct[task][metric]
    finally:
        server.stop()
