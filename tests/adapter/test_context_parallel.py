"""Context parallelism on CPU: what torch 2.13 lets run there. Ring attention itself needs CUDA
(v1.CP_CPU_REASON; bench/gpu_check.py runs it on 2+ GPUs), but the mesh, the groups, the
sequence split (torch's own, called on gloo), the loss and gradient scaling over dp x cp, and how
transformers' Llama is called on a rank's share of a sequence are all tested here."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapter.mesh import MeshShape
from adapter.reader import ConfigError
from tests.helpers.trainer import REPO, env, ok, tiny_recipe, write_spec

WORKER = r"""
import os, sys
import torch, torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.experimental._attention import context_parallel_unshard
from transformers.modeling_outputs import CausalLMOutput
from adapter import parallel, train
from adapter.mesh import MeshShape

SEQ, VOCAB, ACCUM = 8, 11, 2


class Toy(nn.Module):
    # Per-token logits from the token and its position: no attention (ring attention needs CUDA), but
    # a wrong position or a lost token changes the loss. The output is a pytree (FSDP2 hooks backward through it).
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.tok, self.pos, self.head = nn.Embedding(VOCAB, 6), nn.Embedding(SEQ, 6), nn.Linear(6, VOCAB)

    def forward(self, input_ids, attention_mask=None, use_cache=False, position_ids=None):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        return CausalLMOutput(logits=self.head(torch.tanh(self.tok(input_ids) + self.pos(position_ids))))


def full_ce(model, b):
    # the definition: every next-token cross-entropy of the whole sequence, summed
    labels = torch.cat([b["labels"][:, 1:], torch.full((1, 1), -100)], dim=1)
    logits = model(b["input_ids"]).logits
    return torch.nn.functional.cross_entropy(logits.view(-1, VOCAB), labels.view(-1), ignore_index=-100,
                                             reduction="sum")


def batches(dp):
    # ACCUM micro-batches for each of the dp batches of one step, with unlabelled tokens in varying numbers
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(dp):
        rows = []
        for _ in range(ACCUM):
            ids = torch.randint(0, VOCAB, (1, SEQ), generator=g)
            labels = torch.where(torch.rand(1, SEQ, generator=g) < 0.3, -100, ids)
            rows.append({"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)})
        out.append(rows)
    return out


def check(shape):
    rank = dist.get_rank()
    layout = parallel.build_layout(shape, "cpu")
    coords = parallel.rank_coords(shape, rank)
    cp, c = shape.cp, coords["cp"]
    assert layout.dp_rank == coords["dp_replicate"] * shape.shard + coords["dp_shard"]
    assert layout.cp_mesh.get_local_rank() == c and layout.fsdp_mesh.size() == shape.dp * cp
    assert layout.fsdp_mesh.mesh.flatten().tolist() == list(range(shape.dp * cp * shape.tp))
    # the groups: peers reading other batches, and every rank holding other tokens
    for group, across in ((layout.dp_group, ("dp_replicate", "dp_shard")),
                          (layout.token_group, ("dp_replicate", "dp_shard", "cp"))):
        got = [None] * dist.get_world_size(group)
        dist.all_gather_object(got, rank, group=group)
        assert sorted(got) in parallel.peer_groups(shape, across) and rank in got, (got, across)

    # the split: chunk c and 2 cp - 1 - c of 2 cp, position ids following; torch's unshard restores it
    full = torch.arange(2 * SEQ).view(2, SEQ) + 100
    tensors = [full.clone(), torch.arange(SEQ).expand(2, SEQ).contiguous()]
    with parallel.sequence_shards(layout, tensors) as (ids, positions):
        k = SEQ // (2 * cp)
        want = list(range(c * k, (c + 1) * k)) + list(range((2 * cp - 1 - c) * k, (2 * cp - c) * k))
        assert positions[0].tolist() == want and positions[1].tolist() == want, (positions, want)
        assert torch.equal(ids, full[:, want])
        assert torch.equal(context_parallel_unshard(layout.cp_mesh, [ids], [1])[0], full)

    # one training step over dp x cp equals one process on the whole global batch
    data = batches(shape.dp)
    ref = Toy()
    ce = sum(full_ce(ref, b) for rows in data for b in rows)
    tokens = sum(float((b["labels"][:, 1:] != -100).sum()) for rows in data for b in rows)
    ref_loss = ce / tokens
    ref_loss.backward()
    torch.optim.SGD(ref.parameters(), lr=1.0).step()

    model = Toy()
    fully_shard(model, mesh=layout.fsdp_mesh)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loss, _ = train.train_step(model, optimizer, data[layout.dp_rank], layout, 0.0, torch.device("cpu"), 0.0)
    assert abs(loss.item() - ref_loss.item()) < 1e-6, (loss.item(), ref_loss.item())
    for (name, got), want in zip(model.named_parameters(), ref.parameters()):
        got = got.full_tensor() if isinstance(got, DTensor) else got
        assert torch.allclose(got, want, atol=1e-6), name
    val = train._validate(model, data[layout.dp_rank], layout, torch.device("cpu"))
    with torch.no_grad():
        want_val = sum(full_ce(ref, b) for rows in data for b in rows) / tokens
    assert abs(val - want_val.item()) < 1e-5, (val, want_val.item())


dist.init_process_group("gloo")
for spec in sys.argv[1:]:
    replicate, shard, cp = (int(x) for x in spec.split(","))
    check(MeshShape(replicate=replicate, shard=shard, tp=1, cp=cp))
os.write(1, f"ok {dist.get_rank()}\n".encode())  # one write: the four ranks share the pipe
dist.destroy_process_group()
"""


def test_mesh_coordinates_and_peer_groups() -> None:
    """Row-major dp_replicate x dp_shard x cp x tp: ranks that share a batch differ only in cp and tp."""
    from adapter.parallel import peer_groups, rank_coords
    shape = MeshShape(replicate=2, shard=1, tp=2, cp=2)
    assert rank_coords(shape, 5) == {"dp_replicate": 1, "dp_shard": 0, "cp": 0, "tp": 1}
    assert peer_groups(shape, ("dp_replicate", "dp_shard")) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert peer_groups(shape, ("dp_replicate", "dp_shard", "cp")) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert peer_groups(MeshShape(1, 2, 1), ("dp_replicate", "dp_shard")) == [[0, 1]]
    assert shape.dp == 2 and shape.fsdp_shards == 2


@pytest.mark.slow
def test_split_groups_and_loss_scaling_over_four_gloo_ranks(tmp_path: Path) -> None:
    """4 processes, as dp_shard 2 x cp 2 (FSDP2 over the flattened 4) and as dp_replicate 2 x cp 2
    (HSDP): torch's split of input ids and position ids, and one train_step whose loss and updated
    weights equal one process's on the whole global batch, then the validation loss likewise."""
    script = tmp_path / "cp_worker.py"
    script.write_text(WORKER)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4",
                           str(script), "1,2,2", "2,1,2"], cwd=REPO, env=env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=240)
    ok(proc)  # exit 0, and no collective left unwaited (the FSDP2 + cp groups over gloo)
    assert sorted(line for line in proc.stdout.splitlines() if line.startswith("ok")) == [f"ok {r}" for r in range(4)]


def test_transformers_llama_sees_one_causal_sequence_from_a_ranks_share() -> None:
    """What sequence_shards hands the model on a cp rank: position ids with a jump (chunks 0 and 3
    of 4) and an all-ones mask. Transformers must then call SDPA with is_causal and no mask (what
    ring attention computes); without the mask it would read the jump as two packed sequences."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1),
                             ).eval()
    model.config._attn_implementation = "sdpa"
    calls = []
    sdpa = F.scaled_dot_product_attention

    def record(*args, **kwargs):
        calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return sdpa(*args, **kwargs)

    ids, positions = torch.tensor([[3, 4, 5, 6]]), torch.tensor([[0, 1, 6, 7]])
    F.scaled_dot_product_attention = record
    try:
        with torch.no_grad():
            model(input_ids=ids, position_ids=positions, attention_mask=torch.ones_like(ids), use_cache=False)
            model(input_ids=ids, position_ids=positions, attention_mask=None, use_cache=False)
    finally:
        F.scaled_dot_product_attention = sdpa
    (mask, causal), (packed_mask, _) = calls
    assert mask is None and causal is True
    assert packed_mask is not None  # the reason sequence_shards' caller passes the all-ones mask


@pytest.mark.slow
def test_a_cpu_device_with_cp_stops_before_work(tmp_path: Path) -> None:
    """accelerator auto on a machine without GPUs: the config accepts cp 2, the run refuses it."""
    from adapter.parallel import check_device
    check_device(MeshShape(1, 1, 1, cp=2), "cuda")
    with pytest.raises(ConfigError, match="no CPU attention kernel"):
        check_device(MeshShape(1, 1, 1, cp=2), "cpu")
    # rank 0 of 2 alone: the device is checked before the process group forms
    spec = write_spec(tiny_recipe(tmp_path / "results", trainer={"accelerator": "auto", "devices": 2, "precision": "bf16"},
                                  model={"context_parallel_degree": 2}), tmp_path / "spec.json")
    proc = subprocess.run([sys.executable, "-m", "adapter.train", "--config", str(spec)], cwd=REPO,
                          env=env(RANK="0", LOCAL_RANK="0", WORLD_SIZE="2", CUDA_VISIBLE_DEVICES=""),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "adapter: error: model.context_parallel_degree: 2 needs CUDA devices" in proc.stderr, proc.stderr[-2000:]
