"""`report.compare`: one table of the same metrics across several evaluation steps."""

from __future__ import annotations

import fnmatch
import json

from pydantic import Field

from mmflow.engine import Many, Params, StepContext, UsageError, base_name, component, over_seeds

NOISE_CURVE = "accuracy_under_noise/"  # eval.classifier's curves, one per modality


class CompareParams(Params):
    """Which metrics to tabulate."""

    metrics: list[str] = Field(default_factory=lambda: ["accuracy"],
                               description="metric names or glob patterns, e.g. accuracy_*_head")
    robustness_reference: str | None = Field(
        None, description="the step among the results whose noise curves (accuracy_under_noise/<m>) are the "
        "reference of MultiBench's effective robustness (its late fusion; e.g. the naive model's evaluation): every "
        "step gains effective_robustness_<m> (tabulate it with a pattern in metrics); over seeds, against the "
        "reference's run of the same seed")


@component("report.compare", params=CompareParams, inputs={"results": Many("metrics")},
           outputs={"table": "markdown"}, headline=("*.accuracy",), seeds="together")
def compare(ctx: StepContext, params: CompareParams) -> dict:
    """A markdown table with one row per upstream evaluation step and one column per metric; over the workflow's
    `seeds:`, each step's mean ± std (sample standard deviation) first, then a row per seed (its metrics: the mean
    and `<metric>_std`)."""
    rows = {step: json.loads(path.read_text()) for step, path in zip(ctx.sources["results"], ctx.inputs["results"], strict=True)}
    if params.robustness_reference is not None:
        add_effective_robustness(rows, params.robustness_reference)
    columns: list[str] = []
    for wanted in params.metrics:
        for row in rows.values():
            for key in row:
                if fnmatch.fnmatchcase(key, wanted) and key not in columns:
                    columns.append(key)
    lines = ["| step | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    metrics: dict[str, float] = {}
    if any(base_name(step) != step for step in rows):  # steps run once per seed
        for step, stats in over_seeds(rows).items():
            seeds = max(stats[c][2] for c in columns if c in stats) if any(c in stats for c in columns) else 0
            cells = [f"{stats[c][0]:.4f} ± {stats[c][1]:.4f}" if c in stats else "" for c in columns]
            lines.append(f"| {step} (mean ± std, {seeds} seeds) | " + " | ".join(cells) + " |")
            for c in columns:
                if c in stats:
                    metrics[f"{step}.{c}"], metrics[f"{step}.{c}_std"] = stats[c][0], stats[c][1]
    for step, row in rows.items():
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
        if base_name(step) == step:  # a step run per seed has its own metrics; here its mean and std
            metrics.update({f"{step}.{c}": row[c] for c in columns if c in row})
    table = "\n".join(lines) + "\n"
    ctx.output("table").write_text(table)
    for line in lines:
        ctx.log(line)
    return metrics


def add_effective_robustness(rows: dict[str, dict], reference: str) -> None:
    """`effective_robustness_<m>` in every row with a noise curve on <m> taken at the reference's levels."""
    from ..tasks.noise_robustness import effective_robustness

    if reference not in {base_name(step) for step in rows}:
        raise UsageError(f"report.compare: robustness_reference {reference!r} is not one of its results' steps "
                         f"({', '.join(dict.fromkeys(base_name(step) for step in rows))})")
    for step, row in rows.items():
        seed = step[len(base_name(step)):]  # '@1' for a step run once per seed
        curves = rows.get(reference + seed, rows.get(reference, {}))
        for key, curve in list(row.items()):
            if key.startswith(NOISE_CURVE) and key in curves:
                levels, accuracies = zip(*curve["points"])
                reference_levels, reference_accuracies = zip(*curves[key]["points"])
                if levels == reference_levels:
                    row[f"effective_robustness_{key[len(NOISE_CURVE):]}"] = effective_robustness(
                        list(accuracies), list(reference_accuracies))
