"""A picture of a run from its metrics.jsonl: terminal plots (plotext), a PNG (matplotlib) and the
loss sparkline of `status --watch`.

Three panels over the optimizer step: training loss with the validation loss where it was
measured, the learning rate, and throughput (tokens/s, all devices). The plotting libraries are
imported only when a picture is asked for, so plan and status stay fast.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hpctl.errors import HpctlError, optional_import

BLOCKS = "▁▂▃▄▅▆▇█"
# (y-axis label, [(metrics key, series name)]) per panel, top to bottom.
PANELS = [("loss", [("loss", "loss"), ("val_loss", "val loss")]),
          ("learning rate", [("lr", "lr")]),
          ("tokens/s", [("tokens_per_s", "tokens/s")])]


def read_metrics(results_dir: str | Path, tail_bytes: int | None = None) -> list[dict[str, Any]]:
    """The records of `<results_dir>/metrics.jsonl` (the last `tail_bytes` only, when given); a line
    being written or damaged is skipped."""
    path = Path(results_dir, "metrics.jsonl")
    try:
        with path.open("rb") as f:
            if tail_bytes is not None:
                f.seek(max(0, path.stat().st_size - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("step"), int):
            records.append(value)
    return records


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the records that carry a number under `key`."""
    points = [(r["step"], float(r[key])) for r in records if isinstance(r.get(key), (int, float))
              and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
    return [s for s, _ in points], [v for _, v in points]


def _need(records: list[dict[str, Any]], results_dir: str | Path) -> None:
    if not records:
        raise HpctlError(f"no metrics yet in {Path(results_dir, 'metrics.jsonl')}",
                         hint="the trainer writes a line per logged step; for a job whose results directory "
                              "is not on this machine, plot where it is mounted")


def _library(name: str) -> Any:
    return optional_import(name, "plot", "plotting")


def terminal(records: list[dict[str, Any]], results_dir: str | Path, width: int = 100, height: int = 14,
             color: bool = False) -> str:
    """The three panels as text, one under the other; x axis `step`, y axes named as PANELS."""
    _need(records, results_dir)
    plt = _library("plotext")
    out = []
    for ylabel, keys in PANELS:
        figure = plt.figure
        figure.clear()
        figure.plot_size(width, height)
        drawn = [(series(records, key), name) for key, name in keys]
        drawn = [(xy, name) for xy, name in drawn if xy[0]]
        for (x, y), name in drawn:
            signal = figure.signal(x, y)
            signal.lines()
            if len(drawn) > 1:
                signal.label(name)
            figure.draw(signal)
        if not drawn:
            continue
        steps = [step for (x, _), _ in drawn for step in x]
        ticks = step_ticks(min(steps), max(steps), most=max(2, width // 12))
        figure.ruler("x").ticks(ticks, [str(t) for t in ticks])  # plotext's own would read 1.0, 5.8, ...
        figure.label("step", axis=0)
        figure.label(ylabel, axis=1)
        out.append(figure.build().string(colorless=not color))
    return "\n\n".join(out) + "\n"


def step_ticks(first: int, last: int, most: int) -> list[int]:
    """At most `most` x-axis ticks between two steps, all integers (steps are): the multiples of
    the smallest round stride (1, 2, 5 x 10^k) that fits, else the two ends."""
    stride = 1
    while (last - first) // stride + 1 > most:
        stride = stride * 5 // 2 if str(stride)[0] == "2" else stride * 2  # 1, 2, 5, 10, 20, 50, ...
    ticks = list(range(-(-first // stride) * stride, last + 1, stride))
    return ticks or sorted({first, last})


def check_image_path(path: Path) -> None:
    """The image is a PNG: a name that says otherwise (run.jpg, run.svg) would hold the wrong format."""
    if path.suffix.lower() != ".png":
        raise HpctlError(f"--plot-file writes a PNG image; {str(path)!r} does not end in .png",
                         hint=f"name it {path.with_suffix('.png') if path.suffix else str(path) + '.png'}")


def image(records: list[dict[str, Any]], results_dir: str | Path, path: Path, title: str = "") -> None:
    """The three panels as a PNG (1200 x 1000 pixels), drawn off-screen."""
    _need(records, results_dir)
    matplotlib = _library("matplotlib")
    matplotlib.use("Agg")
    pyplot = _library("matplotlib.pyplot")
    fig, axes = pyplot.subplots(len(PANELS), 1, figsize=(12, 10), dpi=100, sharex=True)
    try:
        for ax, (ylabel, keys) in zip(axes, PANELS):
            for key, name in keys:
                x, y = series(records, key)
                if x:
                    ax.plot(x, y, marker="o" if key == "val_loss" else None, markersize=3, label=name)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if len(ax.get_lines()) > 1:
                ax.legend()
        axes[-1].set_xlabel("step")
        axes[-1].xaxis.set_major_locator(_library("matplotlib.ticker").MaxNLocator(integer=True))  # whole steps
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        try:
            fig.savefig(path, format="png")
        except OSError as exc:
            raise HpctlError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        pyplot.close(fig)


def sparkline(values: list[float], width: int = 16) -> str:
    """The last `width` values as block characters scaled between their min and max."""
    values = [v for v in values if math.isfinite(v)][-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low or 1.0
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int((v - low) / span * len(BLOCKS)))] for v in values)
