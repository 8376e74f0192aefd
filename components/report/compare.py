"""`report.compare`: one table of the same metrics across several evaluation steps."""

from __future__ import annotations

import fnmatch
import json

from pydantic import Field

from mmflow.engine import Many, Params, StepContext, component


class CompareParams(Params):
    """Which metrics to tabulate."""

    metrics: list[str] = Field(default_factory=lambda: ["accuracy"],
                               description="metric names or glob patterns, e.g. accuracy_*_head")


@component("report.compare", params=CompareParams, inputs={"results": Many("metrics")},
           outputs={"table": "markdown"}, headline=("*.accuracy",))
def compare(ctx: StepContext, params: CompareParams) -> dict:
    """A markdown table with one row per upstream evaluation step and one column per metric."""
    rows = {step: json.loads(path.read_text()) for step, path in zip(ctx.sources["results"], ctx.inputs["results"], strict=True)}
    columns: list[str] = []
    for wanted in params.metrics:
        for row in rows.values():
            for key in row:
                if fnmatch.fnmatchcase(key, wanted) and key not in columns:
                    columns.append(key)
    lines = ["| step | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for step, row in rows.items():
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    ctx.output("table").write_text(table)
    for line in lines:
        ctx.log(line)
    return {f"{step}.{c}": row[c] for step, row in rows.items() for c in columns if c in row}
