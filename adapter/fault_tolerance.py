"""Training as one replica group of several under torchft (`trainer.fault_tolerance`, ft_config.py).

Each group is its own torchrun world: FSDP2 (and tp / cp) inside it are exactly the plain path's.
Across groups torchft's Manager runs every step:

  quorum   before the step, the lighthouse says which groups are live; a group that (re)joins
           behind the others takes their model, optimizer, scheduler and step from a live peer
           (torchft's checkpoint transport, over HTTP), never from disk;
  reduce   after the backward, each rank averages its gradient shards with the same rank of the
           other live groups (one flat buffer per dtype, through torchft's fault-tolerant gloo or
           NCCL process group), before clipping, so every group steps with the same gradients;
  commit   the optimizer steps only if the live groups agree (should_commit): a group lost mid-step
           makes the others redo that step with the groups that are left, never skip it.

Data: group-batch k is the k-th slice of micro x dp x accumulation samples of the global stream
(data.StreamSampler's positions). At a step with n live groups, the group of quorum rank p trains
group-batch `batches_committed + p`, torchft's count of group-batches committed so far, which is
part of the state a recovering group receives. So across any loss and rejoin, every group-batch is
trained exactly once and in order; with every group live, step s reads the same samples as the
plain path's step s.

Checkpoints stay on their schedule as the backstop for losing every group: replica group 0 writes
them (the DCP layout of one group), and every group starting up resumes from the newest one, then
heals from a live peer if the peers are further on.

Records, for `hpctl status` / `logs` and the tests:
  metrics.jsonl        replica group 0's rank 0, the plain path's fields plus live_groups,
                       recoveries (groups that rejoined) and steps_with_fewer_groups;
  ft/group_G.rank_R.jsonl   each group's rank 0 (every rank when HPCTL_FT_PARAM_DIGEST=1): one
                       line per commit (step, live groups, group-batch, pid, and with the
                       variable the sha256 of this rank's parameters) and one per recovery
                       (its time, the step it rejoined at);
  stdout               `adapter: [fault tolerance] ...` lines at each recovery and group change.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor
from torch.utils.data import default_collate

from adapter import faults
from adapter.ft_config import GROUP_ENV
from adapter.trainconfig import FaultTolerance, TrainConfig

# Record each commit's parameter digest: a verification aid (it reads every weight at every step).
DIGEST_ENV = "HPCTL_FT_PARAM_DIGEST"
MARK = "adapter: [fault tolerance]"


class GroupBatches:
    """This rank's micro-batches of group-batch k, read by index, so a recovering group continues
    exactly where the live groups are. Checkpoints hold the group-batch count beside the step."""

    def __init__(self, dataset: Any, micro: int, accum: int, dp_rank: int, dp_size: int, seed: int) -> None:
        from adapter.data import StreamSampler, SyntheticDataset
        synthetic = isinstance(dataset, SyntheticDataset)
        self.dataset, self.accum = dataset, accum
        self.sampler = StreamSampler(None if synthetic else len(dataset), micro, accum, dp_rank, dp_size, seed,
                                     shuffle=not synthetic)
        self.committed_at_resume: int | None = None
        self.count: Callable[[], int] = lambda: 0

    def batches(self, k: int) -> list[dict[str, torch.Tensor]]:
        self.sampler.seek(k)  # group-batch k plays the role of the sampler's step
        return [default_collate([self.dataset[i] for i in next(self.sampler)]) for _ in range(self.accum)]

    # checkpoint.training_state / restore call these as they do the plain loader's.
    def state_dict(self) -> dict[str, int]:
        return {"batches_committed": self.count()}

    def load_state_dict(self, state: dict[str, int] | None, step: int) -> None:
        self.committed_at_resume = state.get("batches_committed") if state else None


class Replica:
    """This group's torchft Manager, the state a recovering peer receives, and the group counters."""

    def __init__(self, ft: FaultTolerance, group: int, model: Any, optimizer: Any, scheduler: Any,
                 device: torch.device) -> None:
        os.environ.setdefault("RUST_LOG", "warn")  # torchft's Rust core logs every quorum tick at INFO
        from torchft import Manager, ProcessGroupGloo, ProcessGroupNCCL
        self.ft, self.group, self.model, self.optimizer, self.scheduler = ft, group, model, optimizer, scheduler
        # The same across groups at every commit (observed on committed steps; a joiner receives them).
        self.counters = {"recoveries": 0, "steps_with_fewer_groups": 0, "last_live": ft.replica_groups}
        self.loaded = False  # a peer's state was applied in this quorum
        self.healed: float | None = None  # seconds the last heal (quorum, transfer, load) took, until reported
        timeout = timedelta(seconds=ft.timeout_s)
        pg = ProcessGroupNCCL(timeout=timeout) if device.type == "cuda" else ProcessGroupGloo(timeout=timeout)
        self.manager = Manager(
            pg=pg, load_state_dict=self._load, state_dict=self._state, min_replica_size=ft.min_replicas,
            use_async_quorum=False,  # the data a step reads depends on the quorum: know it before the forward
            timeout=timeout, quorum_timeout=timedelta(seconds=ft.quorum_timeout_s),
            connect_timeout=timedelta(seconds=ft.quorum_timeout_s),
            rank=dist.get_rank(), world_size=dist.get_world_size(), replica_id=f"group_{group}",
            init_sync=False)  # every group initialises (or resumes) the same weights: no transfer at step 0

    def _state(self) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        return {"model": _local(model_sd), "optim": _local(optim_sd), "scheduler": self.scheduler.state_dict(),
                "counters": dict(self.counters)}

    def _load(self, state: dict[str, Any]) -> None:
        # This rank's live state as the template (it creates the optimizer's state on a fresh
        # start), filled in place with the peer's shards: the groups' layouts are identical.
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        _fill(model_sd, state["model"])
        _fill(optim_sd, state["optim"])
        set_state_dict(self.model, self.optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
        self.scheduler.load_state_dict(state["scheduler"])
        self.counters = dict(state["counters"])
        self.loaded = True

    def start_step(self) -> tuple[int, int]:
        """(live groups, this group's rank among them) for the step about to run; heals first when behind."""
        start = time.perf_counter()
        self.manager.start_quorum()
        if self.loaded:
            self.healed, self.loaded = time.perf_counter() - start, False
        return self.manager.num_participants(), self.manager.participating_rank() or 0

    def join(self) -> tuple[int, int]:
        """The first quorum. When no live group is further on (the job is starting: every group
        is where it starts), wait up to quorum_timeout_s for every group, so groups that start a
        few seconds apart (imports, model build) train together from the first step; a group
        still down joins later and heals. A group that (re)joins a job already further on took
        the peers' state in this quorum and never waits: the live groups must not wait for it."""
        deadline = time.monotonic() + self.ft.quorum_timeout_s
        start = self.manager.current_step()
        live, position = self.start_step()
        while live < self.ft.replica_groups and self.manager.current_step() == start and time.monotonic() < deadline:
            time.sleep(0.5)
            live, position = self.start_step()
        return live, position

    def reduce_gradients(self, model: Any) -> None:
        """Average this rank's gradient shards with the same rank of every live group: one
        collective per dtype over a flat copy, then written back."""
        grads = [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
                 for p in model.parameters() if p.grad is not None]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = defaultdict(list)
        for g in grads:
            by_dtype[g.dtype].append(g)
        pending = []
        for same in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in same])
            pending.append((self.manager.allreduce(flat), flat, same))
        for work, flat, same in pending:
            work.wait()
            offset = 0
            for g in same:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def note_commit(self, live: int) -> None:
        if live > self.counters["last_live"]:
            self.counters["recoveries"] += live - self.counters["last_live"]
        if live < self.ft.replica_groups:
            self.counters["steps_with_fewer_groups"] += 1
        self.counters["last_live"] = live


class CommitGate:
    """The optimizer as train_step sees it: it steps only when the live groups agree to commit."""

    def __init__(self, optimizer: Any, manager: Any) -> None:
        self.optimizer, self.manager = optimizer, manager
        self.committed = False

    def step(self) -> None:
        self.committed = self.manager.should_commit()
        if self.committed:
            self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)


def _local(tree: Any) -> Any:
    """The state with each DTensor as this rank's shard (what travels between groups)."""
    if isinstance(tree, DTensor):
        return tree.to_local()
    if isinstance(tree, dict):
        return {k: _local(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_local(v) for v in tree)
    return tree


def _fill(template: dict[str, Any], received: dict[str, Any]) -> None:
    """Copy the received shards into the template's tensors (same keys, same shard shapes)."""
    for key, value in template.items():
        got = received[key]
        if isinstance(value, dict):
            _fill(value, got)
        elif isinstance(value, torch.Tensor):
            target = value.to_local() if isinstance(value, DTensor) else value
            target.copy_(got)
        else:
            template[key] = got


def _process_age() -> float:
    """Seconds since this process started (its imports and model build included), from /proc."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _digest(model: Any) -> str:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        h.update(name.encode())
        h.update(local.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class CommitLog:
    """ft/group_G.rank_R.jsonl: one JSON line per commit or recovery, flushed as written (a SIGKILL
    loses nothing). Written by each group's rank 0, and by every rank with parameter digests: a
    line per step from every rank of a large job on a shared filesystem is not worth it otherwise."""

    def __init__(self, results_dir: Path, group: int, rank: int, every_rank: bool) -> None:
        self.file = None
        if rank == 0 or every_rank:
            path = results_dir / "ft" / f"group_{group}.rank_{rank}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def run(cfg: TrainConfig, layout: Any, accum: int, device: torch.device, model: Any, optimizer: Any,
        scheduler: Any, train_set: Any, val_set: Any, step_fn: Callable[..., Any], validate: Callable[..., Any],
        export: Callable[[int], None], flops: float, peak: float | None) -> int:
    """The training loop of one replica group; returns the exit code (0: max_steps reached).
    `step_fn(optimizer, batches, sync)` is train.train_step for this model and layout."""
    from adapter import checkpoint, data, metrics, tracking
    ft = cfg.fault_tolerance
    assert ft is not None
    group = int(os.environ.get(GROUP_ENV, "0"))
    rank, world = dist.get_rank(), dist.get_world_size()
    say = (lambda text: print(f"{MARK} {text}", flush=True)) if rank == 0 else (lambda text: None)
    digest = os.environ.get(DIGEST_ENV) == "1"

    batches = GroupBatches(train_set, cfg.micro_batch, accum, layout.dp_rank, layout.shape.dp, cfg.seed)
    replica = Replica(ft, group, model, optimizer, scheduler, device)
    manager = replica.manager
    batches.count = manager.batches_committed
    gate = CommitGate(optimizer, manager)

    # Replica group 0 writes the checkpoints (the backstop) and metrics.jsonl.
    ckpt = checkpoint.Checkpointer(cfg.checkpoint, rank) if group == 0 else None
    found = [checkpoint.find_resume(cfg.checkpoint) if rank == 0 else None]
    dist.broadcast_object_list(found, src=0)
    if found[0] is not None:
        step = checkpoint.restore(found[0], model, optimizer, scheduler, batches, rank, layout.dp_rank)
        done = batches.committed_at_resume
        manager.load_state_dict({"step": step, "batches_committed": step * ft.replica_groups if done is None else done})
    say(f"replica group {group} of {ft.replica_groups} ({world} process{'es' if world != 1 else ''}) starting at "
        f"step {manager.current_step()}{f' (checkpoint {found[0]})' if found[0] else ''}; lighthouse "
        f"{os.environ.get('TORCHFT_LIGHTHOUSE', '?')}")

    preemption = checkpoint.Preemption()
    tokens_per_group = cfg.micro_batch * layout.shape.dp * accum * cfg.data.seq_len
    commits = CommitLog(cfg.results_dir, group, rank, every_rank=digest)
    log = None
    window = metrics.Window()
    live_before = None
    first_commit = True
    try:
        joined: tuple[int, int] | None = replica.join()
        while manager.current_step() < cfg.max_steps:
            start = time.perf_counter()
            live, position = joined or replica.start_step()
            joined = None
            if replica.healed is not None:
                age = _process_age()
                say(f"=== recovery: replica group {group} rejoined at step {manager.current_step()}, healed from a "
                    f"live peer in {replica.healed:.2f} s ({age:.1f} s after its process started) ===")
                commits.write({"event": "recovery", "at_step": manager.current_step(), "heal_s": replica.healed,
                               "since_start_s": age, "time": time.time()})
                replica.healed = None
            if live != live_before:
                say(f"{live} of {ft.replica_groups} replica groups live at step {manager.current_step() + 1}")
                live_before = live
            k = manager.batches_committed() + position
            step_batches = batches.batches(k)
            data_wait = time.perf_counter() - start
            loss, grad_norm = step_fn(gate, step_batches, lambda: replica.reduce_gradients(model))
            if not gate.committed:
                say(f"step {manager.current_step() + 1} not committed (a replica group was lost, or fewer than "
                    f"min_replicas are live): redoing it")
                continue
            step = manager.current_step()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            replica.note_commit(live)
            line = {"step": step, "live": live, "batch": k, "pid": os.getpid(), "time": time.time()}
            if digest:
                line["params"] = _digest(model)
            commits.write(line)
            faults.crash_if("step", step)  # the reliability tests' SIGKILL, right after a commit, as in train.py
            if first_commit and rank == 0 and ckpt is not None:
                first_commit = False
                log = metrics.MetricsLog(cfg.results_dir, 0, cfg.tensorboard_dir, step - 1,
                                         tracking.start(cfg, 0, resumed=step > 1))
            window.add(time.perf_counter() - start, data_wait)
            validating = val_set is not None and cfg.val_batches != 0 and step % cfg.val_every == 0
            if step % cfg.log_every == 0 or step == cfg.max_steps or validating:
                step_time, wait = window.take()
                record = {"step": step, "max_steps": cfg.max_steps, "loss": loss.item(), "grad_norm": grad_norm.item(),
                          "lr": lr, **metrics.throughput(tokens_per_group * live, step_time, world * live, flops, peak),
                          "memory_gb": metrics.memory_gb(device), "step_time_s": step_time, "data_wait_s": wait,
                          "live_groups": live, "replica_groups": ft.replica_groups,
                          "recoveries": replica.counters["recoveries"],
                          "steps_with_fewer_groups": replica.counters["steps_with_fewer_groups"]}
                if validating:
                    vb = data.val_batches(val_set, cfg.val_batch, cfg.val_batches, layout.dp_rank, layout.shape.dp)
                    val_loss = validate(model, vb, layout, device)
                    if val_loss is not None:
                        record["val_loss"] = val_loss
                if log is not None:
                    log.log(record)
            if ckpt is not None and cfg.checkpoint.enabled and cfg.checkpoint.every_n_steps \
                    and step % cfg.checkpoint.every_n_steps == 0:
                ckpt.save(step, checkpoint.training_state(model, optimizer, scheduler, batches, step, rank,
                                                          layout.dp_rank))
            if preemption.requested():
                if ckpt is not None and cfg.checkpoint.enabled:
                    ckpt.save(step, checkpoint.training_state(model, optimizer, scheduler, batches, step, rank,
                                                              layout.dp_rank))
                    ckpt.wait()
                say(f"replica group {group} preempted at step {step}: exiting")
                return 0
        step = manager.current_step()
        if ckpt is not None:
            if cfg.checkpoint.enabled and cfg.checkpoint.save_last:
                ckpt.save(step, checkpoint.training_state(model, optimizer, scheduler, batches, step, rank,
                                                          layout.dp_rank))
            ckpt.wait()
            if cfg.checkpoint.export_last:
                export(step)
        say(f"replica group {group} finished at step {step}")
        return 0
    finally:
        commits.close()
        if log is not None:
            log.close()
        manager.shutdown(wait=False)
