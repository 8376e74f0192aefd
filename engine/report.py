"""`mmflow report RUN_DIR...`: per-epoch curves (one PNG per metric, one line per step) and a summary.

Generic: any step whose metrics.json holds a `history` list of per-epoch dicts is plotted; every
step's scalar metrics go into the markdown summary. Metrics named `family/member` (e.g.
`gblend_weight/audio`) share one figure per family, one line per step and member.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .errors import UsageError


def load_steps(run_dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """`label -> metrics` for every finished step of the given runs (label: step, or run/step for several runs)."""
    steps: dict[str, dict[str, Any]] = {}
    for run_dir in run_dirs:
        record = run_dir / "run.json"
        if not record.exists():
            raise UsageError(f"{run_dir}: not a run directory (no run.json)")
        order = json.loads(record.read_text()).get("order", [])
        for step in order:
            metrics_file = run_dir / step / "metrics.json"
            if metrics_file.exists():
                label = step if len(run_dirs) == 1 else f"{run_dir.name}/{step}"
                steps[label] = json.loads(metrics_file.read_text())
    return steps


def write_report(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Draw the curves and write report.md into `out_dir`; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = load_steps(run_dirs)
    histories = {label: m["history"] for label, m in steps.items() if isinstance(m.get("history"), list) and m["history"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    metric_names = sorted({k for h in histories.values() for row in h for k, v in row.items()
                           if k != "epoch" and isinstance(v, (int, float))})
    figures: dict[str, list[str]] = {}  # figure -> the metrics drawn in it
    for metric in metric_names:
        figures.setdefault(metric.rpartition("/")[0] or metric, []).append(metric)
    for title, metrics in figures.items():
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, history in histories.items():
            for metric in metrics:
                points = [(row.get("epoch", i), row[metric]) for i, row in enumerate(history)
                          if isinstance(row.get(metric), (int, float)) and math.isfinite(row[metric])]
                if points:
                    member = metric.rpartition("/")[2] if "/" in metric else ""
                    ax.plot(*zip(*points), marker="o", markersize=3, label=f"{label} {member}".strip())
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', title)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    summary = out_dir / "report.md"
    summary.write_text(_summary(steps, [p.name for p in written]))
    written.append(summary)
    return written


def _summary(steps: dict[str, dict[str, Any]], figures: list[str]) -> str:
    lines = ["# Run report", ""]
    for label, metrics in steps.items():
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not scalars:
            continue
        lines += [f"## {label}", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scalars.items()]
        lines.append("")
    if figures:
        lines += ["## Per-epoch curves", ""] + [f"![{f[:-4]}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
