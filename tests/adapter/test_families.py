"""Every model family of HyperPod's v1 Hugging Face recipes trains through `adapter.train`: one real
recipe per family, composed by hpctl's pipeline and shrunk through overrides only, runs 3 steps
under torchrun with 2 CPU processes and its loss falls. Recipes the trainer cannot run on a CPU
are refused with a reason."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.trainer import REPO, env, ok, records
from tests.adapter.hyperpod import V1, compose, require, tiny_checkpoint, write

# Overrides every recipe needs to run small on 2 CPU processes, and why.
SHRINK = [
    "recipes.trainer.accelerator=cpu",      # no GPU here
    "recipes.trainer.precision=fp32",       # CPU runs compute in fp32
    "recipes.trainer.devices=2",            # 2 processes on 1 node
    "recipes.trainer.num_nodes=1",
    "recipes.trainer.max_steps=3",
    "recipes.trainer.log_every_n_steps=1",  # a metrics line per step (falcon logs every 10)
    # Validation on the same 2 synthetic batches after every step: fresh training batches differ
    # more from each other than 3 LoRA steps on a random base move the loss; these do not.
    "recipes.trainer.val_check_interval=1",
    "recipes.trainer.limit_val_batches=2",
    "recipes.model.val_batch_size=2",
    "recipes.model.num_hidden_layers=2",
    "recipes.model.hidden_size=64",
    "recipes.model.num_attention_heads=4",
    "recipes.model.num_key_value_heads=2",
    "recipes.model.intermediate_size=128",
    "recipes.model.vocab_size=256",
    "recipes.model.max_context_width=64",   # max_position_embeddings follows by interpolation
    "recipes.model.train_batch_size=2",
    "recipes.model.shard_degree=null",      # the recipes shard over 8-128 GPUs: shard over what there is
    "recipes.model.data.use_synthetic_data=true",
    "recipes.model.optim.lr=0.003",         # a rate at which 3 steps lower the loss steadily
    "recipes.model.optim.sched.warmup_steps=0",
    "recipes.model.optim.sched.min_lr=0",
]
EXPERTS = ["recipes.model.num_local_experts=4", "recipes.model.num_experts_per_tok=2"]

# family -> (recipe, extra overrides, fine-tuning from a checkpoint)
FAMILIES = {
    # tensor_model_parallel_degree 2 as written: the 2 processes form the tensor-parallel group
    "llama_v3": ("training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain", [], False),
    "mistral": ("training/mistral/hf_mistral_7b_seq8k_gpu_p5x16_pretrain", [], False),
    "mixtral": ("training/mixtral/hf_mixtral_8x7b_seq8k_gpu_p5x16_pretrain", EXPERTS, False),
    # text-only LoRA; the recipe's LoRA target regex is written for the multimodal wrapper
    "llama_v4": ("fine-tuning/llama/hf_llama4_17b_16e_seq4k_gpu_lora_text_to_text",
                 ["recipes.model.num_local_experts=4", "recipes.model.num_experts_per_tok=1",
                  "recipes.model.intermediate_size_mlp=128"], True),
    # DeepSeek-V3 MoE with multi-head latent attention; the recipe leaves MLA and routing sizes to
    # the 671B defaults, so they are shrunk too. It offloads activations (a no-op on the CPU).
    "deepseek_r1": ("fine-tuning/deepseek/hf_deepseek_r1_671b_seq8k_gpu_lora",
                    ["recipes.model.num_key_value_heads=4",
                     "recipes.model.n_routed_experts=4", "recipes.model.num_experts_per_tok=2",
                     "recipes.model.moe_intermediate_size=32", "recipes.model.n_shared_experts=1",
                     "recipes.model.first_k_dense_replace=1", "recipes.model.q_lora_rank=32",
                     "recipes.model.kv_lora_rank=16", "recipes.model.qk_rope_head_dim=8",
                     "recipes.model.qk_nope_head_dim=8", "recipes.model.v_head_dim=16",
                     "recipes.model.n_group=1", "recipes.model.topk_group=1"], True),
    "deepseek_r1_llama_v3": ("fine-tuning/deepseek/hf_deepseek_r1_distilled_llama_8b_seq8k_gpu_lora", [], True),
    "deepseek_r1_qwen_v2": ("fine-tuning/deepseek/hf_deepseek_r1_distilled_qwen_1_dot_5b_seq8k_gpu_fine_tuning", [], True),
    "gpt_oss": ("fine-tuning/gpt_oss/hf_gpt_oss_20b_seq16k_gpu_lora", ["recipes.model.head_dim=16"] + EXPERTS, True),
    # falcon.yaml takes its architecture from tiiuae/falcon-7b's config.json on the Hub; without a
    # network the shrunk architecture comes from the fields above instead.
    "falcon": ("training/custom_model/falcon", ["recipes.model.hf_model_name_or_path=null"], False),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_trains_shrunk(family: str, tmp_path: Path) -> None:
    require(V1)
    recipe, extra, finetune = FAMILIES[family]
    overrides = SHRINK + extra
    spec = compose(V1, recipe, tmp_path, overrides)
    assert spec["recipes"]["model"]["model_type"] == family
    if finetune:  # the recipe fine-tunes a Hugging Face checkpoint: one of the shrunk architecture
        base = tiny_checkpoint(spec["recipes"], tmp_path / "base")
        spec = compose(V1, recipe, tmp_path, overrides + [f"recipes.model.hf_model_name_or_path={base}"])
    results = Path(spec["recipes"]["run"]["results_dir"])
    path = write(spec, tmp_path / "job_spec.json")
    proc = ok(subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                              "-m", "adapter.train", "--config", str(path)],
                             cwd=REPO, env=env(), capture_output=True, text=True, timeout=300))
    tp = spec["recipes"]["model"].get("tensor_model_parallel_degree") or 1
    assert f"tp={tp}," in proc.stdout
    rows = records(results)
    losses, val = [r["loss"] for r in rows], [r["val_loss"] for r in rows]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses + val), rows
    assert val[-1] < val[0], val
    if (spec["recipes"]["model"].get("peft") or {}).get("peft_type") is None:  # full training: fresh batches show it too
        assert losses[-1] < losses[0], losses


def refusal(recipe: str, tmp_path: Path, *overrides: str) -> str:
    from adapter.config import from_recipe
    from adapter.reader import ConfigError
    spec = compose(V1, recipe, tmp_path, ["recipes.trainer.accelerator=cpu", *overrides])
    with pytest.raises(ConfigError) as exc:
        from_recipe(spec["recipes"])
    return str(exc.value)


# HyperPod's v1 recipes with model.multi_modal or peft_type qlora_4bit, and the context-parallel
# degree each asks for (the long-sequence QLoRA ones split sequences with ring attention).
MULTIMODAL_AND_QLORA = {
    "training/llama/hf_llama3_2_11b_seq8k_gpu_p5x4_pretrain": 1,
    "training/llama/hf_llama3_2_90b_seq8k_gpu_p5x32_pretrain": 1,
    "fine-tuning/llama/hf_llama4_17b_16e_seq4k_gpu_lora_multimodal_finetuning": 1,
    "fine-tuning/llama/hf_llama4_17b_16e_seq8k_gpu_lora_multimodal_finetuning": 1,
    "fine-tuning/llama/hf_llama3_405b_seq8k_gpu_qlora": 1,
    "fine-tuning/llama/hf_llama3_405b_seq16k_gpu_qlora": 1,
    "fine-tuning/llama/hf_llama3_405b_seq32k_gpu_qlora": 8,
    "fine-tuning/llama/hf_llama3_405b_seq128k_gpu_qlora": 16,
    "fine-tuning/deepseek/hf_deepseek_r1_671b_seq8k_gpu_qlora": 1,
}


@pytest.mark.parametrize("recipe", sorted(MULTIMODAL_AND_QLORA))
def test_multimodal_and_qlora_recipes_pass_the_trainer_config(recipe: str, tmp_path: Path) -> None:
    """As written (accelerator included), with only the paths a user sets: the model directory
    and the data directory; with the world size the recipe's nodes start (the mesh rules too)."""
    from adapter.config import from_recipe
    require(V1)
    spec = compose(V1, recipe, tmp_path, ["recipes.model.hf_model_name_or_path=/models/base",
                                          "recipes.model.data.train_dir=/data/train"])
    trainer = spec["recipes"]["trainer"]
    cfg = from_recipe(spec["recipes"], trainer["devices"] * trainer["num_nodes"])
    assert cfg.multi_modal or (cfg.lora is not None and cfg.lora.quantize_base)
    assert cfg.parallel.cp == MULTIMODAL_AND_QLORA[recipe]


def test_llama4_lora_regex_targets_the_text_model(tmp_path: Path) -> None:
    """HyperPod's Llama 4 target (a regex written for the multimodal wrapper) selects the text
    model's attention projections, and nothing else."""
    import re

    from adapter.config import from_recipe
    require(V1)
    spec = compose(V1, FAMILIES["llama_v4"][0], tmp_path, ["recipes.trainer.accelerator=cpu",
                                                            "recipes.model.hf_model_name_or_path=/base",
                                                            "recipes.model.data.use_synthetic_data=true"])
    pattern = from_recipe(spec["recipes"]).lora.target_modules
    assert isinstance(pattern, str)
    assert re.fullmatch(pattern, "model.layers.3.self_attn.k_proj")
    assert not re.fullmatch(pattern, "model.layers.3.feed_forward.experts.gate_up_proj")
