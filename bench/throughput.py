"""Section 2: training throughput on CPU, adapter.train against the HF Trainer and plain loops.

Every contender trains the same tiny Llama (bench.tinyllama) on the same token file with the same
global batch (16 x 256 tokens per optimizer step), AdamW and clipping. A step's time is the wall
time between the ends of consecutive optimizer steps, everything included (adapter: its stdout
step lines, stamped as they arrive; baselines: their own clock at each step's end). A run's
figure is tokens per step / the median step time after the warm-up steps; each contender runs
`runs` times, interleaved (the order rotates each round), and the table shows the median run.
In the full run each run first waits for a quiet machine and is repeated (twice at most) when
others kept more than 0.3 cores busy meanwhile (bench.runner.steady), for PATIENCE_S at most;
the foreign load of each kept run is in the JSON.

Contenders:
- adapter.train under torchrun, as hpctl's local backend launches it: FSDP2 over 2 processes
  (what it does at scale), and the candidates for its fastest mode on this job: 1 process, 1
  process with torch.compile, and 2 processes replicating instead of sharding (sharding_strategy
  no_shard), these two in the full run only (compiling alone costs a minute here);
- the HF Trainer, 1 process and 2-process DDP (it has no FSDP on CPU);
- a plain PyTorch loop, 1 process (the floor) and FSDP2 over 2 processes.
"Fastest" is the best median among a side's candidates, the same rule for both sides.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import adapter_spec, runner
from bench import tinyllama as tl
from bench.report import Row, Section, median, spread

PATIENCE_S = 20 * 60  # after this long, runs are no longer held back or repeated for others' load
KEY, TITLE = "throughput", "2. Trainer throughput on CPU: tiny Llama, fp32, global batch 16 x 256"
USES_BASELINES = True  # the HF Trainer needs accelerate: bench.baselines installs it


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # adapter | hf | plain
    nproc: int
    overrides: tuple[str, ...] = ()  # adapter only
    fsdp2: bool = False  # plain only
    full_only: bool = False


ADAPTER_FSDP2 = Contender("adapter FSDP2, 2 proc", "adapter", 2, ("model.sharding_strategy=full_shard", "model.shard_degree=2"))
ADAPTER_FASTEST = (
    Contender("adapter 1 proc", "adapter", 1, ("model.sharding_strategy=full_shard", "model.shard_degree=null")),
    Contender("adapter 1 proc + compile", "adapter", 1,
              ("model.sharding_strategy=full_shard", "model.shard_degree=null", "model.compile=true"), full_only=True),
    Contender("adapter no_shard, 2 proc", "adapter", 2, ("model.sharding_strategy=no_shard", "model.shard_degree=null"),
              full_only=True),
)
HF = (Contender("HF Trainer 1 proc", "hf", 1), Contender("HF Trainer DDP, 2 proc", "hf", 2, full_only=True))
PLAIN_1 = Contender("plain loop 1 proc (floor)", "plain", 1)
PLAIN_FSDP2 = Contender("plain FSDP2 loop, 2 proc", "plain", 2, fsdp2=True)


@dataclass
class Results:
    tokens_per_s: dict[str, list[float]] = field(default_factory=dict)
    step_times: dict[str, list[dict[int, float]]] = field(default_factory=dict)
    load: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # others' load during each kept run

    def add(self, name: str, steps: dict[int, float], warmup: int) -> None:
        measured = [t for s, t in steps.items() if s > warmup]
        if not measured:
            raise RuntimeError(f"{name}: no step times after {warmup} warm-up steps: {steps}")
        self.tokens_per_s.setdefault(name, []).append(tl.TOKENS_PER_STEP / median(measured))
        self.step_times.setdefault(name, []).append(steps)

    def median(self, name: str) -> float | None:
        runs = self.tokens_per_s.get(name)
        return median(runs) if runs else None


def _step_times_adapter(c: Contender, data_dir: Path, root: Path, steps: int) -> tuple[dict[int, float], runner.Timed]:
    """Step -> seconds between the trainer's step lines on stdout (from step 2 on)."""
    spec = adapter_spec.compose(adapter_spec.slug(c.name), root, c.nproc, steps,
                                [*adapter_spec.benchmark_model(), *adapter_spec.dataset(data_dir),
                                 *adapter_spec.no_checkpoints(), *c.overrides])
    path = adapter_spec.write(spec)
    timed = runner.stamped_lines(runner.torchrun(c.nproc, "adapter.train", "--config", str(path)))
    return adapter_spec.step_gaps(timed.lines), timed


def _step_times_worker(c: Contender, data_file: Path, root: Path, steps: int) -> tuple[dict[int, float], runner.Timed]:
    """Step -> seconds since the end of the previous step (step 1: since the loop started)."""
    out = root / f"{c.kind}-{c.nproc}.json"
    module = "bench.hf_trainer" if c.kind == "hf" else "bench.plain_loop"
    args = ["--data", str(data_file), "--steps", str(steps), "--out", str(out)] + (["--fsdp2"] if c.fsdp2 else [])
    timed = runner.run(runner.torchrun(c.nproc, module, *args) if c.nproc > 1 else runner.python(module, *args))
    return {i + 1: t for i, t in enumerate(json.loads(out.read_text())["step_time_s"])}, timed


def run(section: Section, quick: bool) -> None:
    runs, warmup, measured = (1, 1, 3) if quick else (5, 3, 8)
    steps = warmup + measured
    contenders = [c for c in (ADAPTER_FSDP2, *ADAPTER_FASTEST, *HF, PLAIN_1, PLAIN_FSDP2) if not (quick and c.full_only)]
    results = Results()
    deadline = time.monotonic() + PATIENCE_S
    with tempfile.TemporaryDirectory(prefix="hpctl-bench-tput-") as tmp:
        root = Path(tmp)
        data_file = tl.write_dataset(root / "data" / "train.json", tl.GLOBAL_BATCH * (steps + 1))
        for r in range(runs):
            shift = r % len(contenders)
            for c in contenders[shift:] + contenders[:shift]:
                if c.kind == "adapter":
                    def measure(c=c):
                        return _step_times_adapter(c, data_file.parent, root / "adapter", steps)
                else:
                    def measure(c=c):
                        return _step_times_worker(c, data_file, root, steps)
                patient = not quick and time.monotonic() < deadline
                times, timed, attempts = runner.steady(measure, patient=patient)
                results.add(c.name, times, warmup)
                results.load.setdefault(c.name, []).append({"foreign_cores": round(timed.foreign_cores, 3),
                                                            "attempts": attempts, "patient": patient})

    def best(cands) -> Contender:
        return max((c for c in cands if c in contenders), key=lambda c: results.median(c.name))

    ours_best, hf_best = best([ADAPTER_FSDP2, *ADAPTER_FASTEST]), best(HF)
    fastest, hf = results.median(ours_best.name), results.median(hf_best.name)
    fsdp, plain_fsdp = results.median(ADAPTER_FSDP2.name), results.median(PLAIN_FSDP2.name)
    floor = results.median(PLAIN_1.name)
    section.rows = [
        Row(f"adapter fastest [{ours_best.name}] vs HF Trainer fastest [{hf_best.name}]", fastest, "tok/s", hf,
            ">= 1.1x", fastest >= 1.1 * hf),
        Row("adapter FSDP2 vs plain FSDP2 loop (2 proc)", fsdp, "tok/s", plain_fsdp, ">= 1.0x", fsdp >= plain_fsdp),
        *(Row(f"{c.name} vs plain loop floor", results.median(c.name), "tok/s", floor,
              note=f"others used {median([r['foreign_cores'] for r in results.load[c.name]]):.2f} cores")
          for c in contenders),
    ]
    section.details = {
        "runs": runs, "warmup_steps": warmup, "measured_steps": measured, "tokens_per_step": tl.TOKENS_PER_STEP,
        "adapter_fastest_mode": ours_best.name, "hf_fastest_mode": hf_best.name,
        "tokens_per_s": {name: spread(v) for name, v in results.tokens_per_s.items()},
        "foreign_load": results.load,
        "step_time_s": {name: [{str(s): t for s, t in run.items()} for run in runs_]
                        for name, runs_ in results.step_times.items()},
    }
