"""The instance catalogue: what it fills, the environment every backend sets from it, the checks
that compare a job against it, and parity with HyperPod's launcher for its v1 flagship."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from adapter.rank_prefix import PREFIX_VAR, rank_prefix_env
from hpctl import compat, instances
from hpctl.backends import get_backend
from hpctl.backends.common import NCCL_ENV, job_env, network_summary
from hpctl.checks import run_checks
from hpctl.compose import compose
from hpctl.errors import HpctlError
from hpctl.plan import build
from hpctl.state import State
from hpctl.validate import validate
from hpctl.workspace import Workspace

GOLDEN = Path(__file__).parent / "fixtures" / "hyperpod_launcher" / "llama3_8b_p5x16.json"
FIXED = ["base_results_dir=/results", "container=example.com/img:1", "cluster.python=python3"]
PER_CLUSTER = {"slurm": ["cluster.workdir=/opt/hpctl"], "k8s": [], "local": []}
FLAGSHIP = "training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain"


@pytest.fixture
def hyperpod_launcher(shared_dir: Path) -> Path:
    root = shared_dir / "peer-launchers" / "hyperpod-v1"
    if not (root / "launcher" / "efa.py").is_file():
        pytest.skip(f"{root} is absent: HyperPod's launcher tables are needed for this test")
    return root


def _spec(tmp_path: Path, cluster: str, *args: str, recipe: str = "llama3_1_8b_pretrain"):
    return compose([recipe, *FIXED, *PER_CLUSTER[cluster], *args], cluster, Workspace(tmp_path), env={})


def _k8s_container(text: str) -> dict:
    docs = [d for d in YAML(typ="safe").load_all(text) if d]
    job = next(d for d in docs if d["kind"] == "PyTorchJob")
    return job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]


def _sbatch_exports(text: str) -> dict[str, str]:
    return {k: v.strip("'") for k, v in re.findall(r"^export (\w+)=(\S*)", text, re.M)}


# --- the catalogue ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,devices,memory,efa,rdma", [
    ("p4d.24xlarge", 8, 40, 4, True), ("ml.p4de.24xlarge", 8, 80, 4, True), ("p5.48xlarge", 8, 80, 32, True),
    ("p5e.48xlarge", 8, 141, 32, True), ("p5en.48xlarge", 8, 141, 16, True), ("p6-b200.48xlarge", 8, 180, 8, True),
    ("g5.xlarge", 1, 24, 0, False), ("g5.48xlarge", 8, 24, 1, False), ("g6.12xlarge", 4, 24, 1, False),
    ("gr6.4xlarge", 1, 24, 0, False), ("gr6.8xlarge", 1, 24, 1, False),
    ("g6e.48xlarge", 8, 48, 4, False), ("ML.G6E.24XLARGE", 4, 48, 2, False),
])
def test_catalogue_facts_in_either_spelling(name, devices, memory, efa, rdma):
    found = instances.lookup(name)
    assert (found.devices, found.device_memory_gb, found.efa, found.gpudirect_rdma) == (devices, memory, efa, rdma)


def test_catalogue_agrees_with_hyperpods_tables(hyperpod_launcher):
    """Every accelerated type HyperPod's launcher lists (its accelerator table, and the GPU and
    Trainium types of its EFA tables) is here or refused, with the same accelerator and EFA counts
    and GPUDirect RDMA. HyperPod's efa.py INSTANCE_TO_DEVICE_COUNT says 2 GPUs for g6e.12xlarge
    where its accelerator_devices.py (and AWS) say 4: the accelerator table is the one compared."""
    ns: dict = {}
    exec((hyperpod_launcher / "launcher" / "efa.py").read_text(), ns)
    exec((hyperpod_launcher / "launcher" / "accelerator_devices.py").read_text(), ns)
    compared = 0
    for name, instance in instances.CATALOGUE.items():
        if name not in ns["acceleratorDevices"]:
            continue  # newer than HyperPod's v1 tables (p6-b200)
        assert instance.devices == ns["acceleratorDevices"][name], name
        efa = 0 if name not in ns["efa_supported_instance"] else ns["instanceWithMultipleEFAs"].get(name, 1)
        assert instance.efa == efa, name
        assert instance.gpudirect_rdma == (name in ns["instanceWithRDMASupport"]), name
        compared += 1
    assert compared == len(instances.CATALOGUE) - 1  # all but p6-b200
    listed = {*ns["acceleratorDevices"], *ns["instanceWithMultipleEFAs"], *ns["instanceWithRDMASupport"]}
    # Named only in the multi-EFA and RDMA tables: HyperPod's launcher knows neither their accelerators
    # nor (efa_supported_instance lacks them) any EFA, so it cannot launch them either; hpctl leaves
    # them out (leave instance_type unset and set the cluster's numbers).
    half_listed = listed - set(ns["acceleratorDevices"]) - ns["efa_supported_instance"]
    assert half_listed == {"p5.4xlarge", "p5.24xlarge"}
    for name in sorted(listed - half_listed):
        assert instances.lookup(name) or instances.refusal(name), name


@pytest.mark.parametrize("name,kind", [("trn1.32xlarge", "trainium"), ("ml.trn2.48xlarge", "trainium"),
                                       ("inf2.48xlarge", "inferentia"), ("p5.48xlarge", None)])
def test_trainium_and_inferentia_are_refused_through_the_catalogue(name, kind):
    found = compat.refusal({"instance_type": name, "recipes": {"run": {"model_type": "hf"}}})
    assert (found.kind if found else None) == kind
    assert (instances.refusal(name) or (None,))[0] == kind


# --- filling the cluster ------------------------------------------------------------------------

def test_instance_type_fills_the_cluster_with_provenance(tmp_path):
    spec = _spec(tmp_path, "k8s", "instance_type=ml.g6e.48xlarge")
    assert (spec.get("cluster.devices_per_node"), spec.get("cluster.device_memory_gb"),
            spec.get("cluster.efa_per_node")) == (8, 48, 4)
    origin = spec.origin("cluster.device_memory_gb")
    assert str(origin) == "override 4 (instance_type=ml.g6e.48xlarge) (from instance type g6e.48xlarge)"
    assert spec.provenance_json()["cluster.efa_per_node"][0]["via"] == "from instance type g6e.48xlarge"


def test_the_users_cluster_values_win_over_the_instance(tmp_path):
    (tmp_path / "clusters").mkdir()
    builtin = Path(__file__).resolve().parents[1] / "clusters" / "slurm.yaml"
    text = builtin.read_text().replace("devices_per_node: 8", "devices_per_node: 4")
    (tmp_path / "clusters" / "slurm.yaml").write_text(text)
    spec = _spec(tmp_path, "slurm", "instance_type=p5.48xlarge", "cluster.device_memory_gb=70")
    assert spec.get("cluster.devices_per_node") == 4  # the workspace's own cluster file
    assert spec.get("cluster.device_memory_gb") == 70  # an override
    assert spec.get("cluster.efa_per_node") == 0  # the workspace's file says 0 (no EFA device plugin, say)
    assert spec.origin("cluster.devices_per_node").via is None


def test_efa_set_to_zero_by_the_user_turns_the_network_environment_off(tmp_path):
    spec = _spec(tmp_path, "slurm", "instance_type=p5.48xlarge", "cluster.efa_per_node=0")
    assert {v.name for v in job_env(spec)} == {"NCCL_DEBUG"}


# --- the launch environment ---------------------------------------------------------------------

def test_every_backend_sets_the_efa_environment_and_the_user_wins(tmp_path):
    args = ["instance_type=p5.48xlarge", "recipes.trainer.num_nodes=1", "+env_vars.NCCL_SOCKET_IFNAME=eth0",
            "+cluster.env.TORCH_DIST_INIT_BARRIER=0"]
    expected = {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", **NCCL_ENV,
                "NCCL_SOCKET_IFNAME": "eth0", "TORCH_DIST_INIT_BARRIER": "0"}
    for cluster in ("local", "slurm", "k8s"):
        spec = _spec(tmp_path, cluster, *args, *(["cluster.nproc_per_node=1", "recipes.trainer.devices=1",
                                                  "recipes.trainer.accelerator=cpu"] if cluster == "local" else []))
        text = get_backend(spec.cluster_type).render(spec).text
        if cluster == "k8s":
            env = {e["name"]: e.get("value") for e in _k8s_container(text)["env"]}
            assert _k8s_container(text)["resources"]["requests"]["vpc.amazonaws.com/efa"] == "32"
        else:
            env = _sbatch_exports(text)
        assert {k: env.get(k) for k in expected} == expected, cluster
        assert ("env_vars.NCCL_SOCKET_IFNAME overrides the default '^lo,docker0,veth_def_agent' "
                "from instance type p5.48xlarge") in text, cluster
        assert "cluster.env.TORCH_DIST_INIT_BARRIER overrides the default '1'" in text, cluster
    summary = network_summary(spec)
    assert summary.startswith("p5.48xlarge: 8 x H100 80 GB, 32 EFA with GPUDirect RDMA")
    assert "overridden: NCCL_SOCKET_IFNAME, TORCH_DIST_INIT_BARRIER" in summary


def test_hpctls_rank_prefix_is_exported_after_the_users_environment(tmp_path):
    """`hpctl logs --rank` reads the prefix torchrun writes from PREFIX_VAR: a user's value of it
    would make `--rank` show nothing, so the scripts export hpctl's value last (Kubernetes: see
    test_k8s_render)."""
    for cluster in ("local", "slurm"):
        spec = _spec(tmp_path, cluster, f"+env_vars.{PREFIX_VAR}=mine",
                     *(["cluster.nproc_per_node=1", "recipes.trainer.devices=1",
                        "recipes.trainer.accelerator=cpu"] if cluster == "local" else []))
        exports = re.findall(rf"^export {PREFIX_VAR}=(.*?)(?:  #.*)?$", get_backend(spec.cluster_type).render(spec).text, re.M)
        assert exports[0] == "mine" and exports[-1] == shlex.quote(rank_prefix_env()[PREFIX_VAR]), cluster


def test_a_null_user_value_removes_a_default_and_the_plan_says_so(tmp_path):
    spec = _spec(tmp_path, "slurm", "instance_type=p5.48xlarge", "+env_vars.CUDA_DEVICE_MAX_CONNECTIONS=null")
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in {v.name for v in job_env(spec)}
    assert "removed: CUDA_DEVICE_MAX_CONNECTIONS" in network_summary(spec)


def test_no_efa_no_network_environment_and_sagemaker_gets_none(tmp_path):
    spec = _spec(tmp_path, "slurm", "instance_type=g5.2xlarge", "recipes.trainer.devices=1",
                 "recipes.trainer.num_nodes=1")
    assert [v.name for v in job_env(spec)] == ["NCCL_DEBUG"]
    spec = _spec(tmp_path, "slurm", "instance_type=p5.48xlarge")
    assert [v.name for v in job_env(spec, platform_network=True)] == ["NCCL_DEBUG"]
    assert network_summary(spec, platform_network=True).endswith(
        "the platform provides EFA and its NCCL environment; hpctl sets none")


def test_sagemaker_sends_no_network_environment_and_its_plan_says_the_platform_provides_it(tmp_path, run_cli):
    """The SageMaker backend itself (not job_env's flag alone): its request's Environment has none of
    the EFA/NCCL defaults on an EFA instance, the user's own value still goes, and the plan says why."""
    rc, out, err = run_cli("plan", "--json", "tiny_llama", "--cluster", "sagemaker", "-w", tmp_path,
                           "instance_type=ml.p5.48xlarge", "base_results_dir=/results",
                           "cluster.image=123456789012.dkr.ecr.us-east-1.amazonaws.com/hpctl:1",
                           "cluster.role_arn=arn:aws:iam::123456789012:role/hpctl",
                           "cluster.sm_jobs_config.output_path=s3://bucket/out", "+env_vars.NCCL_SOCKET_IFNAME=eth0")
    assert rc == 0, err
    plan = json.loads(out)
    environment = json.loads(plan["artifact"]["text"])["Environment"]
    assert environment["NCCL_SOCKET_IFNAME"] == "eth0"
    assert not ({"FI_PROVIDER", "FI_EFA_USE_DEVICE_RDMA", *NCCL_ENV} - {"NCCL_SOCKET_IFNAME"}) & set(environment)
    assert plan["summary"]["network"] == ("p5.48xlarge: 8 x H100 80 GB, 32 EFA with GPUDirect RDMA; "
                                          "the platform provides EFA and its NCCL environment; hpctl sets none")


def test_the_plan_shows_the_instance_and_its_network(tmp_path, run_cli):
    args = ["llama3_1_8b_pretrain", "--cluster", "k8s", "-w", tmp_path, *FIXED, "instance_type=p5.48xlarge"]
    rc, out, err = run_cli("plan", "--format", "markdown", *args)
    assert rc == 0, err
    assert ("| network | p5.48xlarge: 8 x H100 80 GB, 32 EFA with GPUDirect RDMA; "
            "EFA/NCCL environment set (7 variables) |") in out
    rc, out, err = run_cli("plan", "--json", *args)
    assert json.loads(out)["summary"]["network"].startswith("p5.48xlarge: 8 x H100")


# --- pre-flight checks --------------------------------------------------------------------------

def _plan_error(tmp_path: Path, cluster: str, *args: str, recipe: str = "llama3_1_8b_pretrain") -> str:
    spec = _spec(tmp_path, cluster, *args, recipe=recipe)
    with pytest.raises(HpctlError) as err:
        build(spec, State(tmp_path / "state.json"))
    return str(err.value)


def test_devices_above_the_instances_accelerators_is_an_error_at_the_recipe_line(tmp_path):
    message = _plan_error(tmp_path, "slurm", "instance_type=g6.12xlarge")
    assert "<builtin>/recipes/llama/llama3_1_8b_pretrain.yaml:" in message
    assert "trainer.devices is 8 but the cluster's nodes have 4 devices " \
           "(cluster.devices_per_node, from instance type g6.12xlarge)" in message
    # the cluster claims more than the instance has: the instance check says so
    message = _plan_error(tmp_path, "slurm", "instance_type=g6.12xlarge", "cluster.devices_per_node=8")
    assert "[instance-devices] trainer.devices is 8 but a g6.12xlarge node has 4 L4 GPUs" in message


def test_memory_above_the_instances_accelerator_memory(tmp_path):
    """Filled from the catalogue, an overflow warns (README: HyperPod's p5 recipes exceed hpctl's
    estimate); a cluster that claims more memory than the instance has is an error."""
    [found] = [c for c in run_checks(_spec(tmp_path, "slurm", "instance_type=g5.48xlarge")) if c.id == "memory"]
    assert found.severity == "warning" and found.message.startswith(
        "the job needs more memory than the device has (cluster.device_memory_gb, from instance type g5.48xlarge)")
    message = _plan_error(tmp_path, "slurm", "instance_type=g5.48xlarge", "cluster.device_memory_gb=80")
    assert "[instance-memory] the job needs more memory than a g5.48xlarge GPU has (A10G 24 GB)" in message
    assert "<builtin>/recipes/llama/llama3_1_8b_pretrain.yaml:" in message


def test_unknown_instance_type_is_an_error_with_did_you_mean(tmp_path):
    message = _plan_error(tmp_path, "slurm", "instance_type=p5.48xlarg")
    assert "(instance_type=p5.48xlarg): instance_type: [instance-type] unknown instance type 'p5.48xlarg'" in message
    assert "did you mean 'p5.48xlarge'?" in message


def test_trainium_and_inferentia_are_plan_errors_at_their_line(tiny_workspace):
    root = tiny_workspace({"config.yaml": "cluster_type: local\ninstance_type: inf2.48xlarge\n"
                                          "base_results_dir: results\n"})
    with pytest.raises(HpctlError) as err:
        compose(["tiny/mini"], None, Workspace(root), env={})
    assert str(err.value).startswith("config.yaml:2:16: instance_type: unsupported recipe: Inferentia")


# --- parity with HyperPod's launcher (tests/fixtures/hyperpod_launcher/README.md) ----------------

@pytest.mark.parametrize("cluster", ["slurm", "k8s"])
def test_hyperpods_environment_and_device_requests_are_in_hpctls_artifacts(hyperpod_v1, cluster):
    golden = json.loads(GOLDEN.read_text())
    args = [f"recipes={golden['recipe']}", f"cluster={cluster}", f"cluster_type={cluster}",
            f"instance_type={golden['instance_type']}", "base_results_dir=/r", "recipes.run.name=llama-8b",
            "container=example.com/img:1"]
    spec = compose(args, None, Workspace(hyperpod_v1), env={})
    validate(spec)
    text = get_backend(spec.cluster_type).render(spec).text
    want = {k: v for k, v in golden[cluster]["env"].items() if k not in golden["not_carried"]}
    if cluster == "k8s":
        container = _k8s_container(text)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert container["resources"]["requests"] == container["resources"]["limits"] == golden["k8s"]["resources"]
    else:
        env = _sbatch_exports(text)
        slurm = golden["slurm"]
        for name, value in slurm["sbatch"].items():  # --nodes, --exclusive, --mem
            assert f"#SBATCH --{name}{'=' + value if value else ''}\n" in text, name
        # HyperPod gives its docker container `--gpus N`; hpctl asks Slurm for them
        assert f"#SBATCH --gpus-per-node={slurm['gpus_per_node']}\n" in text
    assert {k: env.get(k) for k in want} == want
