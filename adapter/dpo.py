"""Direct preference optimisation (DPO, Rafailov et al. 2023) against a frozen reference model.

Fields: model.dpo.{enabled, beta, label_smoothing} (HyperPod v1; LLMFT: trainer_type dpo, beta,
label_smoothing, reference_free). For a pair (prompt x, chosen y_w, rejected y_l), with log-ratios
against the reference
    h = beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))]
the loss is -(1 - eps) * log sigmoid(h) - eps * log sigmoid(-h), eps = label_smoothing (the
conservative DPO of preferences flipped with probability eps); log pi(y|x) sums the completion's
token log-probabilities. A completion's reward is beta * (log pi - log ref). Metrics of each step,
means over the global batch: loss, chosen_reward, rejected_reward, reward_margin (chosen minus
rejected) and reward_accuracy (the share of pairs whose chosen reward is the higher).

The reference is a second copy of the initial weights (the checkpoint, or the same seeded
initialisation), sharded like the policy, frozen, in eval mode and run without gradients; it is
rebuilt from its source on resume, not checkpointed. A LoRA policy's reference is the plain base
model. reference_free compares against a uniform reference (log ref = 0) and builds none.

Data (model.data.train_dir / val_dir, JSON lines or an arrow directory): rows with prompt, chosen
and rejected, each text (tokenized by model.data.tokenizer_name_or_path, else the model's own
tokenizer; the prompt gets the tokenizer's BOS, a text completion ends with EOS) or a list of token
ids. Each side is prompt + completion, cut to max_context_width (the prompt keeps its last tokens,
giving up to half the window to the completion) and padded. use_synthetic_data: pairs whose chosen
completion continues the prompt's counting pattern (data.SyntheticDataset's) and whose rejected one
is noise, so the preference can be learnt.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Dataset

from adapter import data, models, parallel, rows
from adapter.reader import ConfigError, resolve_local
from adapter.trainconfig import DataConfig, DpoConfig, TrainConfig

SIDES = ("chosen", "rejected")


def _side(name: str, prompt: list[int], completion: list[int], seq_len: int) -> dict[str, torch.Tensor]:
    if len(prompt) + len(completion) > seq_len:
        keep = max(seq_len - len(completion), seq_len // 2)
        prompt = prompt[-keep:]
        completion = completion[: seq_len - len(prompt)]
    ids = prompt + completion
    pad = seq_len - len(ids)
    return {f"{name}_input_ids": torch.tensor(ids + [0] * pad),
            f"{name}_labels": torch.tensor([-100] * len(prompt) + completion + [-100] * pad),
            f"{name}_attention_mask": torch.tensor([1] * len(ids) + [0] * pad)}


class PreferenceDataset(Dataset):
    """Tokenized (prompt, chosen, rejected) triples as padded chosen_* and rejected_* tensors."""

    def __init__(self, triples: list[tuple[list[int], list[int], list[int]]], seq_len: int) -> None:
        self.triples, self.seq_len = triples, seq_len

    def __len__(self) -> int:
        return len(self.triples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        prompt, chosen, rejected = self.triples[index]
        return {**_side("chosen", prompt, chosen, self.seq_len), **_side("rejected", prompt, rejected, self.seq_len)}


class SyntheticPreferences(data.SyntheticDataset):
    """Endless synthetic pairs: the first half of a counting sequence is the prompt, its second half
    the chosen completion, random tokens the rejected one; seeded by (seed, index)."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = super().__getitem__(index)["input_ids"].tolist()
        half = self.seq_len // 2
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index + 2**40)
        noise = torch.randint(self.vocab_size, (self.seq_len - half,), generator=g).tolist()
        return {**_side("chosen", ids[:half], ids[half:], self.seq_len),
                **_side("rejected", ids[:half], noise, self.seq_len)}


def build_datasets(cfg: DataConfig, vocab_size: int, seed: int) -> tuple[Dataset, Dataset | None]:
    """(train, validation or None) preference datasets."""
    if cfg.synthetic:
        return SyntheticPreferences(vocab_size, cfg.seq_len, seed), SyntheticPreferences(vocab_size, cfg.seq_len, seed + 1)
    tokenizer = data.load_tokenizer(cfg, vocab_size) if cfg.tokenizer else None
    train, val = data.select_rows(cfg, _read)

    def make(loaded: Any) -> PreferenceDataset:
        return PreferenceDataset([triple(row, tokenizer) for row in loaded], cfg.seq_len)
    return make(train), (make(val) if val is not None else None)


def _read(path: str) -> Any:
    if (Path(path) / "dataset_info.json").exists() or (Path(path) / "dataset_dict.json").exists():
        import datasets
        loaded = datasets.load_from_disk(path)
        return loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded
    return rows.load(path, "model.data.train_dir")


def triple(row: dict[str, Any], tokenizer: Any) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) token ids of one preference row."""
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
    if missing:
        raise ConfigError("model.data.train_dir", f"preference rows need prompt, chosen and rejected; a row lacks {missing}")

    def completion(value: Any) -> list[int]:
        ids = data.encode(value, tokenizer)
        return ids + [tokenizer.eos_token_id] if isinstance(value, str) and tokenizer.eos_token_id is not None else ids
    return data.encode(row["prompt"], tokenizer, special=True), completion(row["chosen"]), completion(row["rejected"])


def reference_model(cfg: TrainConfig, config: Any, layout: Any, device: torch.device) -> torch.nn.Module | None:
    """The frozen reference: the policy's initial weights without LoRA, sharded like the policy."""
    if cfg.dpo is None or cfg.dpo.reference_free:
        return None
    model = models.build_empty(config)
    model.requires_grad_(False)
    # no backward through the reference: nothing to checkpoint or offload
    parallel.parallelize(model, layout, replace(cfg.parallel, activation_checkpointing=False, compile=False,
                                                offload_activations=False), config)
    weights = resolve_local(cfg.hf_model) if cfg.do_finetune else None
    models.materialize(model, device, cfg.seed, getattr(config, "initializer_range", 0.02), weights,
                       offload=cfg.parallel.cpu_offload)
    return model.eval()


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(chosen, rejected) summed completion log-probabilities, one per pair, and the MoE aux loss
    (or None): both sides in one forward pass."""
    ids = torch.cat([batch[f"{s}_input_ids"] for s in SIDES]).to(device)
    labels = torch.cat([batch[f"{s}_labels"] for s in SIDES]).to(device)
    mask = torch.cat([batch[f"{s}_attention_mask"] for s in SIDES]).to(device)
    out = model(input_ids=ids, attention_mask=None if bool(mask.all()) else mask, use_cache=False)
    logits = out.logits[:, :-1].float()
    targets = labels[:, 1:]
    token_logps = -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=-100, reduction="none").view(targets.shape)
    chosen, rejected = token_logps.sum(-1).chunk(2)
    return chosen, rejected, getattr(out, "aux_loss", None)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair losses, chosen rewards, rejected rewards)."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    h = chosen_reward - rejected_reward
    losses = -(1.0 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    return losses, chosen_reward.detach(), rejected_reward.detach()


def _reference_logps(reference: torch.nn.Module | None, batch: dict[str, torch.Tensor],
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if reference is None:
        zeros = torch.zeros(batch["chosen_input_ids"].shape[0], device=device)
        return zeros, zeros
    with torch.no_grad():
        chosen, rejected, _ = sequence_logps(reference, batch, device)
    return chosen, rejected


def train_step(policy: torch.nn.Module, reference: torch.nn.Module | None, optimizer: torch.optim.Optimizer,
               batches: list[dict[str, torch.Tensor]], layout: Any, grad_clip: float, device: torch.device,
               cfg: DpoConfig, aux_coef: float) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """One optimizer step over the accumulated micro-batches of pairs: (mean loss over the global
    batch, gradient norm, reward metrics). Scaled like train.train_step: each micro-batch's loss sum
    over the global pair count, times the data-parallel size FSDP's gradient mean divides by."""
    pairs = torch.tensor(float(sum(b["chosen_input_ids"].shape[0] for b in batches)), device=device)
    dist.all_reduce(pairs, group=layout.dp_group)
    sums = torch.zeros(4, device=device)  # loss, chosen reward, rejected reward, chosen ahead
    for i, batch in enumerate(batches):
        parallel.set_gradient_sync(policy, i == len(batches) - 1)
        ref_chosen, ref_rejected = _reference_logps(reference, batch, device)
        chosen, rejected, aux = sequence_logps(policy, batch, device)
        losses, chosen_reward, rejected_reward = dpo_loss(chosen, rejected, ref_chosen, ref_rejected,
                                                          cfg.beta, cfg.label_smoothing)
        objective = losses.sum() / pairs * layout.shape.dp
        if aux_coef and aux is not None:
            objective = objective + aux_coef * aux / len(batches)
        objective.backward()
        sums += torch.stack([losses.detach().sum(), chosen_reward.sum(), rejected_reward.sum(),
                             (chosen_reward > rejected_reward).float().sum()])
    dist.all_reduce(sums, group=layout.dp_group)
    grad_norm = parallel.clip_grad_norm_(policy.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss, chosen, rejected, ahead = (sums / pairs).tolist()
    return sums[0] / pairs, grad_norm, {"chosen_reward": chosen, "rejected_reward": rejected,
                                        "reward_margin": chosen - rejected, "reward_accuracy": ahead}


def evaluate(policy: torch.nn.Module, reference: torch.nn.Module | None, batches: Any, layout: Any,
             device: torch.device, cfg: DpoConfig) -> float | None:
    """Mean DPO loss over the validation pairs (None when there are none)."""
    policy.eval()
    totals = torch.zeros(2, device=device)
    with torch.no_grad():
        for batch in batches:
            ref_chosen, ref_rejected = _reference_logps(reference, batch, device)
            chosen, rejected, _ = sequence_logps(policy, batch, device)
            losses, _, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, cfg.beta, cfg.label_smoothing)
            totals += torch.stack([losses.sum(), torch.tensor(float(len(losses)), device=device)])
    dist.all_reduce(totals, group=layout.dp_group)
    policy.train()
    return (totals[0] / totals[1]).item() if totals[1] > 0 else None

