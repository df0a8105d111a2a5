"""HyperPod v2's scale_config: the preset for the chosen node count is merged into the recipe,
with provenance, below command-line overrides."""
from __future__ import annotations

from pathlib import Path

import pytest

from hpctl.compose import compose
from hpctl.workspace import Workspace

V2 = Path(__file__).resolve().parents[1] / ".." / "shared" / "peer-recipes" / "hyperpod"
RECIPE = "fine-tuning/llama/llmft_llama3_2_3b_instruct_seq4k_gpu_dpo"
ARGS_KEY = "recipes.training_config.training_args"


def _compose(tmp_path: Path, *overrides: str):
    if not (V2 / "recipes").is_dir():
        pytest.skip(f"the HyperPod v2 recipe collection is absent ({V2.resolve()})")
    return compose([f"recipes={RECIPE}", "cluster=slurm", f"base_results_dir={tmp_path}", *overrides],
                   workspace=Workspace(V2))


def test_preset_for_the_chosen_node_count_is_merged_with_provenance(tmp_path: Path) -> None:
    spec = _compose(tmp_path, "recipes.trainer.num_nodes=8")
    presets = spec.data["recipes"]["scale_config"]
    table = (presets.get(8) or presets["8"])["training_config"]["training_args"]
    args = spec.data["recipes"]["training_config"]["training_args"]
    assert args["micro_train_batch_size"] == table["micro_train_batch_size"] == 2
    assert args["learning_rate"] == table["learning_rate"]
    where = str(spec.provenance[f"{ARGS_KEY}.micro_train_batch_size"][0])
    assert where.startswith("recipes/fine-tuning/llama/llmft_llama3_2_3b_instruct_seq4k_gpu_dpo.yaml:")
    assert where.endswith("(from scale_config for 8 nodes)"), where


def test_override_beats_the_preset_and_a_count_without_preset_changes_nothing(tmp_path: Path) -> None:
    spec = _compose(tmp_path, "recipes.trainer.num_nodes=8", f"{ARGS_KEY}.micro_train_batch_size=3")
    assert spec.data["recipes"]["training_config"]["training_args"]["micro_train_batch_size"] == 3
    assert str(spec.provenance[f"{ARGS_KEY}.micro_train_batch_size"][0]).startswith("override ")
    plain = _compose(tmp_path, "recipes.trainer.num_nodes=3")  # no entry for 3 nodes
    assert not any("scale_config for" in str(chain[0]) for chain in plain.provenance.values())
