"""`hpctl status JOB --plot / --plot-file` and the `--watch` loss sparkline, from a job's metrics.jsonl."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from hpctl.backends.base import JobRecord
from hpctl.plot import read_metrics, series, sparkline, step_ticks
from hpctl.state import State


def _job(tmp_path: Path, steps: int = 30) -> tuple[Path, Path]:
    """A finished local job in a state file, its metrics written as the trainer writes them."""
    results = tmp_path / "results" / "tiny"
    (results / "hpctl").mkdir(parents=True)
    (results / "hpctl" / "exit.4242").write_text("0\n")
    lines = []
    for step in range(1, steps + 1):
        record = {"step": step, "max_steps": steps, "loss": 5.0 * math.exp(-step / 10), "grad_norm": 1.0,
                  "lr": 3e-4 * min(1.0, step / 5), "tokens_per_s": 1000.0 + 10 * step, "step_time_s": 0.1}
        if step % 10 == 0:
            record["val_loss"] = record["loss"] + 0.1
        lines.append(json.dumps(record))
    (results / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 31, "lo')  # a line being written
    state = State(tmp_path / "state.json", lineage="l")
    state.jobs["tiny"] = JobRecord(name="tiny", cluster="local", backend="local", job_id="4242", spec_digest="d",
                                   spec={}, artifact={}, results_dir=str(results), logs={}, applied_at="",
                                   status="SUCCEEDED")
    state.save()
    return state.path, results


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_status_plot_draws_loss_lr_and_throughput(tmp_path: Path, run_cli) -> None:
    state, results = _job(tmp_path)
    png = tmp_path / "run.png"
    rc, out, err = run_cli("status", "tiny", "--plot", "--plot-file", png, "--state", state, "--no-color")
    assert rc == 0, err
    table, plots = out[:out.index("┌")], out[out.index("┌"):]
    assert "tiny" in table and "SUCCEEDED" in table
    # Three panels, each with its y label under the plot and `step` on the x axis.
    assert plots.count("step") >= 3
    # Three x axes, whose ticks are whole steps as steps are (plotext's own read 1.0, 5.8, 10.7, ...).
    lines = plots.splitlines()
    ticks = [lines[i + 1].split() for i, line in enumerate(lines) if line.lstrip().startswith("└")]
    assert ticks == [["5", "10", "15", "20", "25", "30"]] * 3, plots
    for label in ("loss", "val loss", "learning rate", "tokens/s"):
        assert label in plots, label
    assert "\x1b[" not in plots  # --no-color: plain text
    assert png.is_file() and png.stat().st_size > 20_000
    assert _png_size(png) == (1200, 1000)
    assert f"wrote {png}" in err
    # --watch draws them too, once the job has ended.
    rc, out, err = run_cli("status", "tiny", "--watch", "--plot-file", tmp_path / "w.png", "--state", state)
    assert rc == 0 and "tiny" in out and _png_size(tmp_path / "w.png") == (1200, 1000), err


def test_plot_needs_a_job_with_metrics(tmp_path: Path, run_cli) -> None:
    state, results = _job(tmp_path)
    rc, _, err = run_cli("status", "--plot", "--state", state)
    assert rc == 1 and "draw one job" in err and "Traceback" not in err
    (results / "metrics.jsonl").unlink()
    rc, _, err = run_cli("status", "tiny", "--plot-file", tmp_path / "x.png", "--state", state)
    assert rc == 1 and "no metrics yet" in err and not (tmp_path / "x.png").exists()
    rc, out, err = run_cli("status", "tiny", "--plot-file", tmp_path / "x.jpg", "--state", state)
    assert rc == 1 and out == "" and "writes a PNG image" in err and "name it" in err and f"{tmp_path}/x.png" in err
    assert not (tmp_path / "x.jpg").exists()


def test_metrics_reading_skips_partial_lines_and_keeps_validation_steps(tmp_path: Path) -> None:
    _, results = _job(tmp_path)
    records = read_metrics(results)
    assert [r["step"] for r in records] == list(range(1, 31))
    assert series(records, "val_loss")[0] == [10, 20, 30]
    assert [r["step"] for r in read_metrics(results, tail_bytes=400)][-1] == 30


def test_watch_shows_a_loss_sparkline(tmp_path: Path) -> None:
    from rich.console import Console

    from hpctl.backends.base import JobStatus
    from hpctl.present import status_table
    _, results = _job(tmp_path)
    record = State.load(tmp_path / "state.json").job("tiny")
    console = Console(width=200, record=True)
    console.print(status_table([(record, JobStatus("RUNNING", metrics=read_metrics(results)[-1]))], spark=True))
    line = next(ln for ln in console.export_text().splitlines() if "tiny" in ln)
    assert sparkline([1.0, 0.5, 0.25, 0.1]) == "█▄▂▁"
    assert sparkline([float("nan"), 2.0, 2.0]) == "▁▁" and sparkline([]) == ""
    spark = sparkline(series(read_metrics(results), "loss")[1])
    assert len(spark) == 16 and spark[0] == "█" and spark[-1] == "▁" and spark in line  # a falling loss


@pytest.mark.parametrize("value", [float("inf"), "x", True])
def test_series_ignores_what_is_not_a_finite_number(value: object) -> None:
    assert series([{"step": 1, "loss": value}, {"step": 2, "loss": 1.5}], "loss") == ([2], [1.5])


@pytest.mark.parametrize("first, last, most, want", [
    (1, 6, 8, [1, 2, 3, 4, 5, 6]),
    (1, 30, 8, [5, 10, 15, 20, 25, 30]),
    (1, 1000, 8, [200, 400, 600, 800, 1000]),
    (101, 113, 3, [105, 110]),
    (4, 4, 8, [4]),  # one step
    (51, 91, 2, [51, 91]),  # no multiple of the stride (50) between them: the two ends
])
def test_step_ticks_are_whole_round_steps_within_the_run(first: int, last: int, most: int, want: list[int]) -> None:
    assert step_ticks(first, last, most) == want
