"""Section: how each cost grows with the work, so a regression that is fine at one size but not at
ten shows up.

Each row compares the same measurement at two sizes, normalised so that linear growth reads 1.0:
- plan: a cold `hpctl plan` of Llama 3.1 8B on Slurm whose general config carries 2,000 and then
  8,000 extra env_vars (--quick: 500 and 2,000), each a key merged, validated, rendered into the
  sbatch script and scanned for secrets; plan cache off; CPU seconds (what the work costs, not
  what others on the machine cost it). The row is the marginal CPU milliseconds per 1,000 keys
  over the larger step against the smaller: above 1.0 means a key costs more the more there are.
- recipes check: `hpctl recipes check` over HyperPod's v1 and v2 collections (../shared; skipped
  with the reason where absent; --quick: v1 only), every recipe planned for Slurm, Kubernetes and
  SageMaker in one process: seconds per plan against one cold `hpctl plan` of HyperPod's
  flagship recipe (the batch should amortise start-up).
- trainer: adapter.train tokens/s at 2 processes against 1 (the same tiny Llama and global batch;
  2 cores here, so about 1.0 is all there is to gain), and at the bench model against a 4x wider
  one at 1 process, as tokens/s x parameters (FLOPs per second: 1.0 means the cost grows with
  the parameters and no faster). Full run only: --quick leaves out these three trainer runs.
- checkpoint: DCP save and load of 8M and 64M fp32 parameters (--quick: 4M and 32M) in one
  process, seconds per parameter of the larger against the smaller.
"""
from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

from bench import adapter_spec, hyperpod_launcher, runner
from bench import tinyllama as tl
from bench.report import Row, Section, median, spread

KEY, TITLE = "scaling", "Scale with work: plan vs keys, recipes check, trainer vs processes and size, checkpoints vs params"
RECIPE = "llama/llama3_1_8b_pretrain"
PEER_RECIPES = hyperpod_launcher.RECIPES.parent  # ../shared/peer-recipes
PAD_KEYS = {False: (0, 2000, 8000), True: (0, 500, 2000)}  # full run, --quick
LINEAR_GOAL = 1.25  # at most 25% worse than linear
CHECK_OVERRIDES = ("container=example.com/img:1", "sm_jobs:+cluster.role_arn=arn:aws:iam::123456789012:role/hpctl",
                   "sm_jobs:cluster.sm_jobs_config.output_path=s3://bucket/out")
WIDE = {"hidden_size": 512, "intermediate_size": 1376, "num_attention_heads": 8, "num_key_value_heads": 4}


def _padded_workspace(root: Path, keys: int) -> Path:
    """A workspace whose general config is the built-in one plus `keys` env_vars."""
    from hpctl.resources import builtin_root
    root.mkdir(parents=True)
    text = (builtin_root() / "config.yaml").read_text()
    pad = "".join(f"  HPCTL_BENCH_PAD_{i:05d}: value-{i}\n" for i in range(keys))
    (root / "config.yaml").write_text(text.replace("env_vars:  # environment variables set for every rank\n",
                                                   "env_vars:  # environment variables set for every rank\n" + pad, 1))
    return root


def _plan_rows(section: Section, quick: bool, tmp: Path) -> None:
    pads, repeats = PAD_KEYS[quick], 2 if quick else 7
    times: dict[int, list[float]] = {k: [] for k in pads}
    workspaces = {k: _padded_workspace(tmp / f"ws-{k}", k) for k in pads}
    cmd = [runner.console_script("hpctl"), "plan", RECIPE, "--cluster", "slurm", "--json"]
    for k, ws in workspaces.items():  # untimed: page cache, and proof the padding reached the script
        plan = json.loads(runner.run([*cmd, "--workspace", str(ws)], cwd=ws).stdout)
        if k and f"HPCTL_BENCH_PAD_{k - 1:05d}" not in json.dumps(plan):
            raise RuntimeError(f"the {k} padded env_vars did not reach the plan")
    for r in range(repeats):
        for k in (pads if r % 2 == 0 else pads[::-1]):
            times[k].append(runner.run([*cmd, "--workspace", str(workspaces[k])], cwd=workspaces[k],
                                       extra_env={"HPCTL_CACHE": "off"}).cpu_s)
    t = {k: median(v) for k, v in times.items()}
    first = (t[pads[1]] - t[pads[0]]) / (pads[1] - pads[0]) * 1000
    then = (t[pads[2]] - t[pads[1]]) / (pads[2] - pads[1]) * 1000
    ok = first > 0 and then / first <= LINEAR_GOAL
    section.rows.append(Row(f"plan: marginal CPU ms per 1,000 keys, {pads[1]:,}->{pads[2]:,} vs 0->{pads[1]:,}",
                            then * 1000, "ms", first * 1000, f"<= {LINEAR_GOAL}x (linear: 1.0)", ok))
    section.details["plan_cpu_s"] = {str(k): spread(v) for k, v in times.items()}


def _recipes_check_rows(section: Section, quick: bool, tmp: Path) -> None:
    collections = [c for c in ("hyperpod-v1", "hyperpod")[:1 if quick else 2] if (PEER_RECIPES / c / "recipes").is_dir()]
    if not collections:
        section.details["recipes_check"] = f"skipped: the HyperPod collections are absent ({PEER_RECIPES.resolve()})"
        return
    hpctl = runner.console_script("hpctl")
    single = [runner.run(hyperpod_launcher.hpctl_command(hpctl), cwd=tmp).wall_s for _ in range(3)]
    for name in collections:
        timed = runner.run([hpctl, "recipes", "check", str(PEER_RECIPES / name), *CHECK_OVERRIDES, "--json"], cwd=tmp,
                           ok_codes=(0, 1))
        rows = json.loads(timed.stdout)["recipes"]
        plans = sum(ok for row in rows for ok in row["planned"].values())
        if not plans:
            raise RuntimeError(f"recipes check of {name} planned nothing")
        per = timed.wall_s / plans
        section.rows.append(Row(f"recipes check {name}: s per plan ({len(rows)} recipes, {plans} plans) vs one cold plan",
                                per, "s", median(single), "< 1.0x (start-up amortised)", per < median(single)))
        section.details[f"recipes_check_{name}"] = {"recipes": len(rows), "plans": plans, "wall_s": timed.wall_s,
                                                    "plans_per_s": plans / timed.wall_s}
    section.details["single_plan_wall_s"] = spread(single)


def _tokens_per_s(name: str, nproc: int, root: Path, steps: int, warmup: int, extra: list[str]) -> float:
    """The trainer's tokens/s after the warm-up steps, measured on a quiet machine and repeated
    when others disturbed it (bench.runner.steady)."""
    spec = adapter_spec.compose(adapter_spec.slug(name), root, nproc, steps,
                                [*adapter_spec.benchmark_model(), "model.data.use_synthetic_data=true",
                                 *adapter_spec.no_checkpoints(), "model.sharding_strategy=full_shard",
                                 "model.shard_degree=null", *extra])
    command = runner.torchrun(nproc, "adapter.train", "--config", str(adapter_spec.write(spec)))

    def measure() -> tuple[dict[int, float], runner.Timed]:
        timed = runner.stamped_lines(command)
        return adapter_spec.step_gaps(timed.lines), timed
    steps_s, _, _ = runner.steady(measure, patient=True)
    gaps = [t for s, t in steps_s.items() if s > warmup]
    if not gaps:
        raise RuntimeError(f"{name}: no step times after {warmup} warm-up steps")
    return tl.TOKENS_PER_STEP / median(gaps)


def _params(overrides: dict[str, int]) -> int:
    from adapter.modelsize import param_count
    model = {"model_type": "llama_v3", "hidden_size": tl.HIDDEN, "intermediate_size": tl.INTERMEDIATE,
             "num_hidden_layers": tl.LAYERS, "num_attention_heads": tl.HEADS, "num_key_value_heads": tl.KV_HEADS,
             "vocab_size": tl.VOCAB, **overrides}
    return param_count(model)


def _trainer_rows(section: Section, tmp: Path) -> None:
    warmup, measured = 2, 6
    steps = warmup + measured
    wide = [f"model.{k}={v}" for k, v in WIDE.items()]
    one = _tokens_per_s("scale 1 proc", 1, tmp, steps, warmup, [])
    two = _tokens_per_s("scale 2 proc", 2, tmp, steps, warmup, [])
    big = _tokens_per_s("scale wide 1 proc", 1, tmp, steps, warmup, wide)
    small_p, big_p = _params({}), _params(WIDE)
    section.rows.append(Row("trainer tokens/s: 2 processes vs 1 (2 cores)", two, "tok/s", one, "", None))
    section.rows.append(Row(f"trainer tokens/s x params: {big_p / 1e6:.1f}M vs {small_p / 1e6:.1f}M params, 1 proc",
                            big * big_p / 1e6, "Mtok*param/s", one * small_p / 1e6, ">= 0.8x (cost <= linear in params)",
                            big * big_p >= 0.8 * one * small_p))
    section.details["trainer"] = {"tokens_per_s": {"1 proc": one, "2 proc": two, "wide 1 proc": big},
                                  "params": {"bench": small_p, "wide": big_p}, "steps": steps, "warmup": warmup}


def _checkpoint_rows(section: Section, quick: bool, tmp: Path) -> None:
    import torch
    import torch.distributed.checkpoint as dcp
    sizes, repeats = ((4_000_000, 32_000_000), 2) if quick else ((8_000_000, 64_000_000), 3)
    per_param: dict[str, dict[int, float]] = {"save": {}, "load": {}}
    for n in sizes:
        state = {f"w{i}": torch.randn(n // 8) for i in range(8)}
        saves, loads = [], []
        for r in range(repeats):
            path = tmp / f"ckpt-{n}-{r}"
            with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
                warnings.simplefilter("ignore", UserWarning)
                start = time.perf_counter()
                dcp.save(state, checkpoint_id=str(path))
                saves.append(time.perf_counter() - start)
                target = {k: torch.empty_like(v) for k, v in state.items()}
                start = time.perf_counter()
                dcp.load(target, checkpoint_id=str(path))
                loads.append(time.perf_counter() - start)
            if not all(torch.equal(target[k], state[k]) for k in state):
                raise RuntimeError("a checkpoint did not load back what was saved")
        per_param["save"][n], per_param["load"][n] = median(saves) / n, median(loads) / n
        section.details[f"checkpoint_{n}"] = {"save_s": spread(saves), "load_s": spread(loads)}
    for what in ("save", "load"):
        small, big = (per_param[what][n] * 1e6 for n in sizes)
        section.rows.append(Row(f"checkpoint {what}: s per 1M params, {sizes[1] // 10**6}M vs {sizes[0] // 10**6}M params",
                                big, "s", small, f"<= {LINEAR_GOAL}x (linear: 1.0)", big <= LINEAR_GOAL * small))


def run(section: Section, quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="hpctl-bench-scale-") as d:
        tmp = Path(d)
        _plan_rows(section, quick, tmp / "plan")
        _recipes_check_rows(section, quick, tmp)
        if quick:  # three more trainer runs; the throughput section's quick run exercises the same launch
            section.details["trainer"] = "full run only"
        else:
            _trainer_rows(section, tmp / "trainer")
        _checkpoint_rows(section, quick, tmp)
