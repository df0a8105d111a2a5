"""The one workload every throughput contender trains, so the numbers compare like with like.

A tiny Llama (hidden 256, intermediate 688, 4 layers, 4 heads, 2 KV heads, vocabulary 2048),
sequences of 256 tokens, 8 sequences per process per micro-batch, fp32, and a global batch of 16
sequences per optimizer step: one process accumulates two micro-batches, two processes take one
each. The data is the same fixed random token set for everyone, written once to a JSON file in
HyperPod's pre-tokenized format (input_ids, attention_mask, labels) so the adapter reads exactly
what the baselines read.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

HIDDEN = 256
INTERMEDIATE = 688
LAYERS = 4
HEADS = 4
KV_HEADS = 2
VOCAB = 2048
SEQ = 256
MICRO_BATCH = 8
GLOBAL_BATCH = 16
TOKENS_PER_STEP = GLOBAL_BATCH * SEQ
LR = 3e-4
WEIGHT_DECAY = 0.01
BETAS = (0.9, 0.95)
GRAD_CLIP = 1.0
DATA_SEED = 1234


def llama_config():
    """The transformers config of the benchmark model (fp32, untied embeddings, SDPA attention)."""
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                       num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                       num_key_value_heads=KV_HEADS, max_position_embeddings=SEQ,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                       attn_implementation="sdpa")


def tokens(n_sequences: int) -> torch.Tensor:
    """`n_sequences` x SEQ token ids, the same on every call (seeded)."""
    g = torch.Generator().manual_seed(DATA_SEED)
    return torch.randint(0, VOCAB, (n_sequences, SEQ), generator=g)


def write_dataset(path: Path, n_sequences: int) -> Path:
    """The token set as a HyperPod pre-tokenized JSON file (one list of records)."""
    ids = tokens(n_sequences).tolist()
    records = [{"input_ids": row, "attention_mask": [1] * SEQ, "labels": row} for row in ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


def read_dataset(path: Path) -> torch.Tensor:
    """The token ids of a file written by write_dataset."""
    return torch.tensor([r["input_ids"] for r in json.loads(path.read_text())])
