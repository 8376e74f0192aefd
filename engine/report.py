"""`mmflow report RUN_DIR...`: per-epoch curves by metric family, a side-by-side results table, report.md and a
self-contained report.html.

Generic: any step whose metrics.json holds a `history` list of per-epoch dicts is drawn. Series that share
their members (`head_accuracy_audio`, `head_accuracy_visual`, `grad_angle_audio`, `grad_angle_visual`: two
prefixes over the same set {audio, visual}), or are named `family/member` (`gblend_weight/audio`), are one
figure per family with every member on the same axes. Each step keeps one colour in every figure; members
differ by line style. A step run once per seed (`train@0`, `train@1`, ...) is drawn as its mean over the seeds
in a band of one standard deviation. Epochs count from 1, as the console does. Series that never change (a constant
learning rate, zero padded samples) are listed in a table instead of drawn. A sweep folder stands for its
trials, each labelled by its sampled values. A final metric that is a curve (`{"x": axis name, "points": [[x, y],
...]}`, e.g. accuracy over noise level) is drawn over its own axis, its family (`family/member`) on one figure.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .run_folder import RUN_RECORD
from .runs import format_number, plus_minus
from .seeds import base_name, over_seeds

LINE_STYLES = ["-", "--", ":", "-."]
CURVES = "## Curves of the final metrics"
UNITS = [("angle", "degrees"), ("seconds", "s"), ("per_s", "samples/s"), ("accuracy", "fraction correct"),
         ("loss", "cross-entropy")]  # a y-axis label's unit, by what the metric's name contains


@dataclass
class Series:
    """One step of one run (or trial), as the report shows it."""

    label: str  # the legend's name: the step, run/step or trial values/step
    metrics: dict[str, Any]
    history: list[dict[str, Any]]


@dataclass
class Figure:
    """One figure: the metrics drawn on its axes and its y-axis label."""

    title: str
    metrics: list[str]
    members: dict[str, str]  # metric -> its member (modality) in a family figure, '' alone
    ylabel: str
    xlabel: str = "epoch"  # else the figure draws final curve metrics over their own axis


def load_series(paths: list[Path]) -> tuple[list[Series], dict[str, str]]:
    """Every step with metrics of the runs (a sweep folder: of its trials), and each run's workflow text."""
    runs: list[tuple[str, Path]] = []
    for path in paths:
        if not (path / RUN_RECORD).exists():
            raise UsageError(f"{path}: not a run directory (no {RUN_RECORD})")
        trials = _trial_labels(path)
        runs += [(label, path / "trials" / name) for name, label in trials.items()] if trials else [(path.name, path)]
    several = len(runs) > 1
    series, workflows = [], {}
    for name, run_dir in runs:
        workflow = run_dir / "workflow.yaml"
        if workflow.exists():
            workflows[name] = workflow.read_text(encoding="utf-8")
        for step in json.loads((run_dir / RUN_RECORD).read_text()).get("order", []):
            metrics_file = run_dir / step / "metrics.json"
            if metrics_file.exists():
                metrics = json.loads(metrics_file.read_text())
                history = metrics.get("history") if isinstance(metrics.get("history"), list) else []
                series.append(Series(f"{name}/{step}" if several else step, metrics, history))
    return series, workflows


def _trial_labels(sweep_dir: Path) -> dict[str, str]:
    """A sweep's trials by folder name, each labelled by its sampled values (`lr=0.05`), from results.csv."""
    results = sweep_dir / "results.csv"
    if not (sweep_dir / "trials").is_dir() or not results.exists():
        return {}
    rows = list(csv.reader(results.open()))
    swept = rows[0][2:-2]  # trial, status, the swept paths..., metric, results
    labels = {row[0]: " ".join(f"{p.rpartition('.')[2]}={row[2 + i]}" for i, p in enumerate(swept)) for row in rows[1:]}
    return {name: label for name, label in sorted(labels.items())
            if (sweep_dir / "trials" / name / RUN_RECORD).exists()}


def figures_for(series: list[Series]) -> tuple[list[Figure], dict[str, dict[str, Any]]]:
    """The figures to draw, and the series left out because they never change (metric -> label -> value)."""
    values: dict[str, dict[str, list[float]]] = {}
    for s in series:
        for row in s.history:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    values.setdefault(key, {}).setdefault(s.label, []).append(float(value))
    flat = {k for k, by in values.items() if all(len(set(v)) == 1 for v in by.values())
            and any(len(v) > 1 for v in by.values())}
    figures, constant = [], {}
    for title, (metrics, members) in _families(list(values)).items():
        if all(m in flat for m in metrics):  # a member that stays put beside one that moves is drawn
            constant.update({m: {label: v[0] for label, v in values[m].items()} for m in metrics})
        else:
            figures.append(Figure(title, metrics, members, _ylabel(title)))
    return figures, constant


def curve_figures(series: list[Series]) -> list[Figure]:
    """The figures of the final metrics that are curves, one per family."""
    axes = {k: v["x"] for s in series for k, v in s.metrics.items() if is_curve(v)}
    return [Figure(title, metrics, members, _ylabel(title), xlabel=axes[metrics[0]])
            for title, (metrics, members) in _families(list(axes)).items()]


def is_curve(value: Any) -> bool:
    """Whether a metric's value is a curve: {"x": axis name, "points": [[x, y], ...]}."""
    return (isinstance(value, dict) and isinstance(value.get("x"), str) and isinstance(value.get("points"), list)
            and all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
                    for p in value["points"]))


def _families(names: list[str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Figure title -> (its metrics, metric -> member): `family/member` names, and prefixes whose members are a set
    that some other prefix has too (the modalities); every other metric alone."""
    split = {n: n.rpartition("/")[::2] if "/" in n else n.rpartition("_")[::2] for n in names}
    members: dict[str, set[str]] = {}
    for name, (prefix, member) in split.items():
        if prefix and "/" not in name:
            members.setdefault(prefix, set()).add(member)
    shared = Counter(frozenset(m) for m in members.values() if len(m) > 1)
    families: dict[str, tuple[list[str], dict[str, str]]] = {}
    for name in sorted(names):
        prefix, member = split[name]
        grouped = "/" in name or (prefix in members and shared[frozenset(members[prefix])] > 1)
        title = prefix if grouped else name
        metrics, named = families.setdefault(title, ([], {}))
        metrics.append(name)
        named[name] = member if grouped else ""
    return families


def _ylabel(title: str) -> str:
    unit = next((unit for part, unit in UNITS if part in title), "")
    words = title.replace("_", " ")
    return f"{words} ({unit})" if unit else words


def draw(figure: Figure, series: list[Series], colours: dict[str, Any]) -> Any:
    """A matplotlib figure: each step in its colour, each member in its line style, epochs from 1. A step run once per
    seed is one line, the mean over its seeds, in a band of one standard deviation either side."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    styles = {m: LINE_STYLES[i % len(LINE_STYLES)] for i, m in enumerate(dict.fromkeys(figure.members.values()))}
    epochs = figure.xlabel == "epoch"
    steps: dict[str, list[Series]] = {}
    for s in series:
        steps.setdefault(base_name(s.label), []).append(s)
    for step, runs in steps.items():
        for metric in figure.metrics:
            lines = [(s.label, points) for s in runs if (points := _points(s, metric, epochs))]
            if not lines:
                continue
            member = figure.members[metric]
            named = f" · {member}" if member else ""
            look = {"color": colours[step], "linestyle": styles[member], "marker": "o", "markersize": 3}
            xs = [x for x, _ in lines[0][1]]
            if len(lines) > 1 and all([x for x, _ in points] == xs for _, points in lines):
                by_x = list(zip(*([y for _, y in points] for _, points in lines)))
                mean = [statistics.fmean(ys) for ys in by_x]
                spread = [statistics.stdev(ys) for ys in by_x]
                ax.plot(xs, mean, label=f"step {step}{named} (mean ± std of {len(lines)} seeds)", **look)
                ax.fill_between(xs, [m - d for m, d in zip(mean, spread)], [m + d for m, d in zip(mean, spread)],
                                color=colours[step], alpha=0.15, linewidth=0)
            else:  # one run, or seeds whose points do not line up
                for label, points in lines:
                    ax.plot(*zip(*points), label=f"step {label}{named}", **look)
    ax.set_xlabel(figure.xlabel)
    ax.set_ylabel(figure.ylabel)
    if epochs:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(figure.title.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _points(s: Series, metric: str, epochs: bool) -> list[tuple[float, float]]:
    """The (x, y) points of one metric of one series: per epoch from 1, or the final metric's curve."""
    if epochs:
        return [(row.get("epoch", i) + 1, row[metric]) for i, row in enumerate(s.history)
                if isinstance(row.get(metric), (int, float)) and math.isfinite(row[metric])]
    return [tuple(p) for p in s.metrics[metric]["points"]] if is_curve(s.metrics.get(metric)) else []


def write_report(paths: list[Path], out_dir: Path) -> tuple[list[Path], str]:
    """Draw the figures, write report.md and report.html into `out_dir`; the files written and, when no figure
    could be drawn, why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, workflows = load_series(paths)
    figures, constant = figures_for(series)
    curves = curve_figures(series)
    palette = plt.get_cmap("tab10").colors
    drawn = dict.fromkeys(base_name(s.label) for s in series
                          if s.history or any(is_curve(v) for v in s.metrics.values()))  # a step's seeds: one
    colours = {step: palette[i % len(palette)] for i, step in enumerate(drawn)}
    out_dir.mkdir(parents=True, exist_ok=True)
    written, images = [], {}
    for figure in [*figures, *curves]:
        fig = draw(figure, series, colours)
        path = out_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', figure.title)}.png"
        fig.savefig(path, dpi=100)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        images[path.name] = base64.b64encode(buffer.getvalue()).decode()
        plt.close(fig)
        written.append(path)
    results, matrices = results_table(series), matrix_tables(series)
    why = "" if figures else "no step of these runs has per-epoch metrics (a `history` in its metrics.json)"
    names = [p.name for p in written]
    drawn_by = {"epochs": names[:len(figures)], "curves": names[len(figures):]}
    (out_dir / "report.md").write_text(_markdown(results, matrices, constant, drawn_by, why))
    (out_dir / "report.html").write_text(_html(results, matrices, constant, images, drawn_by, workflows, why))
    return [*written, out_dir / "report.md", out_dir / "report.html"], why


def results_table(series: list[Series]) -> list[list[str]]:
    """Every step's final numeric metrics side by side: a row per metric, a column per step; a step run once per
    seed has a column of its mean ± std over the seeds first."""
    keys = list(dict.fromkeys(k for s in series for k, v in s.metrics.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)))
    seeded = over_seeds({s.label: s.metrics for s in series if base_name(s.label) != s.label})
    rows = [["metric", *(f"{step} (mean ± std)" for step in seeded), *(s.label for s in series)]]
    rows += [[k, *(plus_minus(*stats[k][:2]) if k in stats else "" for stats in seeded.values()),
              *(format_number(s.metrics.get(k), missing="") for s in series)] for k in keys]
    return rows


def matrix_tables(series: list[Series]) -> dict[str, list[list[str]]]:
    """Each step's matrix metrics (lists of equally long rows of numbers, e.g. a confusion matrix: rows the true
    class, columns the predicted one) as tables, titled `step: metric`."""
    tables = {}
    for s in series:
        for key, value in s.metrics.items():
            if (isinstance(value, list) and value and all(isinstance(row, list) and len(row) == len(value[0])
                                                          for row in value)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for row in value for v in row)):
                header = ["row / column", *(str(j) for j in range(len(value[0])))]
                body = [[str(i), *map(format_number, row)] for i, row in enumerate(value)]
                tables[f"{s.label}: {key}"] = [header, *body]
    return tables


def _markdown(results: list[list[str]], matrices: dict[str, list[list[str]]], constant: dict[str, dict[str, Any]],
              figures: dict[str, list[str]], why: str) -> str:
    lines = ["# Run report", "", "## Results", "", *_markdown_table(results), ""]
    if matrices:
        lines += ["## Matrices", ""]
        for title, rows in matrices.items():
            lines += [f"### {title}", "", *_markdown_table(rows), ""]
    if constant:
        lines += ["## Constant over training (not drawn)", "", *_markdown_table(_constant_rows(constant)), ""]
    lines += ["## Per-epoch curves", ""] + ([f"![{f[:-4]}]({f})" for f in figures["epochs"]] or [why])
    if figures["curves"]:
        lines += ["", CURVES, "", *(f"![{f[:-4]}]({f})" for f in figures["curves"])]
    return "\n".join(lines) + "\n"


def _markdown_table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0]),
            *("| " + " | ".join(row) + " |" for row in rows[1:])]


def _constant_rows(constant: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = [[k, ", ".join(f"{label}: {format_number(v)}" for label, v in by.items())] for k, by in constant.items()]
    return [["metric", "value (per step)"], *rows]


def _html(results: list[list[str]], matrices: dict[str, list[list[str]]], constant: dict[str, dict[str, Any]],
          images: dict[str, str], figures: dict[str, list[str]], workflows: dict[str, str], why: str) -> str:
    """One file that opens offline: the tables, the figures as data URIs, the workflow text of each run."""
    def table(rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
        return f"<table><tr>{head}</tr>{body}</table>"

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>mmflow report</title><style>"
             "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:2px 8px;text-align:right}pre{background:#f6f6f6;padding:1em}</style></head><body>",
             "<h1>Run report</h1><h2>Results</h2>", table(results)]
    if matrices:
        parts.append("<h2>Matrices</h2>")
        parts += [f"<h3>{html.escape(title)}</h3>{table(rows)}" for title, rows in matrices.items()]
    if constant:
        parts += ["<h2>Constant over training (not drawn)</h2>", table(_constant_rows(constant))]
    def img(name: str) -> str:
        return f"<img alt='{html.escape(name[:-4])}' src='data:image/png;base64,{images[name]}'>"

    parts.append("<h2>Per-epoch curves</h2>")
    parts += [img(name) for name in figures["epochs"]]
    if why:
        parts.append(f"<p>{html.escape(why)}</p>")
    if figures["curves"]:
        parts += [f"<h2>{CURVES[3:]}</h2>", *(img(name) for name in figures["curves"])]
    for name, text in workflows.items():
        parts.append(f"<h2>Workflow: {html.escape(name)}</h2><pre>{html.escape(text)}</pre>")
    return "\n".join(parts) + "\n</body></html>\n"
