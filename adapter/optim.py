"""AdamW and the learning-rate schedules HyperPod recipes name.

Schedules are pure functions of the optimizer step (`lr_at`), wrapped in a LambdaLR so the
scheduler's state checkpoints like any other. Step s (0-based) is the s-th optimizer step:
  CosineAnnealing (NeMo's, as HyperPod uses it): linear warmup over warmup_steps, cosine decay to
    min_lr over max_steps - warmup_steps - constant_steps, then min_lr for the rest;
  linear (also LinearAnnealingWithWarmUp): warmup, then a straight line to min_lr at max_steps;
  constant: warmup, then lr.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from adapter.trainconfig import OptimConfig, SchedConfig


def lr_at(step: int, lr: float, s: SchedConfig) -> float:
    if s.warmup_steps and step < s.warmup_steps:
        return lr * (step + 1) / s.warmup_steps
    if s.name == "constant":
        return lr
    decay_steps = max(s.max_steps - s.warmup_steps - (s.constant_steps if s.name == "CosineAnnealing" else 0), 1)
    progress = min((step - s.warmup_steps) / decay_steps, 1.0)
    if s.name == "linear":
        return lr - (lr - s.min_lr) * progress
    return s.min_lr + (lr - s.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build(params: Iterable[torch.nn.Parameter], o: OptimConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters, and its schedule. The fused kernel (one pass over each
    parameter, as the HF Trainer's default) is several times faster than foreach on CPU as on GPU,
    and takes FSDP2's DTensors."""
    optimizer = torch.optim.AdamW([p for p in params if p.requires_grad], lr=o.lr, betas=o.betas, eps=o.eps,
                                  weight_decay=o.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, o.lr, o.sched) / o.lr)
    return optimizer, scheduler
