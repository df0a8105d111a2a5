"""Inputs for the tests that train SageMaker HyperPod's own recipes (test_families, test_dpo,
test_llmft): the public recipe collections beside the repository, composed through hpctl's
pipeline with overrides, plus tiny local checkpoints and a tokenizer to fine-tune from.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
V1 = SHARED / "peer-recipes" / "hyperpod-v1"
V2 = SHARED / "peer-recipes" / "hyperpod"

SFT = "fine-tuning/llama/llmft_llama3_2_1b_instruct_seq4k_gpu_sft_lora"
TA = "recipes.training_config.training_args."
# The trainer's refusals of LLMFT settings (override, the LLMFT key refused): tests/adapter/test_llmft.py
# asserts the trainer's config refuses each; tests/test_trainer_contract.py that `hpctl validate` does.
LLMFT_REFUSALS = [
    ("recipes.training_config.model_config.multimodal=true", "training_config.model_config.multimodal"),
    (TA + "ring_attn_size=2", "training_config.training_args.ring_attn_size"),
    (TA + "packing_samples=true", "training_config.training_args.packing_samples"),
    (TA + "learning_rate=-1", "training_config.training_args.learning_rate"),  # from the v1 check, renamed
    (TA + "lr_scheduler=polynomial", "training_config.training_args.lr_scheduler"),
    ("recipes.training_config.model_config.peft_config.use_dora=true", "training_config.model_config.peft_config.use_dora"),
    ("recipes.training_config.datasets.train_data.file_path=", "training_config.datasets.train_data.file_path"),
    ("recipes.training_config.model_config.model_name_or_path=/absent/model", "training_config.model_config.model_name_or_path"),
]

def require(collection: Path) -> None:
    if not (collection / "recipes").is_dir():
        pytest.skip(f"the HyperPod recipe collection is absent ({collection.resolve()}); it lives in ../shared beside the repository")


def compose(collection: Path, recipe: str, results_base: Path, overrides: list[str]) -> dict[str, Any]:
    """The resolved spec of `recipe` as `hpctl plan` builds it (HyperPod's own invocation, then
    `++key=value` overrides), secrets redacted: what the backends write as job_spec.json."""
    from hpctl.compose import compose as hpctl_compose
    from hpctl.workspace import Workspace
    args = [f"recipes={recipe}", "cluster=slurm", f"base_results_dir={results_base}"] + [f"++{o}" for o in overrides]
    return hpctl_compose(args, workspace=Workspace(collection)).public_data()


def write(spec: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1))
    return path


def train_on_two_ranks(spec: dict[str, Any], path: Path) -> subprocess.CompletedProcess:
    """Write the spec to `path` and train it with torchrun on 2 CPU processes; fails the test
    with the output when the trainer does not exit 0."""
    from tests.helpers.trainer import REPO, env, ok
    return ok(subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                              "-m", "adapter.train", "--config", str(write(spec, path))],
                             cwd=REPO, env=env(), capture_output=True, text=True, timeout=300))


def tiny_checkpoint(recipe: dict[str, Any], out: Path) -> Path:
    """A Hugging Face checkpoint of the recipe's (shrunk) architecture with the trainer's seeded
    random weights, so a fine-tuning recipe has a base model to load."""
    import torch

    from adapter import models
    from adapter.config import from_recipe
    model = dict(recipe["model"], do_finetune=False, hf_model_name_or_path=None, peft={"peft_type": None})
    cfg = from_recipe(dict(recipe, model=model))
    config = models.hf_config(cfg)
    net = models.build_empty(config)
    models.materialize(net, torch.device("cpu"), seed=3, std=0.02, weights=None)
    net.save_pretrained(out)
    return out


ROLES = ["user", "assistant", "system", ":"]
WORDS = ["what", "is", "the", "cat", "dog", "sat", "ran", "on", "a", "mat", "tree", "yes", "no", "good", "bad",
         "answer", "question", "one", "two", "three", "four", "five"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} [EOS] {% endfor %}"
                 "{% if add_generation_prompt %}assistant : {% endif %}")


def chat_tokenizer(out: Path) -> Path:
    """A word-level tokenizer (31 tokens) with BOS/EOS and a chat template, saved as a
    transformers tokenizer directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "[BOS]", "[EOS]"] + ROLES + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return out
