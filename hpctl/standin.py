"""hpctl's trainer standing in for HyperPod's LLMFT module.

HyperPod's v2 LLMFT launcher scripts pass `git.entry_module=amzn_awsllm_fine_tuning.train_hp
git.use_default=false`: run HyperPod's LLM fine-tuning module, which exists only in HyperPod's
training image. hpctl's trainer (adapter/llmft.py) implements LLMFT recipes (run.model_type:
llm_finetuning_aws), so it trains them in that module's place: the plan then shows the precision,
the memory estimate and the trainer's checks, instead of an opaque custom program.

`git.keep_entry_module: true` opts out: the job runs the module as named, for a user who runs
HyperPod's image and wants HyperPod's code. It is a key of the `git` section (the entry point's
owner, hpctl.entry) rather than an environment variable, so the choice is in the spec, shown by
the plan and diffed by the next one. With `git.repo_url_or_path` the module comes from that
clone, which is the user's own choice of code: hpctl does not stand in then either.
"""
from __future__ import annotations

from typing import Any

HYPERPOD_LLMFT_MODULE = "amzn_awsllm_fine_tuning.train_hp"
LLMFT_MODEL_TYPE = "llm_finetuning_aws"
KEEP_KEY = "git.keep_entry_module"


def stands_in(spec_data: dict[str, Any]) -> bool:
    """Whether hpctl's trainer runs in place of the recipe's `git.entry_module`."""
    git = spec_data.get("git") if isinstance(spec_data, dict) else None
    if not isinstance(git, dict) or git.get("entry_module") != HYPERPOD_LLMFT_MODULE:
        return False
    run = (spec_data.get("recipes") or {}).get("run") or {}
    return (run.get("model_type") == LLMFT_MODEL_TYPE and git.get("keep_entry_module") is not True
            and not git.get("repo_url_or_path"))


def note(spec_data: dict[str, Any]) -> str | None:
    """The plan's note when hpctl's trainer stands in."""
    if not stands_in(spec_data):
        return None
    return (f"git.entry_module={HYPERPOD_LLMFT_MODULE} is HyperPod's LLMFT module, found only in HyperPod's image: "
            f"hpctl's trainer (adapter.train), which implements LLMFT, trains this recipe in its place "
            f"(set {KEEP_KEY}=true to run HyperPod's module in HyperPod's image)")


def trainer_hint(spec_data: dict[str, Any], hint: str | None) -> str | None:
    """A trainer refusal's hint, plus the way out when the trainer only stands in for HyperPod's module."""
    if not stands_in(spec_data):
        return hint
    out = f"hpctl's trainer stands in for {HYPERPOD_LLMFT_MODULE} here; set {KEEP_KEY}=true to run HyperPod's module"
    return f"{hint}; or {out}" if hint else out
