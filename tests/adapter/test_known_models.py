"""Each row of adapter.known_models.HUB, built by the real transformers config class on the meta
device: the count hpctl plans with (modelsize) equals the parameters transformers would create."""
from __future__ import annotations

import json

import pytest

from adapter import known_models
from adapter.modelsize import param_count

ROWS = {id(fields): (hub, fields) for hub, fields in known_models.HUB.items()}  # one per distinct architecture


@pytest.mark.parametrize("hub,fields", list(ROWS.values()), ids=[hub for hub, _ in ROWS.values()])
def test_table_row_matches_the_transformers_model_it_describes(hub: str, fields: dict) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if fields["model_type"] not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no {fields['model_type']} config class")
    config = transformers.AutoConfig.for_model(fields["model_type"], **{k: v for k, v in fields.items()
                                                                         if k != "model_type"})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert param_count(fields) == sum(p.numel() for p in model.parameters())


def test_deepseek_r1_is_the_671b_mixture_of_experts() -> None:
    r1 = known_models.HUB["deepseek-ai/DeepSeek-R1"]
    assert round(param_count(r1) / 1e9) == 671 and round(param_count(r1, active=True) / 1e9) == 38  # 37.55B


def test_a_readable_checkpoint_dir_wins_over_the_table(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**known_models.HUB["Qwen/Qwen3-8B"], "num_hidden_layers": 2,
                                                      "architectures": ["Qwen3ForCausalLM"], "torch_dtype": "bfloat16"}))
    found = known_models.lookup(str(tmp_path))
    assert found.from_checkpoint and found.fields["num_hidden_layers"] == 2 and "architectures" not in found.fields
    assert known_models.lookup("Qwen/Qwen3-8B").source == "hub table: Qwen/Qwen3-8B"
    assert known_models.lookup("/nowhere/model") is None and known_models.lookup(None) is None


def test_a_vision_language_config_gives_its_language_model(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {"hidden_size": 64}}))
    assert known_models.read_config(str(tmp_path))["hidden_size"] == 64
