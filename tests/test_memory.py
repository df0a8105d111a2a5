"""Parameter counts, FLOPs and the analytic memory estimate.

Counts are checked exactly against transformers models built on the meta device (no memory, no
initialisation), so the formulas in adapter/modelsize.py track the modeling code the trainer runs.
The estimate is checked for its arithmetic, for moving the right way when a knob turns, and in
one slow test against a real CPU training run.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.modelsize import flops_per_token, param_count, param_counts
from hpctl.memory import OVERHEAD_GB, estimate, is_16bit, layout

REPO = Path(__file__).resolve().parents[1]

LLAMA31_8B = dict(model_type="llama_v3", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)
LLAMA32_1B = dict(model_type="llama_v3", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                  num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True)
MIXTRAL_8X7B = dict(model_type="mixtral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, num_local_experts=8,
                    num_experts_per_tok=2)


# --- parameter counts -------------------------------------------------------------------------

def test_known_totals():
    assert param_count(LLAMA31_8B) == 8_030_261_248
    assert param_count(LLAMA32_1B) == 1_235_814_400
    assert param_count(MIXTRAL_8X7B) == 46_702_792_704


def test_moe_active_parameters_count_only_the_routed_top_k():
    # Mixtral 8x7B: 2 of 8 experts per token, about 12.9B active.
    assert param_count(MIXTRAL_8X7B, active=True) == 12_879_925_248
    assert param_count(LLAMA31_8B, active=True) == param_count(LLAMA31_8B)


def test_hyperpod_moe_flag_does_not_decide_what_a_mixture_of_experts_is():
    # gpt-oss recipes say `moe: False` (an SMP switch) while naming 32 experts.
    assert param_count({**MIXTRAL_8X7B, "moe": False}) == param_count(MIXTRAL_8X7B)


def _transformers_count(config_class: str, model_class: str, fields: dict) -> int:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = getattr(transformers, config_class)(**{k: v for k, v in fields.items() if k != "model_type"})
    with torch.device("meta"):
        model = getattr(transformers, model_class)(config)
    return sum(p.numel() for p in model.parameters())


SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=100)
CASES = {
    "llama tiny": ("LlamaConfig", "LlamaForCausalLM", dict(SMALL, model_type="llama_v3")),
    "llama tiny tied": ("LlamaConfig", "LlamaForCausalLM", dict(SMALL, model_type="llama_v3", tie_word_embeddings=True)),
    "llama tiny biases": ("LlamaConfig", "LlamaForCausalLM",
                          dict(SMALL, model_type="llama_v3", attention_bias=True, mlp_bias=True)),
    "llama 3.1 8b": ("LlamaConfig", "LlamaForCausalLM", LLAMA31_8B),
    "llama 3.2 1b": ("LlamaConfig", "LlamaForCausalLM", LLAMA32_1B),
    "mistral tiny": ("MistralConfig", "MistralForCausalLM", dict(SMALL, model_type="mistral")),
    "mistral 7b": ("MistralConfig", "MistralForCausalLM",
                   dict(LLAMA31_8B, model_type="mistral", vocab_size=32000)),
    "mixtral tiny": ("MixtralConfig", "MixtralForCausalLM",
                     dict(SMALL, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2)),
    "mixtral 8x7b": ("MixtralConfig", "MixtralForCausalLM", MIXTRAL_8X7B),
    "qwen2 tiny": ("Qwen2Config", "Qwen2ForCausalLM", dict(SMALL, model_type="qwen_v2")),
    "qwen2.5 7b": ("Qwen2Config", "Qwen2ForCausalLM",
                   dict(model_type="deepseek_r1_qwen_v2", hidden_size=3584, intermediate_size=18944,
                        num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064)),
    "qwen2 1.5b tied": ("Qwen2Config", "Qwen2ForCausalLM",
                        dict(model_type="qwen_v2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                             num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                             tie_word_embeddings=True)),
    "qwen3 tiny": ("Qwen3Config", "Qwen3ForCausalLM", dict(SMALL, model_type="qwen3", head_dim=32)),
    "qwen2-moe tiny": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                       dict(SMALL, model_type="qwen2_moe", num_experts=4, num_experts_per_tok=2,
                            moe_intermediate_size=32, shared_expert_intermediate_size=48)),
    "gpt-oss 20b": ("GptOssConfig", "GptOssForCausalLM",
                    dict(model_type="gpt_oss", hidden_size=2880, intermediate_size=2880, num_hidden_layers=24,
                         num_attention_heads=64, num_key_value_heads=8, vocab_size=201088, num_local_experts=32,
                         num_experts_per_tok=4)),
    "deepseek-v3 mla tiny": ("DeepseekV3Config", "DeepseekV3ForCausalLM",
                             dict(SMALL, model_type="deepseek_r1", num_key_value_heads=4, moe_intermediate_size=32,
                                  n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
                                  first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=8, qk_rope_head_dim=8,
                                  qk_nope_head_dim=16, v_head_dim=16, n_group=1, topk_group=1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_param_count_matches_transformers(case):
    config_class, model_class, fields = CASES[case]
    assert param_count(fields) == _transformers_count(config_class, model_class, fields)


def test_flops_per_token_follow_torchtitan():
    # 6 x (parameters - input embedding) + 12 x layers x heads x head_dim x seq.
    seq = 8192
    expected = 6 * (8_030_261_248 - 128256 * 4096) + 12 * 32 * 32 * 128 * seq
    assert flops_per_token(LLAMA31_8B, seq) == expected
    # A tied output projection still multiplies: it counts once, as the embedding's weight.
    assert flops_per_token(LLAMA32_1B, seq) == 6 * 1_235_814_400 + 12 * 16 * 32 * 64 * seq
    # MoE: only the active experts do work.
    mixtral = param_counts(MIXTRAL_8X7B)
    assert flops_per_token(MIXTRAL_8X7B, seq) == 6 * (mixtral.active - mixtral.embedding) + 12 * 32 * 32 * 128 * seq


# --- the estimate -------------------------------------------------------------------------------

def spec(model: dict | None = None, nodes: int = 16, devices: int = 8, accelerator: str = "gpu",
         cluster: dict | None = None, **fields) -> dict:
    """A resolved spec's data: Llama 3.1 8B, bf16, full_shard, mb 1 x seq 8192 unless told otherwise."""
    recipe_model = dict(model or LLAMA31_8B, train_batch_size=1, max_context_width=8192, precision="bf16",
                        sharding_strategy="full_shard", activation_checkpointing=False)
    recipe_model.update(fields)
    return {"cluster_type": (cluster or {}).get("type", "slurm"), "cluster": cluster or {"type": "slurm"},
            "recipes": {"trainer": {"num_nodes": nodes, "devices": devices, "accelerator": accelerator},
                        "model": recipe_model}}


def test_llama31_8b_on_16x8_h100_full_shard_bf16_seq8k():
    """Full numbers for the flagship case, each checked against hand arithmetic.

    Sharded state: 8.03e9 params / 128 ranks x (4 fp32 master + 4 fp32 grad + 8 AdamW) bytes =
    0.25 + 0.25 + 0.50 GB. Activations without checkpointing, per token per layer in bf16:
    norms 2 x 4096 x (4 + 4) + attention 2 x (2 x 4096 + 2 x 1024) + MLP 2 x 4 x 14336 = 200,704 B,
    x 8192 tokens x 32 layers = 52.6 GB; plus the final norm (0.27 GB) and the fp32 loss tensors,
    12 B x 128,256 vocab x 8192 = 12.6 GB: 65.5 GB. At the loss nothing is gathered (the trainer
    has FSDP2 reshard the root after forward too); once backward reaches the layers, the loss
    tensors are gone and the root's bf16 weights (embedding + LM head, 2.10 GB), two layers
    (0.87 GB), the LM head's unsharded gradient (1.05 GB) and one layer's gradient in bf16 + fp32
    (1.31 GB) are: 5.33 GB at most. So the loss is the peak: with 1 GB of runtime 67.2 GB, 84% of
    an 80 GB H100, which is why 8k-context 8B recipes turn on activation checkpointing or TP. With
    checkpointing only 32 layer inputs (2.15 GB) stay, and the loss tensors (12.9 GB) dominate:
    about 17 GB. The same model of bytes measured 0.96-1.07x of max_memory_allocated for a 1.2B
    Llama at seq 4096 on an H200 (see hpctl/memory.py).
    """
    est = estimate(spec(), 80.0)
    assert est.params_gb == pytest.approx(8_030_261_248 * 4 / 128 / 1e9)
    assert est.grads_gb == pytest.approx(est.params_gb)
    assert est.optimizer_gb == pytest.approx(2 * est.params_gb)
    assert 64 < est.activations_gb < 67
    assert 5.0 < est.gathered_gb < 5.6
    assert 67 < est.total_gb < 67.5 and 0.83 < est.fraction < 0.85
    checkpointed = estimate(spec(activation_checkpointing=True), 80.0)
    assert 14 < checkpointed.activations_gb < 16
    assert 16 < checkpointed.total_gb < 18
    assert "8.03B params" in est.explain and "full_shard over 128" in est.explain and "AC off" in est.explain


def test_more_shards_need_less_memory():
    totals = []
    for shard in (8, 16, 64, 128):
        est = estimate(spec(sharding_strategy="hybrid_shard", shard_degree=shard), None)
        totals.append((est.params_gb, est.optimizer_gb, est.total_gb))
    for smaller, larger in zip(totals[1:], totals):
        assert all(a < b for a, b in zip(smaller, larger))
    unsharded = estimate(spec(sharding_strategy="no_shard"), None)
    assert unsharded.params_gb == pytest.approx(8_030_261_248 * 4 / 1e9)
    assert unsharded.total_gb > totals[0][2]


def test_shard_group_defaults_to_the_data_parallel_ranks_and_never_exceeds_them():
    assert layout(spec()).shard == 128
    assert layout(spec(tensor_model_parallel_degree=2)).shard == 64
    assert layout(spec(sharding_strategy="hybrid_shard", shard_degree=256)).shard == 128
    assert layout(spec(context_parallel_degree=2)).shard == 128  # cp ranks hold the same weights
    # full_shard shards over every data rank whatever shard_degree says, as the trainer's mesh does
    assert layout(spec(shard_degree=16)).shard == 128
    assert layout(spec(sharding_strategy="hybrid_shard", shard_degree=16)).shard == 16


def test_fault_tolerance_shards_within_one_replica_group():
    """Each replica group is its own torchrun world (adapter.v1 builds its mesh over world / groups),
    so 4 groups of 16 x 8 ranks hold the sharded state of a 32-rank job, not of a 128-rank one."""
    ft = spec()
    ft["recipes"]["trainer"]["fault_tolerance"] = {"enabled": True, "replica_groups": 4}
    assert layout(ft).shard == 32 and layout(ft).dp == 128  # the groups split the global batch
    alone = estimate(spec(nodes=4), 80.0)
    grouped = estimate(ft, 80.0)
    assert grouped.total_gb == pytest.approx(alone.total_gb) and grouped.total_gb > estimate(spec(), 80.0).total_gb


def test_tensor_parallel_splits_layers_and_their_activations():
    one, two = estimate(spec(), None), estimate(spec(tensor_model_parallel_degree=2), None)
    assert two.activations_gb < one.activations_gb
    assert two.gathered_gb < one.gathered_gb


def test_activation_checkpointing_reduces_activations():
    off, on = estimate(spec(), None), estimate(spec(activation_checkpointing=True), None)
    assert on.activations_gb < off.activations_gb / 3
    assert on.params_gb == off.params_gb


def test_offloaded_activations_keep_only_the_loading_horizon():
    on = estimate(spec(activation_checkpointing=True, train_batch_size=8), None)
    offloaded = estimate(spec(activation_checkpointing=True, train_batch_size=8, offload_activations=True,
                              activation_loading_horizon=2), None)
    assert offloaded.activations_gb < on.activations_gb


def test_context_parallel_divides_the_sequence():
    assert estimate(spec(context_parallel_degree=2), None).activations_gb < estimate(spec(), None).activations_gb


def test_lora_keeps_no_optimizer_state_for_the_frozen_base():
    full = estimate(spec(), None)
    lora = estimate(spec(peft={"peft_type": "lora", "rank": 16}), None)
    assert lora.optimizer_gb < full.optimizer_gb / 100
    assert lora.grads_gb < full.grads_gb / 100
    assert lora.params_gb == pytest.approx(full.params_gb, rel=0.01)  # frozen fp32 base, still sharded
    # Default targets q_proj and v_proj: 32 layers x 16 x ((4096 + 4096) + (4096 + 1024)) adapter weights.
    adapters = 32 * 16 * (4096 + 4096 + 4096 + 1024)
    assert lora.optimizer_gb == pytest.approx(adapters * 8 / 128 / 1e9)
    wider = estimate(spec(peft={"peft_type": "lora", "rank": 16, "target_modules": ["q_proj", "k_proj", "v_proj",
                                                                                      "o_proj"]}), None)
    assert wider.optimizer_gb > lora.optimizer_gb
    regex = estimate(spec(peft={"peft_type": "lora", "rank": 16,
                                "target_modules": ["language_model.model.layers.*self_attn.(q_proj|k_proj|v_proj|o_proj)"]}),
                     None)
    assert regex.optimizer_gb == pytest.approx(wider.optimizer_gb)
    every = estimate(spec(peft={"peft_type": "lora", "rank": 16, "target_modules": "all-linear"}), None)
    assert every.optimizer_gb > wider.optimizer_gb


def test_qlora_stores_the_base_in_four_bits():
    lora = estimate(spec(peft={"peft_type": "lora"}), None)
    qlora = estimate(spec(peft={"peft_type": "qlora_4bit"}), None)
    assert qlora.params_gb < lora.params_gb / 3


def test_cpu_offload_moves_the_sharded_state_to_the_host():
    est = estimate(spec(cpu_offload=True), None)
    assert est.params_gb == est.grads_gb == est.optimizer_gb == 0
    assert est.total_gb < estimate(spec(), None).total_gb


def test_gradient_accumulation_keeps_gradients_through_the_next_micro_batch():
    base = spec(sharding_strategy="no_shard", nodes=1, devices=1, model=LLAMA32_1B, max_context_width=4096)
    accumulating = copy.deepcopy(base)
    accumulating["recipes"]["model"]["global_batch_size"] = 4
    single, accumulated = estimate(base, None), estimate(accumulating, None)
    assert accumulated.total_gb > single.total_gb
    assert "grad accumulation 4" in accumulated.explain


def test_a_layout_or_batch_the_trainer_refuses_is_estimated_and_marked_assumed():
    """The mesh and accumulation come from the trainer's arithmetic (adapter.mesh); where it refuses
    the recipe (the plan reports why), the estimate falls back and says so."""
    fine = estimate(spec(nodes=1, devices=8, global_batch_size=16), None)
    assert "grad accumulation 2" in fine.explain and "assumed" not in fine.explain
    uneven = estimate(spec(nodes=1, devices=8, global_batch_size=20), None)  # 20 % (1 x 8): refused
    assert "grad accumulation 2" in uneven.explain and "accumulation assumed" in uneven.explain
    bad_tp = estimate(spec(nodes=1, devices=8, tensor_model_parallel_degree=3), None)  # 3 does not divide 8
    assert "layout assumed fully sharded" in bad_tp.explain


def test_shard_grad_op_keeps_every_layer_gathered():
    assert estimate(spec(sharding_strategy="shard_grad_op"), None).gathered_gb > 3 * estimate(spec(), None).gathered_gb


def test_expert_parallel_splits_the_experts():
    one = estimate(spec(model=MIXTRAL_8X7B, nodes=1, sharding_strategy="no_shard"), None)
    eight = estimate(spec(model=MIXTRAL_8X7B, nodes=1, sharding_strategy="no_shard",
                          expert_model_parallel_degree=8), None)
    assert eight.params_gb < one.params_gb / 4
    assert "46.70B params (12.88B active)" in one.explain


def test_fp32_doubles_the_activations_and_drops_the_gathered_copies_on_one_rank():
    # A small vocabulary, so the loss tensors (fp32 in both) do not hide the layers' activations.
    kwargs = dict(model=dict(LLAMA32_1B, vocab_size=32000), nodes=1, devices=1, max_context_width=1024)
    bf16 = estimate(spec(**kwargs), None)
    fp32 = estimate(spec(precision=32, accelerator="cpu", **kwargs), None)
    assert fp32.activations_gb > 1.5 * bf16.activations_gb
    assert bf16.gathered_gb > 0 and fp32.gathered_gb == 0
    # fp32 with grouped-query attention on a GPU runs SDPA's math kernel: seq x seq probabilities.
    gpu = estimate(spec(precision=32, **kwargs), None)
    assert gpu.activations_gb > fp32.activations_gb + 16 * 32 * 1024 * 1024 * 4 / 1e9 * 0.99


@pytest.mark.parametrize("trainer,model,sixteen", [
    ({"precision": "bf16"}, {}, True), ({"precision": "bf16-mixed"}, {}, True), ({"precision": 32}, {}, False),
    ({"precision": "32-true"}, {}, False), ({}, {}, True),  # the trainer's default is bf16
    ({"precision": 32}, {"precision": "bf16"}, False),  # trainer.precision is the one the trainer reads first
    ({}, {"precision": "fp32"}, False), ({"precision": "fp16"}, {}, False)])  # refused (the plan says so): fp32
def test_precision_is_what_the_trainer_computes_in(trainer, model, sixteen):
    assert is_16bit({"trainer": trainer, "model": model}) is sixteen


def test_fraction_compares_with_the_device_memory_and_runtime_overhead_is_added():
    est = estimate(spec(), 80.0)
    assert est.fraction == pytest.approx(est.total_gb / 80.0)
    assert est.tensors_gb == pytest.approx(est.total_gb - OVERHEAD_GB["gpu"])
    assert estimate(spec(), None).fraction is None


def test_a_bare_recipe_is_accepted_like_the_adapter_does():
    data = spec()
    assert estimate(data["recipes"], 80.0).total_gb == pytest.approx(estimate(data, 80.0).total_gb)


def test_a_recipe_without_architecture_gives_no_estimate():
    est = estimate({"recipes": {"model": {"model_type": "llama_v3", "hf_model_name_or_path": "x"},
                                "trainer": {"devices": 8}}}, 80.0)
    assert not est.known and est.fraction is None and est.explain.startswith("no estimate")


def test_nproc_per_node_sets_the_local_world():
    data = spec(cluster={"type": "local", "nproc_per_node": 2}, nodes=1, devices=8)
    assert layout(data).world == 2


# --- measured ---------------------------------------------------------------------------------

# Trains a tiny fp32 Llama on CPU and prints its peak RSS growth over a warmed-up baseline.
# Measurement: RSS, with MALLOC_MMAP_THRESHOLD_=65536. glibc's default threshold adapts upward
# after big frees, so later multi-MB tensors come from the heap and freed ones stay resident: RSS then
# reads about 35% above the live tensor bytes. With a fixed threshold every tensor over 64 KB is its
# own mapping, returned on free, and peak RSS growth follows live tensor bytes (checked once
# against torch.profiler's memory events: 803 MB of RSS growth vs an 785 MB tensor peak here).
# The warm-up loads transformers' modeling code, thread pools and kernels before the baseline.
MEASURE = r"""
import gc, json, resource, sys
import torch, transformers

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

arch, mb, seq = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
def train(config, mb, seq, steps):
    model = transformers.LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(steps):
        ids = torch.randint(0, config.vocab_size, (mb, seq))
        model(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
train(transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=2, vocab_size=64), 2, 16, 2)
gc.collect()
base = rss()
train(transformers.LlamaConfig(**arch), mb, seq, 3)
print(json.dumps({"peak_growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base}))
"""


@pytest.mark.slow
def test_estimate_matches_a_measured_cpu_training_peak():
    pytest.importorskip("transformers")
    arch = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                num_key_value_heads=4, vocab_size=8000)
    mb, seq = 4, 512
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(arch), str(mb), str(seq)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])["peak_growth"] / 1e9
    est = estimate({"recipes": {"trainer": {"devices": 1, "num_nodes": 1, "accelerator": "cpu"},
                                "model": dict(arch, model_type="llama_v3", train_batch_size=mb,
                                              max_context_width=seq, precision=32)}}, None)
    ratio = est.tensors_gb / measured
    print(f"estimate {est.tensors_gb:.3f} GB, measured peak RSS growth {measured:.3f} GB, ratio {ratio:.3f}")
    assert 0.75 < ratio < 1.25, (est.explain, measured)


SAVED_SHAPE = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=1024)


def _saved_bytes(peft_config: dict | None, mb: int, seq: int) -> float:
    """Bytes of the distinct non-parameter tensors autograd keeps for backward in one forward and
    loss of a transformers Llama (fp32, SDPA), with peft's LoRA when `peft_config` is given."""
    import torch
    import transformers
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SAVED_SHAPE, tie_word_embeddings=False,
                                                                   attn_implementation="sdpa"))
    if peft_config is not None:
        import peft
        model = peft.get_peft_model(model, peft.LoraConfig(**peft_config))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t
    ids = torch.randint(0, SAVED_SHAPE["vocab_size"], (mb, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(input_ids=ids, use_cache=False).logits.float()
        torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), ids.view(-1))
    return float(sum(saved.values()))


@pytest.mark.parametrize("peft_config", [
    None,
    {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"]},
], ids=["full", "lora-qv", "lora-qkvo", "lora-dropout-mlp"])
def test_activations_are_what_autograd_saves(peft_config):
    """The activation model against the tensors transformers' Llama (and peft's adapters over its
    frozen projections) really hand to autograd, counted by storage. The loss's log-softmax output
    is the one loss tensor saved in forward; the estimate adds its gradient and the logits' in
    backward (8 more bytes per logit), which are taken off here."""
    pytest.importorskip("peft")
    mb, seq = 2, 64
    saved = _saved_bytes(peft_config, mb, seq)
    peft = None if peft_config is None else {"peft_type": "lora", "rank": peft_config["r"],
                                              "dropout": peft_config["lora_dropout"],
                                              "target_modules": peft_config["target_modules"]}
    model = dict(SAVED_SHAPE, model_type="llama_v3", train_batch_size=mb, max_context_width=seq, precision=32,
                 peft=peft or {})
    est = estimate({"recipes": {"trainer": {"devices": 1, "num_nodes": 1, "accelerator": "cpu"}, "model": model}}, None)
    backward_only = 8 * SAVED_SHAPE["vocab_size"] * mb * seq
    assert est.activations_gb * 1e9 - backward_only == pytest.approx(saved, rel=0.03)
