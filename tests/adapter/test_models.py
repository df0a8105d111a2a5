"""The model table: every model_type builds on the meta device, fills deterministically and runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapter import models
from adapter.config import from_recipe
from adapter.reader import ConfigError
from tests.helpers.trainer import tiny_recipe

EXTRA = {
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "llama_v4": {"num_local_experts": 4, "num_experts_per_tok": 1, "intermediate_size_mlp": 96},
    "deepseek_r1": {"n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "n_shared_experts": 1,
                    "first_k_dense_replace": 1, "q_lora_rank": 32, "kv_lora_rank": 16, "qk_rope_head_dim": 8,
                    "qk_nope_head_dim": 8, "v_head_dim": 16, "num_key_value_heads": 4, "n_group": 1, "topk_group": 1},
    "gpt_oss": {"num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": 16, "sliding_window": 8},
    "falcon": {"num_kv_heads": 1},
}
# adapter.modelsize models these families' layouts exactly (Llama 4's shared expert and Falcon's
# fused, parallel blocks it does not), so their counts must agree with the built model.
COUNTED = ("llama_v3", "deepseek_r1_llama_v3", "mistral", "mixtral", "qwen_v2", "deepseek_r1_qwen_v2",
           "deepseek_r1", "gpt_oss")


def build(model_type: str, **model: object) -> tuple[object, object, torch.nn.Module]:
    cfg = from_recipe(tiny_recipe(Path("/r"), model={"model_type": model_type, **EXTRA.get(model_type, {}), **model}))
    config = models.hf_config(cfg)
    return cfg, config, models.build_empty(config)


@pytest.mark.parametrize("model_type", sorted(models.ARCHITECTURES))
def test_every_model_type_builds_fills_and_runs(model_type: str) -> None:
    cfg, config, model = build(model_type)
    assert all(p.device.type == "meta" for p in model.parameters())
    if model_type in COUNTED:
        from adapter.modelsize import param_count
        assert sum(p.numel() for p in model.parameters()) == param_count(models.arch_fields(cfg, config))
    models.materialize(model, torch.device("cpu"), seed=1, std=0.02, weights=None)
    ids = torch.randint(256, (2, 16), generator=torch.Generator().manual_seed(0))
    logits = model(input_ids=ids).logits
    assert logits.shape == (2, 16, 256) and torch.isfinite(logits).all()


def test_init_depends_on_seed_and_name_only() -> None:
    """Same seed: same weights (whatever the layout, which only selects slices); norms start at one."""
    _, _, a = build("llama_v3")
    _, _, b = build("llama_v3")
    _, _, c = build("llama_v3")
    for model, seed in ((a, 1), (b, 1), (c, 2)):
        models.materialize(model, torch.device("cpu"), seed=seed, std=0.02, weights=None)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.layers.0.self_attn.q_proj.weight"], sc["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(sa["model.norm.weight"], torch.ones(64))
    assert abs(sa["model.embed_tokens.weight"].std().item() - 0.02) < 0.002


def test_tied_embeddings_stay_tied() -> None:
    _, _, model = build("llama_v3", tie_word_embeddings=True)
    models.materialize(model, torch.device("cpu"), seed=1, std=0.02, weights=None)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_rope_scaling_reaches_the_config() -> None:
    scaling = {"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
               "original_max_position_embeddings": 64}
    _, config, _ = build("llama_v3", rope_scaling=scaling, max_position_embeddings=512)
    params = getattr(config, "rope_parameters", None) or config.rope_scaling
    assert params["rope_type"] == "llama3" and params["factor"] == 8.0


def test_unknown_model_type_and_missing_fields_are_refused() -> None:
    with pytest.raises(ConfigError, match="'gpt2' is not a model family this trainer builds"):
        build("gpt2")
    with pytest.raises(ConfigError) as exc:
        build("llama_v3", hidden_size=None)
    assert exc.value.key == "model.hidden_size"
