"""Planning evaluation recipes: HyperPod's as written and hpctl's own; task, metric and strategy
checked against lm-eval's registry, each refusal at its file:line with a did-you-mean."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.workspace import SHARED

pytest.importorskip("lm_eval", reason="evaluation recipes need lm-eval (the evaluation extra)")

TASKS = Path(__file__).resolve().parent / "tasks"
HYPERPOD = SHARED / "peer-recipes" / "hyperpod"
DETERMINISTIC = "recipes=evaluation/open-source/open_source_deterministic_eval"

# Line numbers matter: errors point at them.
EVAL_RECIPE = """\
run:
  name: ev
  results_dir: ${{base_results_dir}}/${{.name}}
  model_name_or_path: {model}
evaluation:
  task: {tasks}
  subtask: {subtask}
  strategy: {strategy}
  metric: {metric}
inference:
  max_new_tokens: 4
  temperature: 0
"""


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """Stands for an exported model: planning a local job only looks for its config.json."""
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    return out


def workspace(tiny_workspace, model: Path, tasks: str = str(TASKS), subtask: str = "''", strategy: str = "zs",
              metric: str = "all") -> Path:
    text = EVAL_RECIPE.format(model=model, tasks=tasks, subtask=subtask, strategy=strategy, metric=metric)
    return tiny_workspace({"recipes/eval/ev.yaml": text})


def test_a_task_directory_plans_with_its_tasks(tiny_workspace, run_cli, model_dir: Path) -> None:
    ws = workspace(tiny_workspace, model_dir, metric="accuracy")
    code, out, err = run_cli("plan", "--workspace", ws, "eval/ev", "--json")
    assert code == 0, err
    ev = json.loads(out)["summary"]["evaluation"]
    assert ev["tasks"] == f"every task in {TASKS}" and ev["include_path"] == str(TASKS)
    assert ev["strategy"] == "zs" and ev["num_fewshot"] == 0 and ev["metric"] == "accuracy"
    assert "--nproc-per-node=1" in json.loads(out)["artifact"]["text"]
    assert "-m adapter.evaluate --config" in json.loads(out)["artifact"]["text"]


@pytest.mark.parametrize(("override", "line", "message", "hint"), [
    ("evaluation.subtask=tiny_gne", 7, "no task or group 'tiny_gne' in", "did you mean 'tiny_gen'?"),
    ("evaluation.metric=acx", 9, "tiny_choice does not report acx", "did you mean 'acc'?"),
    ("evaluation.strategy=zs_cto", 8, "value not allowed", "did you mean 'zs_cot'?"),
])
def test_a_bad_task_metric_or_strategy_is_a_plan_error_at_its_line(
        tiny_workspace, run_cli, model_dir: Path, override: str, line: int, message: str, hint: str) -> None:
    key, _, value = override.partition("=")
    ws = workspace(tiny_workspace, model_dir, **{key.split(".")[1]: value})
    code, _, err = run_cli("plan", "--workspace", ws, "eval/ev")
    assert code == 1
    assert f"recipes/eval/ev.yaml:{line}:" in err and message in err and hint in err, err


def test_a_strategy_the_task_does_not_support_is_a_plan_error(tiny_workspace, run_cli, model_dir: Path) -> None:
    ws = workspace(tiny_workspace, model_dir, subtask="tiny_choice", strategy="zs_cot")
    code, _, err = run_cli("plan", "--workspace", ws, "eval/ev")
    assert code == 1
    assert "recipes/eval/ev.yaml:8:" in err and "zs_cot (chain of thought) needs a task that generates text" in err
    assert "tiny_choice is scored by log-likelihood (multiple_choice)" in err


def test_a_model_that_is_not_a_model_directory_is_refused_for_a_local_job(tiny_workspace, run_cli,
                                                                          tmp_path: Path) -> None:
    ws = workspace(tiny_workspace, tmp_path / "nowhere")
    code, _, err = run_cli("plan", "--workspace", ws, "eval/ev")
    assert code == 1 and "recipes/eval/ev.yaml:4:" in err and "is not a Hugging Face model directory" in err


def test_hyperpods_deterministic_recipe_plans_as_its_launcher_script_passes_it(run_cli, model_dir: Path,
                                                                              tmp_path: Path) -> None:
    """run_open_source_deterministic_eval.sh's arguments (but hydra.job.chdir, issue 20's), with a
    local model and results: HyperPod's mmlu + zs_cot maps to lm-eval's CoT group, shown in the plan."""
    code, out, err = run_cli(
        "plan", "--workspace", HYPERPOD, "--json", "--cluster", "local", f"base_results_dir={tmp_path}",
        DETERMINISTIC, "recipes.run.name=deterministic-eval-job", f"recipes.run.model_name_or_path={model_dir}",
        "recipes.run.base_model_name=meta-textgeneration-llama-3-1-8b-instruct",
        "recipes.run.data_s3_path=s3://test-bucket/data", "recipes.evaluation.task=mmlu",
        "recipes.evaluation.strategy=zs_cot", "recipes.evaluation.metric=accuracy",
        "recipes.evaluation.subtask=abstract_algebra", f"recipes.output.eval_results_dir={tmp_path}/eval",
        f"recipes.output.eval_tensorboard_results_dir={tmp_path}/tb", "container=img", "cluster_type=local",
        "launch_json=true")
    assert code == 0, err
    ev = json.loads(out)["summary"]["evaluation"]
    assert ev["tasks"] == ["mmlu_flan_cot_zeroshot_abstract_algebra"]
    assert ev["mapping"] == "HyperPod mmlu (zs_cot) -> lm-eval mmlu_flan_cot_zeroshot_abstract_algebra"
    assert ev["generation"] == {"do_sample": False, "max_gen_toks": 2048, "temperature": 0.0}


def test_a_hyperpod_strategy_its_task_lacks_is_refused_with_the_ones_it_has(run_cli, model_dir: Path,
                                                                            tmp_path: Path) -> None:
    code, _, err = run_cli("plan", "--workspace", HYPERPOD, "--cluster", "local", f"base_results_dir={tmp_path}",
                           DETERMINISTIC, f"recipes.run.model_name_or_path={model_dir}", "cluster_type=local",
                           "recipes.evaluation.task=ifeval", "recipes.evaluation.strategy=fs")
    assert code == 1
    assert "override 5 (recipes.evaluation.strategy=fs): recipes.evaluation.strategy:" in err
    assert "HyperPod's task ifeval does not support strategy fs" in err and "use one of: zs" in err


def test_the_llm_as_judge_recipe_is_refused_naming_what_it_needs(run_cli, tmp_path: Path) -> None:
    """run_open_source_llmaj_eval.sh's arguments (but hydra.job.chdir): the refusal comes before the
    complaint that the recipe has no run.data_s3_path."""
    code, _, err = run_cli("plan", "--workspace", HYPERPOD, f"base_results_dir={tmp_path}",
                           "recipes=evaluation/open-source/open_source_llmaj_eval",
                           "recipes.run.data_s3_path=s3://test-bucket/data",
                           "recipes.output.eval_results_dir=s3://your-bucket/eval-results",
                           "recipes.output.eval_tensorboard_results_dir=s3://your-bucket/tensorboard",
                           "container=img", "cluster_type=k8s", "launch_json=true")
    assert code == 1
    assert "open_source_llmaj_eval.yaml:1:" in err and "needs a judge model endpoint" in err
    assert "Amazon Bedrock" in err and "open_source_deterministic_eval" in err


SAGEMAKER = ["--cluster", "sagemaker", "+cluster.role_arn=arn:aws:iam::123456789012:role/hpctl",
             "cluster.sm_jobs_config.output_path=s3://bucket/out", "cluster.region=us-west-2",
             "container=123456789012.dkr.ecr.us-west-2.amazonaws.com/hpctl:1", "instance_type=ml.g5.2xlarge",
             f"evaluation.task={TASKS}", "evaluation.metric=all"]


def test_a_sagemaker_evaluation_reads_its_model_from_a_channel_and_writes_to_the_jobs_output(
        tiny_workspace, run_cli) -> None:
    """The request passes botocore's model (render checks it); results land in the job's output."""
    ws = tiny_workspace()
    code, out, err = run_cli("plan", "--workspace", ws, "--json", "evaluation/lm_eval_task", *SAGEMAKER,
                             "run.model_name_or_path=/opt/ml/input/data/model",
                             "+cluster.sm_jobs_config.inputs.s3.model=s3://bucket/models/tiny")
    assert code == 0, err
    plan = json.loads(out)
    request = json.loads(plan["artifact"]["text"])
    assert request["AlgorithmSpecification"]["ContainerEntrypoint"] == ["python3", "-m", "adapter.sagemaker_launch"]
    assert {"ChannelName": "model"}.items() <= request["InputDataConfig"][1].items()
    ev = plan["summary"]["evaluation"]
    assert ev["results_dir"] == plan["summary"]["results_dir"] + "/output/output.tar.gz (eval/)"


@pytest.mark.parametrize(("extra", "message"), [
    (["run.model_name_or_path=/models/tiny"], "a SageMaker job reads its model from an input channel; /models/tiny"),
    (["run.model_name_or_path=/opt/ml/input/data/model", "+cluster.sm_jobs_config.inputs.s3.model=s3://b/m",
      "output.eval_results_dir=s3://elsewhere/eval"], "on SageMaker lm-eval's results go into the job's output"),
])
def test_sagemaker_refuses_a_model_or_results_it_cannot_carry(tiny_workspace, run_cli, extra, message) -> None:
    code, _, err = run_cli("plan", "--workspace", tiny_workspace(), "evaluation/lm_eval_task", *SAGEMAKER, *extra)
    assert code == 1 and message in err, err


def test_kubernetes_runs_hyperpods_recipe_as_lm_eval(run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli("plan", "--workspace", HYPERPOD, "--json", f"base_results_dir={tmp_path}", DETERMINISTIC,
                             "recipes.run.model_name_or_path=/fsx/models/tiny", "recipes.evaluation.subtask=anatomy",
                             "cluster=k8s", "cluster_type=k8s", "container=example.com/img:1")
    assert code == 0, err
    text = json.loads(out)["artifact"]["text"]
    assert 'kind: "HyperPodPyTorchJob"' in text
    assert '"--nproc-per-node=1", "--rdzv-backend=hyperpod", "--tee=3", "-m", "adapter.evaluate"' in text
    assert '"model_name_or_path": "/fsx/models/tiny"' in text


def test_the_sagemaker_container_runs_lm_eval_and_keeps_its_files_in_the_output() -> None:
    from adapter import sagemaker_launch
    spec = {"recipes": {"run": {"name": "e", "results_dir": "/r", "model_name_or_path": "/opt/ml/input/data/m"},
                        "evaluation": {"task": "x"}, "output": {"eval_results_dir": "", "eval_tensorboard_results_dir": "s3://t"}}}
    out = sagemaker_launch.container_spec(spec, "/opt/ml/output/tensorboard")["recipes"]["output"]
    assert out == {"eval_results_dir": "/opt/ml/output/data/eval", "eval_tensorboard_results_dir": "/opt/ml/output/tensorboard"}


def test_the_deterministic_script_with_its_s3_defaults_plans_on_kubernetes(run_cli, tmp_path: Path) -> None:
    """The script's defaults: an s3:// model and s3:// results (the job copies them with boto3).
    `cluster=k8s` picks HyperPod's k8s cluster file, which its Hydra defaults leave at slurm."""
    code, out, err = run_cli(
        "plan", "--workspace", HYPERPOD, "--json", f"base_results_dir={tmp_path}", DETERMINISTIC,
        "recipes.run.name=deterministic-eval-job", "recipes.run.model_name_or_path=s3://my-model-path/test",
        "recipes.run.base_model_name=meta-textgeneration-llama-3-1-8b-instruct",
        "recipes.run.data_s3_path=s3://test-bucket/data", "recipes.evaluation.task=mmlu",
        "recipes.evaluation.strategy=zs_cot", "recipes.evaluation.metric=accuracy",
        "recipes.evaluation.subtask=abstract_algebra", "recipes.output.eval_results_dir=s3://your-bucket/eval-results",
        "recipes.output.eval_tensorboard_results_dir=s3://your-bucket/tensorboard",
        "container=885173626742.dkr.ecr.us-west-2.amazonaws.com/cjz-eval-poc:s3-util-log", "cluster=k8s",
        "cluster_type=k8s", "launch_json=true")
    assert code == 0, err
    ev = json.loads(out)["summary"]["evaluation"]
    assert (ev["model"], ev["results_dir"]) == ("s3://my-model-path/test", "s3://your-bucket/eval-results")
