"""The architecture a job will really build, known before it runs: torch-free.

A recipe's `model` fields may describe less than the checkpoint it fine-tunes: HyperPod's
deepseek_r1 671B recipe gives the dense fields of DeepSeek V3 and none of its 256 routed experts or
its MLA attention, so counting from the recipe plans a 38B dense model. The trainer builds what the
checkpoint's config.json says. So plan-time counts (parameters, memory, MFU FLOPs) and the trainer's
shape checks take the architecture from, in order:

1. the checkpoint directory's config.json, when `hf_model_name_or_path` (LLMFT: `model_name_or_path`)
   is a directory readable here (read as JSON; a vision-language config's `text_config` is its
   language model);
2. HUB below, when the value is a Hugging Face id: public config facts of the models HyperPod's v1
   and v2 recipes name, in transformers' field names (tests/adapter/test_known_models.py builds each
   row with the real transformers config class on the meta device and compares the counts);
3. otherwise nothing: the caller counts from the recipe's fields and says what they lack.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fields that decide the shapes; the others of a config.json (rope scaling, dropout, ids) do not count.
SHAPE_FIELDS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "tie_word_embeddings", "attention_bias", "mlp_bias",
    "num_local_experts", "num_experts", "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
    "n_shared_experts", "shared_expert_intermediate_size", "first_k_dense_replace",
    "q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim",
    "n_group", "topk_group", "sliding_window", "use_sliding_window",
)
# Recipe fields the checkpoint decides: a recipe value that differs is a contradiction.
CHECKED_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "num_local_experts", "num_experts_per_tok", "n_routed_experts",
                  "moe_intermediate_size")

_LLAMA3 = {"model_type": "llama", "vocab_size": 128256, "tie_word_embeddings": False}
_LLAMA3_8B = {**_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8}
_LLAMA3_70B = {**_LLAMA3, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
               "num_attention_heads": 64, "num_key_value_heads": 8}
_QWEN25 = {"model_type": "qwen2", "vocab_size": 152064, "tie_word_embeddings": False}
_QWEN25_7B = {**_QWEN25, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
              "num_attention_heads": 28, "num_key_value_heads": 4}
_QWEN25_14B = {**_QWEN25, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 48,
               "num_attention_heads": 40, "num_key_value_heads": 8}
_QWEN25_32B = {**_QWEN25, "hidden_size": 5120, "intermediate_size": 27648, "num_hidden_layers": 64,
               "num_attention_heads": 40, "num_key_value_heads": 8}
_QWEN25_72B = {**_QWEN25, "hidden_size": 8192, "intermediate_size": 29568, "num_hidden_layers": 80,
               "num_attention_heads": 64, "num_key_value_heads": 8}
_QWEN3 = {"model_type": "qwen3", "vocab_size": 151936, "head_dim": 128, "num_key_value_heads": 8}
_DEEPSEEK_V3 = {
    "model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
    "n_shared_experts": 1, "n_routed_experts": 256, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
    "n_group": 8, "topk_group": 4, "tie_word_embeddings": False,
}
_MIXTRAL_8X7B = {"model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                 "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "num_local_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": False,
                 "sliding_window": None}
_GPT_OSS = {"model_type": "gpt_oss", "vocab_size": 201088, "hidden_size": 2880, "intermediate_size": 2880,
            "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "num_experts_per_tok": 4,
            "tie_word_embeddings": False}

# Hugging Face id -> the shape fields of its config.json (transformers' names).
HUB: dict[str, dict[str, Any]] = {
    "deepseek-ai/DeepSeek-R1": _DEEPSEEK_V3,
    "deepseek-ai/DeepSeek-V3": _DEEPSEEK_V3,
    "mistralai/Mixtral-8x7B-v0.1": _MIXTRAL_8X7B,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": _MIXTRAL_8X7B,
    "meta-llama/Llama-3.1-8B": _LLAMA3_8B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA3_8B,
    "meta-llama/Llama-3.1-70B": _LLAMA3_70B,
    "meta-llama/Llama-3.3-70B-Instruct": _LLAMA3_70B,
    "meta-llama/Llama-3.1-405B": {**_LLAMA3, "hidden_size": 16384, "intermediate_size": 53248,
                                  "num_hidden_layers": 126, "num_attention_heads": 128, "num_key_value_heads": 8},
    "meta-llama/Llama-3.2-1B-Instruct": {**_LLAMA3, "hidden_size": 2048, "intermediate_size": 8192,
                                         "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
                                         "head_dim": 64, "tie_word_embeddings": True},
    "meta-llama/Llama-3.2-3B-Instruct": {**_LLAMA3, "hidden_size": 3072, "intermediate_size": 8192,
                                         "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
                                         "head_dim": 128, "tie_word_embeddings": True},
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": _LLAMA3_8B,
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": _LLAMA3_70B,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": _QWEN25_7B,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": _QWEN25_14B,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": _QWEN25_32B,
    "Qwen/Qwen2.5-7B-Instruct": _QWEN25_7B,
    "Qwen/Qwen2.5-14B-Instruct": _QWEN25_14B,
    "Qwen/Qwen2.5-32B-Instruct": _QWEN25_32B,
    "Qwen/Qwen2.5-72B-Instruct": _QWEN25_72B,
    "Qwen/Qwen3-0.6B": {**_QWEN3, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
                        "num_attention_heads": 16, "tie_word_embeddings": True},
    "Qwen/Qwen3-1.7B": {**_QWEN3, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                        "num_attention_heads": 16, "tie_word_embeddings": True},
    "Qwen/Qwen3-4B": {**_QWEN3, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                      "num_attention_heads": 32, "tie_word_embeddings": True},
    "Qwen/Qwen3-8B": {**_QWEN3, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                      "num_attention_heads": 32, "tie_word_embeddings": False},
    "Qwen/Qwen3-14B": {**_QWEN3, "hidden_size": 5120, "intermediate_size": 17408, "num_hidden_layers": 40,
                       "num_attention_heads": 40, "tie_word_embeddings": False},
    "Qwen/Qwen3-32B": {**_QWEN3, "hidden_size": 5120, "intermediate_size": 25600, "num_hidden_layers": 64,
                       "num_attention_heads": 64, "tie_word_embeddings": False},
    "openai/gpt-oss-20b": {**_GPT_OSS, "num_hidden_layers": 24, "num_local_experts": 32},
    "openai/gpt-oss-120b": {**_GPT_OSS, "num_hidden_layers": 36, "num_local_experts": 128},
}
# HyperPod's recipes name bf16 copies of gpt-oss: the same architecture.
HUB["openai/gpt-oss-20b-bf16"] = HUB["openai/gpt-oss-20b"]
HUB["openai/gpt-oss-120b-bf16"] = HUB["openai/gpt-oss-120b"]


@dataclass(frozen=True)
class Known:
    """An architecture and where it was read: a checkpoint's config.json or the hub table."""

    fields: dict[str, Any]  # transformers' names, shape fields only
    source: str  # "checkpoint DIR/config.json" or "hub table: ID"
    from_checkpoint: bool

    @property
    def is_moe(self) -> bool:
        return any(isinstance(self.fields.get(k), int) and self.fields[k] > 1
                   for k in ("num_local_experts", "num_experts", "n_routed_experts"))


def read_config(directory: str) -> dict[str, Any] | None:
    """A checkpoint directory's config.json as shape fields, or None when there is no readable one.
    A vision-language config (`text_config`) gives its language model's fields."""
    path = Path(directory) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    text = data.get("text_config")
    if isinstance(text, dict):
        data = {**data, **text}
    return {k: data[k] for k in SHAPE_FIELDS if k in data}  # a null sliding_window means none


def lookup(name_or_path: Any) -> Known | None:
    """The architecture of the model a recipe names (see the module docstring for the order)."""
    if not isinstance(name_or_path, str) or not name_or_path:
        return None
    fields = read_config(name_or_path)
    if fields:
        return Known(fields, f"checkpoint {name_or_path.rstrip('/')}/config.json", True)
    row = HUB.get(name_or_path.rstrip("/"))
    return Known(dict(row), f"hub table: {name_or_path.rstrip('/')}", False) if row else None


def contradictions(recipe_model: dict[str, Any], known: Known) -> list[tuple[str, Any, Any]]:
    """(field, recipe value, checkpoint value) for every recipe shape field the checkpoint
    contradicts; the job builds the checkpoint's, so the recipe's would be a silent lie."""
    out = []
    for key in CHECKED_FIELDS:
        mine, theirs = recipe_model.get(key), known.fields.get(key)
        if isinstance(mine, int) and not isinstance(mine, bool) and isinstance(theirs, int) and mine != theirs:
            out.append((key, mine, theirs))
    return out
