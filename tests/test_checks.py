"""Pre-flight checks: each one passing and failing, what it says, and the keys it names."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpctl import checks
from hpctl.checks import CHECKS, Check, HostInfo, detect_host, device_memory_gb, memory_estimate, run_checks
from hpctl.memory import estimate
from hpctl.spec import Spec

REPO = Path(__file__).resolve().parents[1]

# 2 nodes x 8 GPUs on a Slurm cluster of 8-GPU, 80 GB nodes; a 1.2B Llama that fits comfortably.
BASE = {
    "cluster_type": "slurm",
    "cluster": {"type": "slurm", "devices_per_node": 8, "device_memory_gb": 80},
    "recipes": {
        "run": {"name": "base", "results_dir": "/results/base"},
        "trainer": {"num_nodes": 2, "devices": 8, "accelerator": "gpu", "precision": "bf16", "max_steps": 10},
        "model": {
            "data": {"use_synthetic_data": True},
            "model_type": "llama_v3", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True,
            "train_batch_size": 2, "max_context_width": 2048, "max_position_embeddings": 8192,
            "tensor_model_parallel_degree": 1, "expert_model_parallel_degree": 1, "context_parallel_degree": 1,
            "sharding_strategy": "full_shard", "shard_degree": None, "activation_checkpointing": True,
            "precision": "bf16", "global_batch_size": None,
        },
    },
}
LOCAL = {"type": "local", "devices_per_node": None, "device_memory_gb": None, "nproc_per_node": None}
HOST = HostInfo(cpu_count=2, gpu_count=0, memory_gb=24.0)


def make(cluster: dict | None = None, **overrides) -> Spec:
    """BASE with dotted-path overrides, e.g. make(**{"recipes.model.shard_degree": 3})."""
    data = copy.deepcopy(BASE)
    if cluster is not None:
        data["cluster"], data["cluster_type"] = cluster, cluster["type"]
    for path, value in overrides.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return Spec(data)


def only(spec: Spec, check_id: str, host: HostInfo | None = HOST) -> list[Check]:
    return [c for c in run_checks(spec, host) if c.id == check_id]


def test_the_base_spec_passes_with_only_the_memory_estimate_to_report():
    found = run_checks(make(), HOST)
    assert [(c.id, c.severity) for c in found] == [("memory", "info")]
    assert found[0].message.startswith("memory estimate ") and "of 80.0 GB" in found[0].message


def test_every_check_is_registered_once_and_one_run_reports_them_all():
    assert len(CHECKS) == len(set(CHECKS)) == 8
    spec = make(**{"recipes.model.tensor_model_parallel_degree": 3, "recipes.model.max_context_width": 16384,
                   "recipes.trainer.devices": 9, "cluster.device_memory_gb": 1})
    found = run_checks(spec, HOST)
    assert [c.id for c in found] == ["trainer", "trainer", "host-capacity", "memory"]
    assert {c.severity for c in found} == {"error"}


# --- the trainer's own rules, asked at plan time -------------------------------------------------
# adapter.config owns them (tests/adapter/test_config.py); these show that the check asks it with
# the world size this plan launches, and that each refusal is located at its recipe key.

def trainer(spec: Spec) -> list[Check]:
    return only(spec, "trainer")


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_tensor_parallel_dividing_the_world_and_the_heads_passes(tp):
    assert trainer(make(**{"recipes.model.tensor_model_parallel_degree": tp})) == []


def test_tensor_parallel_not_dividing_the_world_is_refused_at_its_key():
    [c] = trainer(make(**{"recipes.model.tensor_model_parallel_degree": 8, "recipes.trainer.devices": 6}))
    assert c.severity == "error" and c.keys == ["recipes.model.tensor_model_parallel_degree"]
    assert "does not divide the world size 12" in c.message and c.hint
    [c] = trainer(make(**{"recipes.model.tensor_model_parallel_degree": 3}))
    assert "3 does not divide model.num_attention_heads (32)" in c.message


def test_the_world_size_of_a_local_cluster_is_its_nproc_per_node():
    spec = make(cluster=dict(LOCAL, nproc_per_node=3), **{"recipes.trainer.num_nodes": 1,
                                                          "recipes.trainer.accelerator": "cpu",
                                                          "recipes.trainer.precision": "32",
                                                          "recipes.model.tensor_model_parallel_degree": 2})
    assert checks.world_size(spec) == 3
    [c] = trainer(spec)
    assert "does not divide the world size 3" in c.message


@pytest.mark.parametrize("shard", [None, 1, 8, 16])
def test_a_shard_degree_dividing_the_data_parallel_ranks_passes(shard):
    assert trainer(make(**{"recipes.model.sharding_strategy": "hybrid_shard", "recipes.model.shard_degree": shard})) == []


def test_a_shard_degree_not_dividing_the_data_parallel_ranks_is_refused():
    [c] = trainer(make(**{"recipes.model.sharding_strategy": "hybrid_shard", "recipes.model.shard_degree": 6}))
    assert c.keys == ["recipes.model.shard_degree"] and "must divide the data-parallel size 16" in c.message


@pytest.mark.parametrize("global_batch,tp", [(None, 1), (32, 1), (64, 1), (16, 2), (48, 2)])
def test_a_global_batch_in_whole_micro_batches_passes(global_batch, tp):
    spec = make(**{"recipes.model.global_batch_size": global_batch, "recipes.model.tensor_model_parallel_degree": tp})
    assert trainer(spec) == []


def test_a_global_batch_not_in_whole_micro_batches_names_the_nearest_valid_ones():
    [c] = trainer(make(**{"recipes.model.global_batch_size": 48}))
    assert c.keys == ["recipes.model.global_batch_size"]
    assert "48 is not a multiple of model.train_batch_size x data-parallel size (2 x 16 = 32)" in c.message
    assert c.hint == "nearest valid: 32 or 64"
    [c] = trainer(make(**{"recipes.model.global_batch_size": 20, "recipes.model.tensor_model_parallel_degree": 4}))
    assert "(2 x 4 = 8)" in c.message and c.hint == "nearest valid: 16 or 24"


def test_a_sequence_beyond_the_position_embeddings_is_refused():
    assert trainer(make(**{"recipes.model.max_context_width": 8192})) == []
    [c] = trainer(make(**{"recipes.model.max_context_width": 16384}))
    assert c.keys == ["recipes.model.max_context_width"]
    assert "16384 exceeds model.max_position_embeddings (8192)" in c.message


def test_every_refusal_is_reported_at_once():
    found = trainer(make(**{"recipes.model.sharding_strategy": "zero3", "recipes.trainer.val_check_interval": 0,
                            "recipes.model.optim": {"lr": float("nan")}, "recipes.model.num_key_value_heads": 5}))
    assert sorted(c.keys[0] for c in found) == ["recipes.model.num_key_value_heads", "recipes.model.optim.lr",
                                                "recipes.model.sharding_strategy", "recipes.trainer.val_check_interval"]


def test_a_custom_entry_point_is_not_held_to_the_trainers_rules():
    spec = make(**{"recipes.model.sharding_strategy": "zero3"})
    assert trainer(spec) != []
    spec.data["git"] = {"entry_script": "/code/train.py"}
    assert trainer(spec) == []


# --- host capacity ------------------------------------------------------------------------------

def test_slurm_nodes_with_enough_devices_pass():
    assert only(make(), "host-capacity") == []


def test_more_devices_than_a_slurm_node_has_is_an_error():
    [c] = only(make(**{"recipes.trainer.devices": 16}), "host-capacity")
    assert c.severity == "error"
    assert "trainer.devices is 16 but the cluster's nodes have 8 devices" in c.message
    assert c.keys == ["recipes.trainer.devices", "cluster.devices_per_node"]


def test_k8s_is_checked_like_slurm_and_an_unknown_node_size_is_only_noted():
    k8s = {"type": "k8s", "devices_per_node": 4, "device_memory_gb": 80}
    assert only(make(cluster=k8s), "host-capacity")[0].severity == "error"
    [c] = only(make(cluster=dict(k8s, devices_per_node=None)), "host-capacity")
    assert c.severity == "info" and "cluster.devices_per_node is not set" in c.message


def local_spec(devices: int, accelerator: str, **cluster) -> Spec:
    return make(cluster=dict(LOCAL, **cluster), **{"recipes.trainer.num_nodes": 1, "recipes.trainer.devices": devices,
                                                   "recipes.trainer.accelerator": accelerator})


def test_local_cpu_processes_within_the_cpu_count_pass():
    assert only(local_spec(2, "cpu"), "host-capacity") == []


def test_local_cpu_processes_beyond_the_cpu_count_are_a_warning():
    [c] = only(local_spec(4, "cpu"), "host-capacity")
    assert c.severity == "warning"
    assert "4 processes on 2 CPUs" in c.message
    assert c.keys == ["recipes.trainer.devices", "recipes.trainer.accelerator"]


def test_local_gpu_processes_need_that_many_gpus():
    [c] = only(local_spec(2, "gpu"), "host-capacity", HostInfo(cpu_count=16, gpu_count=1, memory_gb=64.0))
    assert c.severity == "error" and "starts 2 GPU processes but this machine has 1" in c.message
    assert only(local_spec(2, "gpu"), "host-capacity", HostInfo(cpu_count=16, gpu_count=2, memory_gb=64.0)) == []


def test_local_devices_per_node_overrides_detection():
    [c] = only(local_spec(4, "gpu", devices_per_node=2), "host-capacity", HostInfo(16, 8, 64.0))
    assert "has 2 (cluster.devices_per_node)" in c.message
    assert c.keys == ["recipes.trainer.devices", "cluster.devices_per_node"]


def test_local_nproc_per_node_is_what_is_started():
    [c] = only(local_spec(1, "cpu", nproc_per_node=3), "host-capacity")
    assert "3 processes on 2 CPUs" in c.message and c.keys[0] == "cluster.nproc_per_node"


def test_a_local_cluster_cannot_run_several_nodes():
    spec = make(cluster=LOCAL, **{"recipes.trainer.num_nodes": 2, "recipes.trainer.devices": 1,
                                  "recipes.trainer.accelerator": "cpu"})
    [c] = only(spec, "host-capacity")
    assert c.severity == "error" and "num_nodes is 2" in c.message and c.keys == ["recipes.trainer.num_nodes"]


# --- memory -------------------------------------------------------------------------------------

def test_memory_within_the_device_is_info_with_the_estimate():
    [c] = only(make(), "memory")
    est = estimate(make().data, 80.0)
    assert c.severity == "info" and est.explain in c.message
    assert "cluster.device_memory_gb" in c.keys and "recipes.model.train_batch_size" in c.keys


def test_memory_above_the_device_is_an_error_with_what_to_change():
    [c] = only(make(**{"cluster.device_memory_gb": 8}), "memory")
    assert c.severity == "error"
    assert "needs more memory than the device has (cluster.device_memory_gb)" in c.message
    assert "of 8.00 GB" in c.message and "activation_checkpointing" in c.message
    assert c.keys[0] == "recipes.model.train_batch_size"


def test_memory_above_ninety_percent_is_a_warning():
    total = estimate(make().data, None).total_gb
    [c] = only(make(**{"cluster.device_memory_gb": total / 0.95}), "memory")
    assert c.severity == "warning" and "over 90%" in c.message and "(95%)" in c.message


def test_memory_without_a_device_size_is_info_asking_for_one():
    [c] = only(make(**{"cluster.device_memory_gb": None}), "memory")
    assert c.severity == "info" and "set cluster.device_memory_gb" in c.message


def test_memory_of_a_recipe_without_architecture_is_info():
    spec = make(**{"recipes.model": {"model_type": "llama_v3", "hf_model_name_or_path": "/models/x",
                                     "train_batch_size": 1, "max_context_width": 2048}})
    [c] = only(spec, "memory")
    assert c.severity == "info" and "no estimate" in c.message and "set cluster.device_memory_gb" not in c.message


def test_local_cpu_memory_is_the_host_memory_shared_by_its_processes():
    spec = local_spec(2, "cpu")
    assert device_memory_gb(spec, HOST) == (12.0, "host memory 24.0 GB / 2 processes")
    tight = HostInfo(cpu_count=2, gpu_count=0, memory_gb=4.0)
    [c] = only(spec, "memory", tight)
    assert c.severity == "error" and "(host memory 4.0 GB / 2 processes)" in c.message
    assert "cluster.device_memory_gb" not in c.keys


def test_local_gpu_memory_is_detected_and_the_cluster_setting_wins():
    host = HostInfo(cpu_count=16, gpu_count=1, memory_gb=128.0, gpu_memory_gb=81.5)
    assert device_memory_gb(local_spec(1, "gpu"), host) == (81.5, "GPU memory found by nvidia-smi")
    assert device_memory_gb(local_spec(1, "gpu", device_memory_gb=40), host) == (40.0, "cluster.device_memory_gb")
    assert device_memory_gb(local_spec(1, "gpu"), HOST) == (None, "")


def test_memory_estimate_is_the_one_the_check_reports():
    spec = local_spec(2, "cpu")
    assert memory_estimate(spec, HOST).explain in only(spec, "memory")[0].message


# --- the machine --------------------------------------------------------------------------------

def test_checks_tolerate_wrong_types_the_schema_reports():
    """Only the trainer's config speaks of wrong types (it reads every key it uses); the launcher's
    own checks skip what they cannot read instead of failing."""
    spec = make(**{"recipes.model.tensor_model_parallel_degree": "two", "recipes.trainer.devices": None,
                   "recipes.model.global_batch_size": 3.5, "recipes.model.max_context_width": "long"})
    found = [c for c in run_checks(spec, HOST) if c.severity == "error"]
    assert sorted(c.keys[0] for c in found) == ["recipes.model.global_batch_size", "recipes.model.max_context_width",
                                                "recipes.model.tensor_model_parallel_degree"]
    assert {c.id for c in found} == {"trainer"}


@pytest.mark.slow
def test_detect_host_reads_the_machine_without_torch():
    script = ("import sys, json; sys.path.insert(0, sys.argv[1]); from hpctl.checks import detect_host; "
              "h = detect_host(); import hpctl.memory, adapter.modelsize; "
              "print(json.dumps([h.cpu_count, h.gpu_count, h.memory_gb, "
              "sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'kubernetes'))]))")
    out = subprocess.run([sys.executable, "-c", script, str(REPO)], capture_output=True, text=True, timeout=60, check=True)
    cpus, gpus, mem, heavy = json.loads(out.stdout)
    assert cpus >= 1 and gpus >= 0 and mem > 0.1 and heavy == []


def test_run_checks_detects_the_host_only_for_local_clusters(monkeypatch):
    calls = []
    monkeypatch.setattr(checks, "detect_host", lambda: calls.append(1) or HOST)
    run_checks(make())
    assert calls == []
    run_checks(local_spec(1, "cpu"))
    assert calls == [1]


def test_detected_host_is_sane():
    host = detect_host()
    assert host.cpu_count >= 1 and (host.memory_gb or 0) > 0
    assert (host.gpu_count == 0) == (host.gpu_memory_gb is None)


def test_activation_offloading_is_stated_as_info():
    """The trainer accepts it everywhere; the plan says what it does (nothing on a CPU-only run)."""
    [c] = trainer(make(**{"recipes.model.offload_activations": True}))
    assert c.severity == "info" and "on a CPU-only run" in c.message
    assert c.keys == ["recipes.model.offload_activations"]


# --- HyperPod's slurm_docker_cfg: refused where pyxis would ignore it (hpctl/slurm_docker.py) ------

def test_slurm_docker_cfg_values_are_refused_at_their_key_with_pyxis_equivalents():
    spec = make(**{"cluster_type": "slurm", "container": "example.com/img:1",
                   "cluster.slurm_docker_cfg": {"docker_args": ["-v /fsx:/fsx", "--privileged"],
                                                "post_launch_commands": ["echo hi"]}})
    found = only(spec, "slurm-docker")
    assert [c.keys for c in found] == [["cluster.slurm_docker_cfg.docker_args"],
                                       ["cluster.slurm_docker_cfg.post_launch_commands"]]
    assert "-v -> cluster.container_mounts" in found[0].hint and "Docker on each node" in found[0].message
    empty = make(**{"cluster_type": "slurm", "cluster.slurm_docker_cfg": {"docker_args": [None],
                                                                          "post_launch_commands": None}})
    assert only(empty, "slurm-docker") == []
