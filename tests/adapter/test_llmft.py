"""HyperPod v2 LLM fine-tuning recipes (llm_finetuning_aws): the translation into the trainer's
config, SFT samples, and one real SFT-LoRA and one DPO recipe, shrunk through overrides, trained
from a tiny local Llama checkpoint on 2 CPU processes."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adapter.config import from_recipe
from adapter.reader import ConfigError
from tests.helpers.trainer import REPO, env, ok, records
from tests.adapter.hyperpod import LLMFT_REFUSALS, SFT, TA, V2, chat_tokenizer, compose, require, write

DPO = "fine-tuning/llama/llmft_llama3_2_1b_instruct_seq4k_gpu_dpo"
ANSWERS = {"cat": "yes good", "dog": "no bad", "tree": "yes bad", "mat": "no good"}
WRONG = {"cat": "no bad", "dog": "yes good", "tree": "no good", "mat": "yes bad"}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (hidden 64, 2 layers, vocab 256) saved with the chat tokenizer: what
    model_name_or_path points at instead of meta-llama/Llama-3.2-1B-Instruct."""
    from transformers import LlamaConfig, LlamaForCausalLM
    out = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(out)
    chat_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """20 chat rows (system, user question, assistant answer) and 20 preference rows."""
    out = tmp_path_factory.mktemp("llmft-data")
    things = [list(ANSWERS)[i % 4] for i in range(20)]
    chat = [{"messages": [{"role": "system", "content": "answer"},
                          {"role": "user", "content": f"what is the {t}"},
                          {"role": "assistant", "content": ANSWERS[t]}]} for t in things]
    pairs = [{"prompt": f"question : what is the {t}", "chosen": ANSWERS[t], "rejected": WRONG[t]} for t in things]
    files = {"sft": out / "chat.jsonl", "dpo": out / "pairs.jsonl"}
    files["sft"].write_text("".join(json.dumps(r) + "\n" for r in chat))
    files["dpo"].write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return files


def shrink(model: Path, train: Path) -> list[str]:
    """Overrides that point the recipe at local files and size it for 2 CPU processes."""
    return [
        "recipes.trainer.accelerator=cpu",             # hpctl's addition; LLMFT recipes assume GPUs
        "recipes.trainer.devices=2",
        f"recipes.training_config.model_config.model_name_or_path={model}",
        f"recipes.training_config.datasets.train_data.file_path={train}",
        TA + "max_len=64",
        TA + "micro_train_batch_size=2",
        TA + "train_batch_size=4",
        # 16 of the 20 rows train (4 steps an epoch), 4 validate: one batch of 2 on each process
        "recipes.training_config.datasets.train_val_split_ratio=0.8",
        TA + "max_epochs=2",
        TA + "learning_rate=0.01",                     # a rate at which 8 steps of a tiny model show progress
        TA + "eval_steps=1",                           # validate after every step
    ]


def spec(tmp_path: Path, recipe: str, model: Path, train: Path, *extra: str) -> dict:
    require(V2)
    return compose(V2, recipe, tmp_path, shrink(model, train) + list(extra))


def test_sft_lora_recipe_translation(tmp_path: Path, base_model: Path, data: dict[str, Path]) -> None:
    cfg = from_recipe(spec(tmp_path, SFT, base_model, data["sft"])["recipes"])
    assert cfg.hf_model == str(base_model) and cfg.do_finetune and cfg.dpo is None
    assert cfg.max_steps == 8 and cfg.micro_batch == 2 and cfg.global_batch == 4 and cfg.data.seq_len == 64
    assert cfg.optim.lr == 0.01 and cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.0
    sched = cfg.optim.sched
    assert (sched.name, sched.warmup_steps, sched.min_lr, sched.max_steps) == ("CosineAnnealing", 1, pytest.approx(0.001), 8)
    assert cfg.parallel.sharding_strategy == "hybrid_shard" and cfg.parallel.shard_degree == 2
    assert cfg.parallel.activation_checkpointing and cfg.parallel.precision == "fp32" and cfg.grad_clip == 1.0
    assert cfg.lora.rank == 16 and cfg.lora.alpha == 32 and cfg.lora.dropout == 0.05 and cfg.lora.target_modules == "all-linear"
    assert cfg.seed == 42 and cfg.val_every == 1 and cfg.val_batches is None
    assert (cfg.data.train_fraction, cfg.data.split_seed, cfg.data.mask_prompt) == (0.8, 42, True)
    assert cfg.data.tokenizer == str(base_model) and cfg.data.dataset_type == "jsonl"
    assert cfg.checkpoint.keep == 3 and cfg.checkpoint.every_n_steps == 4 and cfg.checkpoint.export_last
    assert cfg.tensorboard_dir == cfg.results_dir / "logs"


def test_dpo_recipe_translation(tmp_path: Path, base_model: Path, data: dict[str, Path]) -> None:
    cfg = from_recipe(spec(tmp_path, DPO, base_model, data["dpo"], TA + "reference_free=true")["recipes"])
    assert cfg.dpo.beta == 0.01 and cfg.dpo.label_smoothing == 0.0 and cfg.dpo.reference_free
    assert cfg.parallel.sharding_strategy == "hybrid_shard" and cfg.max_steps == 8


@pytest.mark.parametrize("override, key", LLMFT_REFUSALS)
def test_refusals_name_the_llmft_key(tmp_path: Path, base_model: Path, data: dict[str, Path], override: str,
                                     key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_recipe(spec(tmp_path, SFT, base_model, data["sft"], override)["recipes"])
    assert exc.value.key == key


def test_every_key_of_the_translation_names_an_llmft_key() -> None:
    """A refusal of the translated v1 recipe is reported at the LLMFT key the value came from: every
    key the translation writes (SFT, DPO, LoRA) resolves to one of the recipe's own sections, so
    none is reported at a v1 key (model.grad_clip, model.optim.sched.min_lr) the recipe lacks."""
    from adapter.llmft import _v1_recipe, llmft_key
    from adapter.reader import Reader
    recipe = {"run": {"name": "x", "results_dir": "/r"}, "trainer": {"devices": 2},
              "training_config": {"model_config": {"peft_config": {"peft_type": "lora"}},
                                  "training_args": {"use_tensorboard": "tb"}}}

    def leaves(node: dict, path: str = "") -> list[str]:
        return [leaf for k, v in node.items()
                for leaf in (leaves(v, f"{path}{k}.") if isinstance(v, dict) and v else [f"{path}{k}"])]
    keys = {key for trainer_type in ("sft", "dpo")
            for key in leaves(_v1_recipe(Reader(recipe), "/m", trainer_type, "/t.jsonl", None, 1, 2, 4, 1))}
    assert "model.grad_clip" in keys and "model.optim.sched.min_lr" in keys
    own = {"trainer.devices", "trainer.num_nodes", "trainer.max_steps", "trainer.accelerator"}  # LLMFT's trainer keys
    unmapped = sorted(k for k in keys if not (llmft_key(k).startswith(("training_config.", "run.")) or llmft_key(k) in own))
    assert unmapped == []


def test_sft_samples_mask_the_prompt(base_model: Path) -> None:
    """prompt/completion: BOS + prompt unlabelled, completion + EOS labelled; chat: only the
    assistant's reply (after its generation prompt) and its end-of-turn token are labelled."""
    from transformers import AutoTokenizer

    from adapter.data import sft_example
    tok = AutoTokenizer.from_pretrained(base_model)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    row = sft_example({"prompt": "what is the cat", "completion": "yes good"}, tok, mask_prompt=True)
    prompt = [tok.bos_token_id] + ids("what is the cat")
    assert row["input_ids"] == prompt + ids("yes good") + [tok.eos_token_id]
    assert row["labels"] == [-100] * len(prompt) + ids("yes good") + [tok.eos_token_id]
    chat = sft_example({"messages": [{"role": "user", "content": "what is a dog"},
                                     {"role": "assistant", "content": "no bad"}]}, tok, mask_prompt=True)
    assert chat["input_ids"] == ids("user : what is a dog [EOS] assistant : no bad [EOS]")
    assert [t for t in chat["labels"] if t != -100] == ids("no bad [EOS]")
    assert sft_example({"prompt": "a", "completion": "b"}, tok, mask_prompt=False)["labels"] == \
        sft_example({"prompt": "a", "completion": "b"}, tok, mask_prompt=False)["input_ids"]


def run(recipe_spec: dict, tmp_path: Path) -> list[dict]:
    path = write(recipe_spec, tmp_path / "job_spec.json")
    ok(subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                       "-m", "adapter.train", "--config", str(path)],
                      cwd=REPO, env=env(), capture_output=True, text=True, timeout=300))
    return records(Path(recipe_spec["recipes"]["run"]["results_dir"]))


@pytest.mark.slow
def test_sft_lora_recipe_trains_only_adapters(tmp_path: Path, base_model: Path, data: dict[str, Path]) -> None:
    """2 epochs of the chat rows (8 steps): the loss falls, and the merged export differs from the
    base model exactly in the linear layers LoRA's all-linear targets."""
    from safetensors.torch import load_file
    recipe_spec = spec(tmp_path, SFT, base_model, data["sft"])
    rows = run(recipe_spec, tmp_path)
    losses, val = [r["loss"] for r in rows], [r["val_loss"] for r in rows]
    assert len(rows) == 8 and all(math.isfinite(x) for x in losses + val)
    assert losses[-1] < losses[0] - 0.5 and val[-1] < val[0], (losses, val)

    results = Path(recipe_spec["recipes"]["run"]["results_dir"])
    base, merged = load_file(base_model / "model.safetensors"), load_file(results / "checkpoints/full/step_00000008/model.safetensors")
    assert merged.keys() == base.keys()
    linear = {f"model.layers.{i}.{m}.weight" for i in (0, 1) for m in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert {k for k in base if not torch.equal(base[k], merged[k])} == linear
    assert (results / "checkpoints/peft/step_00000008/adapter_model.safetensors").is_file()
    assert any((results / "logs").iterdir())  # use_tensorboard: logs


@pytest.mark.slow
def test_dpo_recipe_trains(tmp_path: Path, base_model: Path, data: dict[str, Path]) -> None:
    """The DPO recipe (LoRA, beta 0.01) on text preference rows against the frozen base model."""
    rows = run(spec(tmp_path, DPO, base_model, data["dpo"]), tmp_path)
    assert len(rows) == 8 and all(math.isfinite(r["loss"]) for r in rows)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["reward_margin"] > 0, rows
    print(f"LLMFT DPO: loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}, "
          f"margin {rows[0]['reward_margin']:.4f} -> {rows[-1]['reward_margin']:.4f}")
