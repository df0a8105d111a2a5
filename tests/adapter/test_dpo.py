"""DPO: the loss and rewards, preference samples, and HyperPod's v1 DPO recipe trained (shrunk)
against a frozen reference on 2 CPU processes: the loss falls from log 2 and the margin grows."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adapter.dpo import PreferenceDataset, SyntheticPreferences, dpo_loss, triple
from tests.helpers.trainer import REPO, env, ok, records
from tests.adapter.hyperpod import V1, chat_tokenizer, compose, require, tiny_checkpoint, write


def test_loss_and_rewards() -> None:
    """Policy equal to the reference: log 2 and zero rewards. Otherwise the sigmoid loss of
    beta x the log-ratio difference, and with label smoothing eps the mixture with the flipped pair."""
    zero = torch.zeros(3)
    losses, chosen, rejected = dpo_loss(zero, zero, zero, zero, beta=0.1, label_smoothing=0.0)
    assert torch.allclose(losses, torch.full((3,), math.log(2))) and not chosen.any() and not rejected.any()
    pc, pr, rc, rr = torch.tensor([-10.0]), torch.tensor([-14.0]), torch.tensor([-12.0]), torch.tensor([-13.0])
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.0)
    h = 0.5 * ((-10 + 12) - (-14 + 13))  # 1.5
    assert chosen.item() == pytest.approx(1.0) and rejected.item() == pytest.approx(-0.5)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-h)))
    smoothed, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.2)
    assert smoothed.item() == pytest.approx(0.8 * math.log(1 + math.exp(-h)) + 0.2 * math.log(1 + math.exp(h)))


def test_preference_samples(tmp_path: Path) -> None:
    """Text rows: BOS + prompt, completions end with EOS; both sides share the prompt, which gets no
    labels; a long pair keeps the prompt's end and the completion's start."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(chat_tokenizer(tmp_path / "tok"))
    prompt, chosen, rejected = triple({"prompt": "what is a cat", "chosen": "yes good", "rejected": [7, 8, 9]}, tok)
    assert prompt == [tok.bos_token_id] + tok("what is a cat", add_special_tokens=False)["input_ids"]
    assert chosen == tok("yes good", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert rejected == [7, 8, 9]  # token ids are taken as they are
    item = PreferenceDataset([(prompt, chosen, rejected)], 12)[0]
    n = len(prompt)
    assert torch.equal(item["chosen_input_ids"][:n], item["rejected_input_ids"][:n])
    assert item["chosen_labels"].tolist() == [-100] * n + chosen + [-100] * (12 - n - len(chosen))
    assert item["rejected_attention_mask"].tolist() == [1] * (n + 3) + [0] * (12 - n - 3)
    cut = PreferenceDataset([(list(range(10, 30)), list(range(40, 50)), [1])], 16)[0]
    assert cut["chosen_input_ids"].tolist() == list(range(22, 30)) + list(range(40, 48))
    assert cut["rejected_input_ids"].tolist() == list(range(15, 30)) + [1]


def test_synthetic_pairs_prefer_the_pattern() -> None:
    item = SyntheticPreferences(256, 16, seed=1)[3]
    chosen, rejected = item["chosen_input_ids"], item["rejected_input_ids"]
    assert torch.equal(chosen[:8], rejected[:8]) and not torch.equal(chosen[8:], rejected[8:])
    steps = (chosen[1:] - chosen[:-1]) % 256
    assert (steps == steps[0]).all()  # the chosen completion continues the prompt's count
    assert item["chosen_labels"][:8].eq(-100).all() and item["chosen_labels"][8:].ne(-100).all()


@pytest.mark.slow
def test_hyperpod_dpo_recipe_learns_the_preference(tmp_path: Path) -> None:
    """hf_llama3_8b_seq8k_gpu_dpo (model.dpo: enabled, beta 0.1), shrunk like the family tests, from
    a tiny checkpoint, on synthetic pairs: step 1 is log 2 (policy = reference); over 16 steps the
    loss falls and the reward margin and accuracy rise."""
    require(V1)
    recipe = "fine-tuning/llama/hf_llama3_8b_seq8k_gpu_dpo"
    overrides = [
        "recipes.trainer.accelerator=cpu", "recipes.trainer.precision=fp32", "recipes.trainer.devices=2",
        "recipes.trainer.max_steps=16", "recipes.model.num_hidden_layers=2", "recipes.model.hidden_size=64",
        "recipes.model.num_attention_heads=4", "recipes.model.num_key_value_heads=2",
        "recipes.model.intermediate_size=128", "recipes.model.vocab_size=256", "recipes.model.max_context_width=64",
        "recipes.model.shard_degree=null",      # the recipe shards over 8 GPUs
        "recipes.model.train_batch_size=4",     # 8 pairs per step over the 2 processes
        "recipes.model.data.use_synthetic_data=true",
        "recipes.model.optim.lr=0.003",         # the recipe's 1e-6 suits an 8B model, not 3 steps of a tiny one
        "recipes.model.optim.sched.min_lr=0",
    ]
    spec = compose(V1, recipe, tmp_path, overrides)
    assert spec["recipes"]["model"]["dpo"] == {"enabled": True, "beta": 0.1, "label_smoothing": 0.0}
    base = tiny_checkpoint(spec["recipes"], tmp_path / "base")
    spec = compose(V1, recipe, tmp_path, overrides + [f"recipes.model.hf_model_name_or_path={base}"])
    path = write(spec, tmp_path / "job_spec.json")
    ok(subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                       "-m", "adapter.train", "--config", str(path)],
                      cwd=REPO, env=env(), capture_output=True, text=True, timeout=300))
    rows = records(Path(spec["recipes"]["run"]["results_dir"]))
    assert [r["step"] for r in rows] == list(range(1, 17))
    first, last = rows[0], rows[-3:]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["reward_margin"] == 0 and first["reward_accuracy"] == 0
    mean = {k: sum(r[k] for r in last) / 3 for k in ("loss", "reward_margin", "reward_accuracy")}
    assert mean["loss"] < 0.6 and mean["reward_margin"] > 0.3 and mean["reward_accuracy"] > 0.8, mean
    assert all(math.isclose(r["reward_margin"], r["chosen_reward"] - r["rejected_reward"], abs_tol=1e-6) for r in rows)
    print(f"DPO: loss {first['loss']:.4f} -> {mean['loss']:.4f}, margin 0 -> {mean['reward_margin']:.3f}, "
          f"accuracy 0 -> {mean['reward_accuracy']:.2f} (mean of the last 3 steps)")
