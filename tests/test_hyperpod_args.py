"""HyperPod main.py's argument forms, read as HyperPod's Hydra launcher reads them.

The goldens in tests/golden/hyperpod_launcher were made by running HyperPod's own v2 launcher with the
same arguments (tests/golden/hyperpod_launcher/make.sh says how): which forms it accepts, what it
makes of a null list item, and what it refuses.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpctl.compose import compose
from hpctl.errors import HpctlError
from hpctl.workspace import Workspace
from helpers.workspace import SHARED

GOLDEN = Path(__file__).parent / "golden" / "hyperpod_launcher"
V2 = Workspace(SHARED / "peer-recipes" / "hyperpod")
V1 = Workspace(SHARED / "peer-recipes" / "hyperpod-v1")
LLMFT = ["recipes=fine-tuning/llama/llmft_llama3_1_8b_instruct_seq4k_gpu_dpo", "base_results_dir=/r", "cluster=k8s",
         "cluster_type=k8s", "container=example.com/img:1"]


def _hydra_says(args: str) -> list[str]:
    """What HyperPod's launcher printed for these arguments (golden)."""
    blocks = (GOLDEN / "hydra_forms.txt").read_text().split("## ")[1:]
    return next(b.splitlines()[1:] for b in blocks if b.splitlines()[0] == args)


def test_null_list_item_filled_and_hydra_keys_accepted_as_hyperpods_launcher_does() -> None:
    args = ("+cluster.persistent_volume_claims.0.claimName=fsx-claim +cluster.persistent_volume_claims.0.mountPath=/data "
            "hydra.job.chdir=True hydra.run.dir=. hydra.output_subdir=null")
    assert _hydra_says(args) == ["accepted: submission file created"]
    spec = compose([*LLMFT, *args.split()], workspace=V2)
    assert spec.get("cluster.persistent_volume_claims") == json.loads((GOLDEN / "persistent_volume_claims.json").read_text())
    assert "hydra" not in spec.data
    notes = [n for n in spec.notes if n.startswith("hydra.")]
    assert [n.split(":")[0] for n in notes] == ["hydra.job.chdir=True", "hydra.run.dir=.", "hydra.output_subdir=null"]
    assert all("changes nothing" in n for n in notes)


def test_setting_a_field_of_a_null_item_without_plus_is_refused_as_hydra_refuses_it() -> None:
    assert _hydra_says("cluster.persistent_volume_claims.0.claimName=fsx-claim")[-1] == "Key 'claimName' is not in struct"
    with pytest.raises(HpctlError) as e:
        compose([*LLMFT, "cluster.persistent_volume_claims.0.claimName=fsx-claim"], workspace=V2)
    assert "+cluster.persistent_volume_claims.0.claimName=fsx-claim" in e.value.render()


def test_an_unknown_hydra_key_is_refused_with_a_did_you_mean() -> None:
    assert _hydra_says("hydra.job.chdri=True")[-1] == "Key 'chdri' not in 'JobConf'"
    with pytest.raises(HpctlError) as e:
        compose([*LLMFT, "hydra.job.chdri=True"], workspace=V2)
    [p] = e.value.problems
    assert p.key == "hydra.job.chdri" and p.origin.override == 4 and "hydra.job.chdir" in p.hint


def test_root_run_name_is_read_as_the_recipes_with_a_note() -> None:
    """HyperPod's main.py refuses `run.name=` (its verl scripts pass it); the root has no `run`, so
    hpctl reads it as the recipe's, and says so."""
    assert _hydra_says("run.name=x")[-1] == "Key 'run' is not in struct"
    spec = compose([*LLMFT, "run.name=x"], workspace=V2)
    assert spec.job_name == "x" and "run" not in spec.data
    assert "run.name=x: read as recipes.run.name (the root has no 'run')" in spec.notes


def test_no_recipe_argument_plans_the_recipe_config_yaml_defaults_names() -> None:
    """HyperPod's tests/slurm_workflow call main.py without recipes=, as Hydra composes config.yaml."""
    spec = compose(["base_results_dir=/r", "container=/fsx/img.sqsh"], workspace=V1)
    assert spec.recipe_name == "training/llama/hf_llama3_8b_seq16k_gpu_p5x16_pretrain"
    assert spec.notes[0] == ("no recipes= given: the recipe is training/llama/hf_llama3_8b_seq16k_gpu_p5x16_pretrain, "
                             "from config.yaml's defaults")


def test_a_recipe_of_a_refused_family_is_refused_before_overrides_meant_for_it() -> None:
    """HyperPod's evaluation script overrides keys only an evaluation recipe has: the answer is the
    family's reason, not "key does not exist"."""
    with pytest.raises(HpctlError) as e:
        compose(["recipes=evaluation/open-source/open_source_llmaj_eval", "base_results_dir=/r",
                 "recipes.run.data_s3_path=s3://b/d"], workspace=V2)
    [p] = e.value.problems
    assert p.message.startswith("unsupported recipe: LLM-as-judge evaluation needs a judge model endpoint")
    assert str(p.origin).startswith("recipes/")


def test_hpctls_trainer_stands_in_for_hyperpods_llmft_module_unless_kept() -> None:
    from hpctl import entry, standin
    from hpctl.checks import runs_adapter
    args = [*LLMFT, "git.entry_module=amzn_awsllm_fine_tuning.train_hp", "git.use_default=false"]
    spec = compose(args, workspace=V2)
    assert runs_adapter(spec.data) and entry.entry_point(spec, "/r/x").program == entry.DEFAULT_PROGRAM
    assert entry.summary(spec.data) is None
    [note] = [n for n in spec.notes if "amzn_awsllm_fine_tuning.train_hp" in n]
    assert "hpctl's trainer (adapter.train)" in note and f"set {standin.KEEP_KEY}=true" in note
    kept = compose([*args, f"++{standin.KEEP_KEY}=true"], workspace=V2)
    assert not runs_adapter(kept.data)
    assert entry.entry_point(kept, "/r/x").program == ("-m", "amzn_awsllm_fine_tuning.train_hp")
    assert not any("train_hp" in n for n in kept.notes)


def test_an_llmft_plan_shows_precision_and_memory_as_the_trainer_trains_it() -> None:
    from hpctl.checks import memory_estimate
    from hpctl.plan import summarize
    spec = compose([*LLMFT, "git.entry_module=amzn_awsllm_fine_tuning.train_hp", "git.use_default=false",
                    "recipes.training_config.datasets.train_data.file_path=/fsx/train.jsonl"], workspace=V2)
    s = summarize(spec, memory_estimate(spec))
    assert s["precision"] == "bf16" and s["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert round(s["parameters"] / 1e9, 2) == 8.03 and s["memory_gb_per_device"] is not None
    assert "lora r16" in memory_estimate(spec).explain and "seq 4096" in memory_estimate(spec).explain
