"""verl on Ray: what hpctl checks, states and launches for HyperPod's RL recipes (run.model_type: verl).

hpctl does not reimplement verl. It
  - checks the verl config under `recipes.training_config` against the keys of the verl version the
    recipe targets (schemas/verl/verl-<version>.schema.json, generated from verl's own config files
    by schemas/verl/generate.py; validate reports unknown keys at file:line with a did-you-mean);
  - runs verl's start-up rules at plan time (`rules`) with the world size the plan launches, so a
    batch size that verl would refuse after the Ray cluster is up and the models are loaded is a
    plan error instead. The rules follow verl's `validate_config` (0.7; `RayPPOTrainer._validate_config`
    in 0.5) and the FSDP workers' mini-batch normalisation and rollout mesh; the verl contract test
    (tests/test_verl_contract.py) runs verl's own validation beside them;
  - states the algorithm, reward, actor/ref/rollout layout and memory per GPU (`summary`, `memory`);
  - renders the launch verl documents (`entrypoint`, `config_text`): `python -m verl.trainer.main_ppo
    --config-path DIR --config-name verl_config` over the recipe's training_config, on a Ray cluster
    each backend starts its own way.

The version: HyperPod's launcher treats a config with `global_profiler` as verl 0.7 (its PPO
recipes) and its SFT/DPO recipes (an `engine` section) exist only for 0.7; every other verl recipe
targets 0.5. Pure and torch-free.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from adapter.keypath import get_path
from adapter.secret import secret_env_name
from hpctl.spec import Spec

MODEL_TYPE = "verl"
CONFIG = "recipes.training_config"
CONFIG_NAME = "verl_config"  # the file verl's Hydra entry point reads: <dir>/verl_config.yaml
CONFIG_FILE = f"{CONFIG_NAME}.yaml"
MODULE = "verl.trainer.main_ppo"  # HyperPod's images start every verl recipe (PPO, SFT, DPO) through it
MAX_VLLM_LORA_RANK = 512  # vLLM's largest max_lora_rank, which verl 0.7 checks the actor's LoRA rank against
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
OVERHEAD_GB = 2.0  # CUDA context, NCCL buffers and allocator slack per GPU
NEAR = 0.9  # a layout above this fraction of the GPU's memory is a warning
BACKENDS = ("k8s", "sm_jobs", "slurm", "local")  # the backends that start verl's Ray cluster
EXPONENT = re.compile(r'"(?:\\.|[^"\\])*"|(?<![\w.])(-?\d+)([eE][-+]?\d+)')  # JSON strings, or 1e-05
SIZE = re.compile(r"(?:^|[^a-z0-9.])e?(\d+(?:\.\d+)?)b(?![a-z0-9])", re.I)  # "Llama-3.2-1B", "gpt-oss-120b"


@dataclass(frozen=True)
class Engine:
    """Which verl a recipe targets and which of verl's trainers its config is for."""

    version: str  # "0.5" | "0.7"
    kind: str  # "ppo" (actor_rollout_ref: RL) | "sft" (engine/model/optim: SFT and DPO)
    name: str = MODEL_TYPE

    ray = True  # the backends start a Ray cluster for it (hpctl.engines: the engines' shared interface)

    @property
    def program(self) -> str:
        """The plan summary's entry line."""
        return f"verl {self.version} ({self.kind.upper()} trainer config) on Ray: python -m {MODULE}"

    def checks(self, spec: Spec, host: Any) -> list[Any]:
        return checks(spec, host)

    def summary(self, spec: Spec, artifact: Any, device_gb: float | None) -> dict[str, Any]:
        return summary(spec, device_gb)


def version_of(config: Any) -> str:
    """The verl version a training_config targets (the module docstring gives the rule)."""
    config = config if isinstance(config, dict) else {}
    return "0.7" if "global_profiler" in config or "engine" in config else "0.5"


def engine_of(spec_data: Any) -> Engine | None:
    """The verl engine for a resolved spec (recipe under `recipes`) or a bare recipe, else None."""
    if not isinstance(spec_data, dict):
        return None
    recipe = spec_data.get("recipes") if isinstance(spec_data.get("recipes"), dict) else spec_data
    if get_path(recipe, "run.model_type") != MODEL_TYPE:
        return None
    config = recipe.get("training_config")
    kind = "sft" if isinstance(config, dict) and "engine" in config else "ppo"
    return Engine(version_of(config), kind)


def entrypoint(spec: Spec, config_dir: str, python: str = "python") -> list[str]:
    """The command verl documents for a config file in a directory (HyperPod's RayJob runs it):
    `python -u -m verl.trainer.main_ppo --config-path DIR --config-name verl_config`. A spec's
    git.entry_module or entry_script (hpctl.entry, the owner of `git`) runs instead of verl's module,
    with the same arguments: a fork of verl's entry point, or a probe of the launch."""
    from hpctl.entry import DEFAULT_PROGRAM, entry_point
    program = entry_point(spec, str(spec.get("recipes.run.results_dir") or "")).program
    return [python, "-u", *(("-m", MODULE) if program == DEFAULT_PROGRAM else program),
            "--config-path", config_dir, "--config-name", CONFIG_NAME]


def config_text(spec: Spec) -> str:
    """The verl config file: recipes.training_config as YAML (JSON text, a YAML subset, so every
    value keeps its type exactly). A secret is never written: its value becomes `${oc.env:VAR}`,
    which verl's OmegaConf resolves in the job from the variable every backend sets from the
    secret (hpctl.spec.secret_env_name)."""
    return _yaml(_with_secret_references(spec, spec.get(CONFIG) or {}, CONFIG))


def recipe_text(spec: Spec) -> str:
    """The whole resolved recipe as YAML, verl config included (what the SageMaker SDK uploads)."""
    return _yaml(_with_secret_references(spec, spec.recipe, "recipes"))


def _yaml(config: Any) -> str:
    text = json.dumps(config, indent=2, ensure_ascii=True, default=str)
    # YAML 1.1 readers (PyYAML) take `1e-05` for a string: exponent floats get their `.0`.
    return EXPONENT.sub(lambda m: m.group(0) if m.group(1) is None else f"{m.group(1)}.0{m.group(2)}", text) + "\n"


def _with_secret_references(spec: Spec, node: Any, path: str) -> Any:
    if isinstance(node, dict):
        return {k: _with_secret_references(spec, v, f"{path}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_with_secret_references(spec, v, f"{path}.{i}") for i, v in enumerate(node)]
    if node not in (None, "") and spec.is_secret(path):
        return "${oc.env:" + secret_env_name(path) + "}"
    return node


# ---- the layout verl asks Ray for, and its rules ----

def _int(value: Any, default: int | None = None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def world(spec: Spec) -> tuple[int, int]:
    """(nodes, GPUs per node) verl's trainer asks Ray for: trainer.nnodes x trainer.n_gpus_per_node."""
    return (_int(spec.get(f"{CONFIG}.trainer.nnodes"), 1) or 1,
            _int(spec.get(f"{CONFIG}.trainer.n_gpus_per_node"), 1) or 1)


VALIDATE, WORKERS, INPUTS = "validate", "workers", "inputs"


@dataclass(frozen=True)
class Rule:
    """One start-up rule verl would fail on: the keys involved (most relevant first) and why."""

    message: str
    keys: list[str]
    hint: str | None = None
    stage: str = VALIDATE  # where verl checks it: VALIDATE (its config validation), WORKERS (workers' start), INPUTS


def _c(spec: Spec, path: str) -> Any:
    return spec.get(f"{CONFIG}.{path}")


def need_reference(spec: Spec) -> bool:
    """verl's own test (need_reference_policy): KL in the reward or a KL loss needs the reference."""
    return bool(_c(spec, "algorithm.use_kl_in_reward")) or bool(_c(spec, "actor_rollout_ref.actor.use_kl_loss"))


def need_critic(spec: Spec) -> bool:
    """verl's own test (need_critic): critic.enable when set, else only GAE (PPO) uses a critic."""
    enable = _c(spec, "critic.enable")
    engine = engine_of(spec.data)
    if enable is not None and engine is not None and engine.version != "0.5":  # 0.5 has no critic.enable
        return bool(enable)
    return _c(spec, "algorithm.adv_estimator") == "gae"


def rules(spec: Spec) -> list[Rule]:
    """Every start-up rule of verl's PPO trainer this config breaks with the planned world size."""
    engine = engine_of(spec.data)
    if engine is None:
        return []
    k = lambda path: f"{CONFIG}.{path}"  # noqa: E731
    found: list[Rule] = []
    if _c(spec, "data.train_files") in (None, "", []):
        found.append(Rule("data.train_files is not set: verl reads its training data from there",
                          [k("data.train_files")], "set recipes.training_config.data.train_files (HyperPod's "
                                                     "launcher scripts pass TRAIN_DATA there)", INPUTS))
    if engine.kind != "ppo":
        return found
    nodes, per_node = world(spec)
    n_gpus = nodes * per_node
    gpus_text = f"{n_gpus} GPUs (trainer.nnodes {nodes} x n_gpus_per_node {per_node})"
    actor = "actor_rollout_ref.actor"
    dynamic = bool(_c(spec, f"{actor}.use_dynamic_bsz"))
    batch = _int(_c(spec, "data.train_batch_size"))
    n = _int(_c(spec, "actor_rollout_ref.rollout.n"), 1) or 1
    mini = _int(_c(spec, f"{actor}.ppo_mini_batch_size"))
    micro, micro_gpu = _c(spec, f"{actor}.ppo_micro_batch_size"), _c(spec, f"{actor}.ppo_micro_batch_size_per_gpu")
    sp = _int(_c(spec, f"{actor}.ulysses_sequence_parallel_size"), 1) or 1
    megatron = _c(spec, f"{actor}.strategy") == "megatron"

    if megatron:
        tp = _int(_c(spec, f"{actor}.megatron.tensor_model_parallel_size"), 1) or 1
        pp = _int(_c(spec, f"{actor}.megatron.pipeline_model_parallel_size"), 1) or 1
        cp = _int(_c(spec, f"{actor}.megatron.context_parallel_size"), 1) or 1
        if n_gpus % (tp * pp * cp):
            found.append(Rule(f"{gpus_text} is not divisible by the actor's tensor x pipeline x context parallel "
                              f"size ({tp} x {pp} x {cp})", [k(f"{actor}.megatron.tensor_model_parallel_size"),
                                                             k("trainer.n_gpus_per_node")]))
            minimal = None
        else:
            minimal = n_gpus // (tp * pp * cp) * (_int(micro_gpu, 1) or 1)
    else:
        minimal = n_gpus
    if batch is not None and minimal and (not dynamic or engine.version == "0.5") and (batch * n) % minimal:
        found.append(Rule(f"data.train_batch_size {batch} x rollout.n {n} = {batch * n} responses per step is not "
                          f"divisible by {minimal} ({gpus_text}{' x micro batch' if megatron else ''})",
                          [k("data.train_batch_size"), k("actor_rollout_ref.rollout.n"), k("trainer.n_gpus_per_node")],
                          f"make train_batch_size x n a multiple of {minimal}"))

    def exclusive(section: str, name: str, keys_of: str) -> None:
        value, per_gpu = _c(spec, f"{section}.{name}"), _c(spec, f"{section}.{name}_per_gpu")
        if value is not None and per_gpu is not None:
            found.append(Rule(f"{section}.{name} and {name}_per_gpu are both set; verl takes only one "
                              f"({name} is deprecated)", [k(f"{section}.{name}"), k(f"{section}.{name}_per_gpu")],
                              f"remove {section}.{name}"))
        elif value is None and per_gpu is None:
            found.append(Rule(f"neither {section}.{name} nor {name}_per_gpu is set and {keys_of} is off",
                              [k(f"{section}.{name}_per_gpu")], f"set {section}.{name}_per_gpu"))

    if not dynamic:
        exclusive(actor, "ppo_micro_batch_size", "actor.use_dynamic_bsz")
        if need_reference(spec):
            exclusive("actor_rollout_ref.ref", "log_prob_micro_batch_size", "actor.use_dynamic_bsz")
        exclusive("actor_rollout_ref.rollout", "log_prob_micro_batch_size", "actor.use_dynamic_bsz")
        if batch is not None and mini is not None and batch < mini:
            found.append(Rule(f"data.train_batch_size {batch} is smaller than actor.ppo_mini_batch_size {mini}",
                              [k(f"{actor}.ppo_mini_batch_size"), k("data.train_batch_size")]))
        if isinstance(micro, int) and mini is not None:
            if mini % micro:
                found.append(Rule(f"actor.ppo_mini_batch_size {mini} is not divisible by ppo_micro_batch_size {micro}",
                                  [k(f"{actor}.ppo_micro_batch_size")]))
            if micro * sp < n_gpus:
                found.append(Rule(f"actor.ppo_micro_batch_size {micro} x ulysses_sequence_parallel_size {sp} is "
                                  f"below {gpus_text}", [k(f"{actor}.ppo_micro_batch_size")]))
    critic = "critic"
    if need_critic(spec) and not _c(spec, f"{critic}.use_dynamic_bsz"):
        critic_mini = _int(_c(spec, f"{critic}.ppo_mini_batch_size"))
        if batch is not None and critic_mini is not None and batch < critic_mini:
            found.append(Rule(f"data.train_batch_size {batch} is smaller than critic.ppo_mini_batch_size {critic_mini}",
                              [k(f"{critic}.ppo_mini_batch_size"), k("data.train_batch_size")]))
    mode = _c(spec, f"{actor}.loss_agg_mode")
    if mode is not None and mode not in LOSS_AGG_MODES:
        found.append(Rule(f"actor.loss_agg_mode {mode!r} is not one of verl's: {', '.join(LOSS_AGG_MODES)}",
                          [k(f"{actor}.loss_agg_mode")]))
    if _c(spec, "actor_rollout_ref.rollout.val_kwargs.do_sample"):
        temperature = _c(spec, "actor_rollout_ref.rollout.temperature")
        if isinstance(temperature, (int, float)) and temperature <= 0:
            found.append(Rule("rollout.val_kwargs.do_sample needs rollout.temperature above 0",
                              [k("actor_rollout_ref.rollout.temperature"), k("actor_rollout_ref.rollout.val_kwargs.do_sample")]))
    lora = _c(spec, "actor_rollout_ref.model.lora") or {}
    rank = (_int(lora.get("rank"), 0) if isinstance(lora, dict) else 0) or _int(_c(spec, "actor_rollout_ref.model.lora_rank"), 0)
    merged = isinstance(lora, dict) and lora.get("merge")
    if engine.version != "0.5" and not merged and (rank or 0) > MAX_VLLM_LORA_RANK \
            and _c(spec, "actor_rollout_ref.rollout.name") == "vllm":
        found.append(Rule(f"LoRA rank {rank} is above vLLM's largest ({MAX_VLLM_LORA_RANK}), which verl's rollout needs",
                          [k("actor_rollout_ref.model.lora_rank")]))
    found += _worker_rules(spec, n_gpus, gpus_text, mini, n, sp, micro_gpu, dynamic, megatron)
    return found


def _worker_rules(spec: Spec, n_gpus: int, gpus_text: str, mini: int | None, n: int, sp: int, micro_gpu: Any,
                  dynamic: bool, megatron: bool) -> list[Rule]:
    """The FSDP workers' start-up asserts: sequence-parallel and rollout meshes over the GPUs, and the
    mini-batch each data-parallel rank gets (ppo_mini_batch_size x rollout.n / (GPUs / sp))."""
    k = lambda path: f"{CONFIG}.{path}"  # noqa: E731
    found: list[Rule] = []
    for section in ("actor_rollout_ref.actor", "actor_rollout_ref.ref"):
        degree = _int(_c(spec, f"{section}.ulysses_sequence_parallel_size"), 1) or 1
        if n_gpus % degree:
            found.append(Rule(f"{section.rsplit('.', 1)[1]}.ulysses_sequence_parallel_size {degree} does not divide "
                              f"{gpus_text}", [k(f"{section}.ulysses_sequence_parallel_size")], stage=WORKERS))
    if max(sp, _int(_c(spec, "actor_rollout_ref.ref.ulysses_sequence_parallel_size"), 1) or 1) > 1 \
            and not megatron and not _c(spec, "actor_rollout_ref.model.use_remove_padding"):
        found.append(Rule("sequence parallelism (ulysses_sequence_parallel_size > 1) needs "
                          "actor_rollout_ref.model.use_remove_padding", [k("actor_rollout_ref.model.use_remove_padding")],
                          stage=VALIDATE if engine_of(spec.data).version == "0.5" else WORKERS))
    tp = _int(_c(spec, "actor_rollout_ref.rollout.tensor_model_parallel_size"), 1) or 1
    dp = _int(_c(spec, "actor_rollout_ref.rollout.data_parallel_size"), 1) or 1
    pp = _int(_c(spec, "actor_rollout_ref.rollout.pipeline_model_parallel_size"), 1) or 1
    if n_gpus % (tp * dp * pp):
        found.append(Rule(f"rollout.tensor_model_parallel_size {tp}"
                          + (f" x data_parallel_size {dp}" if dp > 1 else "") + (f" x pipeline {pp}" if pp > 1 else "")
                          + f" does not divide {gpus_text}",
                          [k("actor_rollout_ref.rollout.tensor_model_parallel_size")],
                          "use a rollout tensor-parallel size that divides the GPU count", WORKERS))
    if mini is not None and not megatron and n_gpus % sp == 0:
        ranks = n_gpus // sp
        per_rank = mini * n // ranks
        if per_rank <= 0:
            found.append(Rule(f"actor.ppo_mini_batch_size {mini} x rollout.n {n} = {mini * n} is fewer than the "
                              f"{ranks} data-parallel ranks ({gpus_text} / sequence parallel {sp}): each rank's "
                              "mini-batch would be empty", [k("actor_rollout_ref.actor.ppo_mini_batch_size")],
                              stage=WORKERS))
        elif not dynamic and isinstance(micro_gpu, int) and micro_gpu > 0 and per_rank % micro_gpu:
            found.append(Rule(f"actor.ppo_mini_batch_size {mini} x rollout.n {n} / {ranks} ranks = {per_rank} per "
                              f"GPU is not divisible by ppo_micro_batch_size_per_gpu {micro_gpu}",
                              [k("actor_rollout_ref.actor.ppo_mini_batch_size"),
                               k("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu")],
                              "make ppo_mini_batch_size x n / GPUs a multiple of ppo_micro_batch_size_per_gpu", WORKERS))
    return found


# ---- what the plan states ----

def parameters(spec: Spec) -> tuple[float | None, str]:
    """The actor's parameter count in billions, read from its model name (a path or hub id naming
    "8B"), else from the recipe's display name; (None, "") when neither names a size."""
    for key in (f"{CONFIG}.actor_rollout_ref.model.path", f"{CONFIG}.model.path", "recipes.display_name",
                "recipes.run.name"):
        value = spec.get(key)
        match = SIZE.search(str(value).rsplit("/", 1)[-1]) if isinstance(value, str) else None
        if match:
            return float(match.group(1)), key
    return None, ""


@dataclass(frozen=True)
class Memory:
    """Memory per GPU of the colocated actor, reference and rollout engine (GB, 1e9 bytes)."""

    actor_gb: float
    ref_gb: float
    rollout_gb: float
    total_gb: float
    device_gb: float | None
    explain: str

    @property
    def fraction(self) -> float | None:
        return self.total_gb / self.device_gb if self.device_gb else None


DTYPE_BYTES = {"bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "float32": 4, "fp32": 4}


def memory(spec: Spec, device_gb: float | None) -> Memory | None:
    """Per GPU, as verl's hybrid engine colocates them: the actor's FSDP shard (weights in
    fsdp_config.model_dtype, gradients alike, Adam's two fp32 moments; LoRA trains only adapters, so
    the frozen base costs its weights), the reference's weights unless param_offload, and the share
    of the GPU the rollout engine reserves (rollout.gpu_memory_utilization of the whole device, its
    weights and KV cache inside it), plus a fixed overhead. None when the model's size is unknown
    (a PPO config only: SFT configs run no rollout)."""
    engine = engine_of(spec.data)
    billions, source = parameters(spec)
    if engine is None or engine.kind != "ppo" or billions is None:
        return None
    params = billions * 1e9
    nodes, per_node = world(spec)
    shards = _int(_c(spec, "actor_rollout_ref.actor.fsdp_config.fsdp_size"), -1) or -1
    shards = nodes * per_node if shards <= 0 else shards
    actor_cfg = "actor_rollout_ref.actor.fsdp_config"
    weight = DTYPE_BYTES.get(str(_c(spec, f"{actor_cfg}.model_dtype") or "float32").lower(), 4)
    lora = (_int(_c(spec, "actor_rollout_ref.model.lora_rank"), 0) or 0) > 0 or \
        (_int(_c(spec, "actor_rollout_ref.model.lora.rank"), 0) or 0) > 0
    offload_param, offload_optim = bool(_c(spec, f"{actor_cfg}.param_offload")), bool(_c(spec, f"{actor_cfg}.optimizer_offload"))
    per_param = (0 if offload_param else weight) + (0 if lora or offload_param else weight) + (0 if lora or offload_optim else 8)
    actor = params * per_param / shards / 1e9
    ref = 0.0
    if need_reference(spec) and not lora and not _c(spec, "actor_rollout_ref.ref.fsdp_config.param_offload"):
        ref = params * 2 / shards / 1e9  # with LoRA the reference is the actor's own base weights
    utilization = _c(spec, "actor_rollout_ref.rollout.gpu_memory_utilization")
    utilization = float(utilization) if isinstance(utilization, (int, float)) and not isinstance(utilization, bool) else 0.5
    rollout = utilization * device_gb if device_gb else 0.0
    total = actor + ref + rollout + OVERHEAD_GB
    how = (f"{billions:g}B parameters (from {source.rsplit('.', 1)[-1]}), "
           f"{'LoRA' if lora else 'full'} actor {actor:.1f} GB over {shards} shards + ref {ref:.1f} GB + rollout "
           + (f"{utilization:g} x {device_gb:g} GB = {rollout:.1f} GB" if device_gb else f"{utilization:g} of the GPU")
           + f" + {OVERHEAD_GB:g} GB overhead = {total:.1f} GB per GPU")
    return Memory(actor, ref, rollout, total, device_gb, how)


def algorithm(spec: Spec) -> str:
    engine = engine_of(spec.data)
    if engine is not None and engine.kind == "sft":
        mode = _c(spec, "trainer.training_mode") or _c(spec, "trainer.loss_type")
        return str(mode).upper() if mode and str(mode).lower() in ("dpo", "sft", "ipo", "orpo") else \
            ("DPO" if _c(spec, "data.chosen_key") else "SFT")
    estimator = str(_c(spec, "algorithm.adv_estimator") or "gae")
    return {"gae": "PPO", "grpo": "GRPO", "rloo": "RLOO", "reinforce_plus_plus": "REINFORCE++", "remax": "ReMax",
            "opo": "OPO", "gpg": "GPG"}.get(estimator, estimator)


def reward(spec: Spec) -> str | None:
    """Where rewards come from: a reward model, an LLM judge (and which), or a rule (which function)."""
    engine = engine_of(spec.data)
    if engine is None or engine.kind != "ppo":
        return None
    if _c(spec, "reward_model.enable"):
        return f"reward model {_c(spec, 'reward_model.model.path')}"
    kwargs = _c(spec, "reward_model.reward_kwargs") or {}
    name = kwargs.get("reward_fn_name") if isinstance(kwargs, dict) else None
    judge = get_path(kwargs, "kwargs.model_id") if isinstance(kwargs, dict) else None
    if judge:
        return f"judge {judge} ({name or 'LLM judge'})"
    arn = _c(spec, "custom_reward_function.lambda_arn")
    if arn:
        return f"rule: AWS Lambda {arn}"
    path, fn = _c(spec, "custom_reward_function.path"), _c(spec, "custom_reward_function.name")
    if path:
        return f"rule: {fn or 'compute_score'} from {path}"
    return "rule: verl's scorer for each sample's data_source" + (f" ({name})" if name else "")


def layout(spec: Spec) -> str:
    nodes, per_node = world(spec)
    engine = engine_of(spec.data)
    if engine is None or engine.kind != "ppo":
        strategy = _c(spec, "engine.strategy") or "fsdp"
        return f"{engine.kind.upper() if engine else ''} trainer, {strategy} over {nodes} x {per_node} GPUs".strip()
    strategy = _c(spec, "actor_rollout_ref.actor.strategy") or "fsdp"
    sp = _int(_c(spec, "actor_rollout_ref.actor.ulysses_sequence_parallel_size"), 1) or 1
    ref = ("ref " + ("param-offloaded" if _c(spec, "actor_rollout_ref.ref.fsdp_config.param_offload") else "on GPU")
           if need_reference(spec) else "no ref")
    tp = _int(_c(spec, "actor_rollout_ref.rollout.tensor_model_parallel_size"), 1) or 1
    rollout = f"rollout {_c(spec, 'actor_rollout_ref.rollout.name') or 'vllm'} TP {tp} ({nodes * per_node // tp} engines), " \
              f"n={_c(spec, 'actor_rollout_ref.rollout.n')}"
    critic = ", critic" if need_critic(spec) else ""
    return (f"actor {strategy} over {nodes} x {per_node} GPUs" + (f" (sequence parallel {sp})" if sp > 1 else "")
            + f", {ref}, {rollout}{critic} (colocated)")


def summary(spec: Spec, device_gb: float | None) -> dict[str, Any]:
    """The plan summary's fields for a verl job: the generic ones (model, devices, memory) as verl
    runs them, and `engine` with the algorithm, reward and layout."""
    engine = engine_of(spec.data)
    assert engine is not None
    mem = memory(spec, device_gb)
    nodes, per_node = world(spec)
    billions, _ = parameters(spec)
    model = _c(spec, "actor_rollout_ref.model.path") or _c(spec, "model.path")
    lora = _int(_c(spec, "actor_rollout_ref.model.lora_rank"), 0) or _int(_c(spec, "model.lora_rank"), 0)
    return {
        "model": model, "parameters": int(billions * 1e9) if billions else None,
        "nodes": nodes, "devices_per_node": per_node, "accelerator": "gpu",
        "sharding": _c(spec, "actor_rollout_ref.actor.strategy") or _c(spec, "engine.strategy"),
        "peft": f"lora rank {lora}" if lora else None,
        "max_steps": _c(spec, "trainer.total_training_steps") or (
            f"{_c(spec, 'trainer.total_epochs')} epochs" if _c(spec, "trainer.total_epochs") else None),
        "sequence_length": _c(spec, "data.max_prompt_length") and _c(spec, "data.max_response_length") and
        _c(spec, "data.max_prompt_length") + _c(spec, "data.max_response_length") or _c(spec, "data.max_length"),
        "memory_gb_per_device": round(mem.total_gb, 2) if mem else None,
        "memory_fraction": round(mem.fraction, 3) if mem and mem.fraction is not None else None,
        "engine": {"name": f"verl {engine.version}", "algorithm": algorithm(spec), "reward": reward(spec),
                   "layout": layout(spec)},
    }


def checks(spec: Spec, host: Any) -> list[Any]:
    """verl's start-up rules (errors, id "engine") and the memory per GPU: over the device is an
    error, above NEAR a warning, else a note; nothing for a spec verl does not run."""
    from hpctl.checks import DEVICE_MEMORY, ERROR, INFO, WARNING, Check, device_memory_gb
    if engine_of(spec.data) is None:
        return []
    found = [Check("engine", ERROR, f"[verl] {r.message}", r.keys, r.hint) for r in rules(spec)]
    if spec.cluster_type not in BACKENDS:
        found.append(Check("backend", ERROR, f"the {spec.cluster_type} backend does not launch verl on Ray",
                           ["cluster_type"], f"plan verl recipes for {' or '.join(BACKENDS)}"))
    nodes, per_node = world(spec)
    planned = spec.get("recipes.trainer.num_nodes")
    if isinstance(planned, int) and planned != nodes:
        found.append(Check("engine-nodes", WARNING, f"recipes.trainer.num_nodes is {planned} but verl asks Ray for "
                           f"{nodes} node(s) (training_config.trainer.nnodes): "
                           + ("SageMaker starts num_nodes instances" if spec.cluster_type == "sm_jobs"
                              else "hpctl starts the GPU workers verl asks for"),
                           ["recipes.trainer.num_nodes", f"{CONFIG}.trainer.nnodes"],
                           "make them equal"))
    workers = spec.get("recipes.ray_cluster.worker_nodes.replicas")
    if spec.cluster_type == "k8s" and isinstance(workers, int) and workers != nodes:
        found.append(Check("engine-nodes", WARNING, f"ray_cluster.worker_nodes.replicas is {workers} (HyperPod's "
                           f"chart would start that many GPU workers) but verl asks Ray for {nodes}: hpctl starts "
                           f"{nodes}", ["recipes.ray_cluster.worker_nodes.replicas", f"{CONFIG}.trainer.nnodes"]))
    available, source = device_memory_gb(spec, host)
    mem = memory(spec, available)
    keys = [f"{CONFIG}.actor_rollout_ref.rollout.gpu_memory_utilization",
            f"{CONFIG}.actor_rollout_ref.actor.fsdp_config.param_offload",
            f"{CONFIG}.actor_rollout_ref.ref.fsdp_config.param_offload"] + ([DEVICE_MEMORY] if source else [])
    engine = engine_of(spec.data)
    if mem is None and engine is not None and engine.kind != "ppo":
        found.append(Check("memory", INFO, "no memory estimate for verl's SFT trainer", [f"{CONFIG}.engine"]))
    elif mem is None:
        found.append(Check("memory", INFO, "no memory estimate: the actor's model name does not say its size "
                           "(actor_rollout_ref.model.path)", keys[:1]))
    elif mem.fraction is None:
        found.append(Check("memory", INFO, f"memory {mem.explain} (device memory unknown: set "
                           "cluster.device_memory_gb or instance_type)", keys))
    elif mem.fraction > 1.0:
        # As for hpctl's trainer (checks.check_memory): memory hpctl took from the instance catalogue,
        # not asserted by the user, only warns; the sizes here are read from model names too.
        derived = spec.origin(DEVICE_MEMORY) is not None and bool(spec.origin(DEVICE_MEMORY).via)
        found.append(Check("memory", WARNING if derived else ERROR, f"the actor, reference and rollout engine "
                           f"do not fit one GPU ({source}, {available:g} GB): {mem.explain}", keys,
                           "lower rollout.gpu_memory_utilization, offload the reference or actor "
                           "(fsdp_config.param_offload / optimizer_offload), or use more GPUs"))
    elif mem.fraction > NEAR:
        found.append(Check("memory", WARNING, f"the layout needs over {NEAR:.0%} of a GPU ({source}): "
                           f"{mem.explain}", keys))
    else:
        found.append(Check("memory", INFO, f"memory {mem.explain}", keys))
    return found
