"""The evaluation recipe as lm-eval settings (adapter.evalspec): what plan shows and the job runs."""
from __future__ import annotations

import pytest

from adapter import evalspec
from adapter.reader import ConfigError


def recipe(**evaluation) -> dict:
    return {"run": {"name": "e", "results_dir": "/r/e", "model_name_or_path": "/m"},
            "evaluation": {"task": "mmlu", "strategy": "zs", "metric": "accuracy", **evaluation},
            "inference": {"max_new_tokens": 64, "temperature": 0.7, "top_k": 20, "top_p": 0.9}}


@pytest.mark.parametrize(("strategy", "subtask", "tasks", "shots"), [
    ("zs", "", ("mmlu",), 0),
    ("zs_cot", "anatomy", ("mmlu_flan_cot_zeroshot_anatomy",), 0),
    ("fs", "anatomy,virology", ("mmlu_anatomy", "mmlu_virology"), 5),
])
def test_hyperpods_task_maps_per_strategy(strategy: str, subtask: str, tasks: tuple, shots: int) -> None:
    cfg = evalspec.from_recipe(recipe(strategy=strategy, subtask=subtask))
    assert (cfg.tasks, cfg.num_fewshot, cfg.mapped_from) == (tasks, shots, "mmlu")
    assert cfg.results_dir == "/r/e/eval"


def test_zs_cot_takes_the_inference_settings_and_the_others_the_tasks_own() -> None:
    assert evalspec.from_recipe(recipe(strategy="zs_cot")).generation.kwargs() == {
        "do_sample": True, "temperature": 0.7, "max_gen_toks": 64, "top_p": 0.9, "top_k": 20}
    assert evalspec.from_recipe(recipe(strategy="zs")).generation is None


def test_fs_takes_num_fewshot_and_accuracy_names_the_metric_by_task_kind() -> None:
    cfg = evalspec.from_recipe(recipe(strategy="fs", num_fewshot=3))
    assert cfg.num_fewshot == 3
    assert (cfg.metric_names("multiple_choice"), cfg.metric_names("generate_until")) == (("acc",), ("exact_match",))


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"strategy": "cot"}, "evaluation.strategy", "'cot' is not a strategy"),
    ({"limit": "${oc.env:EVAL_LIMIT}"}, "evaluation.limit", "unresolved interpolation"),
    ({"batch_size": 0}, "evaluation.batch_size", "must be >= 1"),
    ({"num_fewshot": 2}, "evaluation.num_fewshot", "strategy zs is zero-shot"),
    ({"task": "ifeval", "strategy": "fs"}, "evaluation.strategy", "ifeval does not support strategy fs"),
    ({"task": ""}, "evaluation.task", "names no task"),
])
def test_every_refusal_is_at_its_key(change: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        evalspec.from_recipe(recipe(**change))
    assert any(e.key == key and words in e.message for e in exc.value.errors), exc.value


def test_every_refusal_is_reported_at_once_with_a_did_you_mean() -> None:
    """Read through the trainer's Reader: a recipe with several problems names them all."""
    with pytest.raises(ConfigError) as exc:
        evalspec.from_recipe(recipe(strategy="zs_cto", limit=0, batch_size="two"))
    found = {e.key: e for e in exc.value.errors}
    assert set(found) == {"evaluation.strategy", "evaluation.limit", "evaluation.batch_size"}
    assert "did you mean 'zs_cot'?" in found["evaluation.strategy"].hint


def test_the_schema_names_the_strategies_and_accelerators_evalspec_accepts() -> None:
    """The schema refuses at plan (with its did-you-mean) what evalspec refuses in the job: one list."""
    import json

    from adapter.devices import ACCELERATORS
    from hpctl.resources import builtin
    schema = json.loads((builtin("schemas") / "evaluation.schema.json").read_text())
    props = schema["properties"]
    assert set(props["evaluation"]["properties"]["strategy"]["enum"]) - {"", None} == set(evalspec.STRATEGIES)
    assert set(props["trainer"]["properties"]["accelerator"]["enum"]) == set(ACCELERATORS)


def test_the_llm_as_judge_section_is_refused_with_what_it_needs() -> None:
    with pytest.raises(ConfigError) as exc:
        evalspec.from_recipe({"run": {"name": "j"}, "llm_as_judge": {"metrics": ""}})
    assert exc.value.key == "llm_as_judge" and "judge model endpoint" in exc.value.message


@pytest.mark.parametrize(("section", "change", "key", "words"), [
    ("inference", {"top_p": 5}, "inference.top_p", "<= 1"),
    ("inference", {"top_k": "forty"}, "inference.top_k", "expected an integer"),
    ("inference", {"top_k": -2}, "inference.top_k", "must be >= -1"),
    ("inference", {"temperature": -0.5}, "inference.temperature", "expected a number >= 0"),
    ("trainer", {"accelerator": "gpux"}, "trainer.accelerator", "'gpux' is not supported"),
    ("output", {"mlflow_tracking_uri": "https://bob:hunter2@mlflow.example"}, "output.mlflow_tracking_uri",
     "carries a password"),
    ("output", {"mlflow_tracking_uri": "htps://mlflow.example"}, "output.mlflow_tracking_uri",
     "is not a tracking URI MLflow knows"),
])
def test_generation_and_tracking_values_are_the_trainers_rules(section: str, change: dict, key: str,
                                                                words: str) -> None:
    """top_p is a probability (the schema's bound, so the job refuses what plan refuses); the MLflow
    URI passes the trainer's rule (adapter.tracking_keys), which never lets a password into a plan or log."""
    r = recipe()
    r[section] = {**r.get(section, {}), **change}
    with pytest.raises(ConfigError) as exc:
        evalspec.from_recipe(r)
    assert any(e.key == key and words in e.message for e in exc.value.errors), exc.value
    assert "hunter2" not in str(exc.value)


@pytest.mark.slow
def test_the_job_says_what_is_wrong_in_one_line_without_a_traceback(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"recipes": recipe(strategy="cot")}))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path, words in ((tmp_path / "missing.json", "--config: cannot read"),
                        (broken, "is not valid JSON"),
                        (bad, "evaluation.strategy: 'cot' is not a strategy")):
        proc = subprocess.run([sys.executable, "-m", "adapter.evaluate", "--config", str(path)], cwd=repo,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert words in proc.stderr and proc.stderr.startswith("adapter: error: "), proc.stderr


def test_accuracy_scores_are_picked_by_each_tasks_kind_as_the_plan_named_them() -> None:
    """The rule the plan shows (metric_names) is the one the scores are read with: a generation
    task's accuracy is exact_match even where it also reports acc; a group's row, whose kind lm-eval
    does not record, shows whichever of the two it has."""
    output = {
        "results": {
            "gen": {"acc,none": 0.1, "exact_match,strict": 0.5, "exact_match_stderr,strict": 0.05, "alias": "gen"},
            "ll": {"acc,none": 0.7, "acc_stderr,none": 0.02, "exact_match,none": 0.3},
            "grp": {"acc,none": 0.6, "exact_match,none": 0.4},
        },
        "configs": {"gen": {"output_type": "generate_until"}, "ll": {"output_type": "multiple_choice"}},
    }
    rows = {(r["task"], r["metric"], r["filter"]): (r["value"], r["stderr"])
            for r in evalspec.score_rows(output, "accuracy")}
    assert rows == {("gen", "exact_match", "strict"): (0.5, 0.05), ("ll", "acc", "none"): (0.7, 0.02),
                    ("grp", "acc", "none"): (0.6, None), ("grp", "exact_match", "none"): (0.4, None)}
    assert len(evalspec.score_rows(output, "all")) == 6
    assert [r["task"] for r in evalspec.score_rows(output, "exact_match")] == ["gen", "grp", "ll"]
