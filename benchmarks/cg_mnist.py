"""CG-MNIST accuracy of uni-modal gray, naive concat, OGM-GE and PMR over several seeds.

Runs workflows/cg_mnist_pmr.yaml per seed (inline executor unless --ray) and prints the test
accuracy of each method as mean and spread, plus the share of the gap between naive and
uni-gray that PMR recovers (the paper: (77.2 - 58.4) / (99.3 - 58.4) = 46%). Per seed it runs
every grid point of the workflow's `sweep:` (PMR's alpha), keeps the one the sweep's metric
ranks first (PMR on the validation split) and reports that run's test accuracies, as
`mmflow sweep` then `mmflow run best.yaml` would; `--no-select` runs the workflow's own values.

    python benchmarks/cg_mnist.py [--seeds 0 1 2] [--no-select] [--set steps.data.params.val_size=0 ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mmflow.engine.sweep import override
from seeded_runs import mean_std, metrics_of, run_workflow

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "cg_mnist_pmr.yaml"
METHODS = {"uni_gray": "eval_uni_gray", "naive": "eval_naive", "ogm_ge": "eval_ogm_ge", "pmr": "eval_pmr"}


def grid_points(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the sweep's grid values (the only space a fixed-budget benchmark can enumerate)."""
    paths = list(sweep["parameters"])
    if any(set(space) != {"grid"} for space in sweep["parameters"].values()):
        raise SystemExit("benchmarks/cg_mnist.py enumerates grid spaces only; use --no-select or mmflow sweep")
    return [dict(zip(paths, values)) for values in itertools.product(*(sweep["parameters"][p]["grid"] for p in paths))]


def select(seed: int, sweep: dict[str, Any], overrides: list[str], ray: bool, runs_root: Path) -> tuple[Path, dict]:
    """Run each grid point for this seed; the run the sweep's metric ranks first, and what was chosen on what."""
    step, metric = sweep["metric"].split(".", 1)
    scored = []
    for index, point in enumerate(grid_points(sweep)):
        point_overrides = [*overrides, *(override(p, v) for p, v in point.items())]
        run_dir = run_workflow(WORKFLOW, seed, point_overrides, ray, runs_root, str(index))
        scored.append((metrics_of(run_dir, step)[metric], point, run_dir))
    best = (max if sweep.get("mode", "max") == "max" else min)(scored, key=lambda row: row[0])
    return best[2], {"chosen": best[1], sweep["metric"]: {str(list(p.values())): v for v, p, _ in scored}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="workflow override")
    parser.add_argument("--ray", action="store_true", help="train on Ray Train workers instead of inline")
    parser.add_argument("--no-select", action="store_true", help="run the workflow's own values, not its sweep")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "cg_mnist.json")
    args = parser.parse_args()

    sweep = None if args.no_select else yaml.safe_load(WORKFLOW.read_text()).get("sweep")
    per_seed, selection = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            if sweep:
                run_dir, selection[seed] = select(seed, sweep, args.overrides, args.ray, Path(tmp))
            else:
                run_dir = run_workflow(WORKFLOW, seed, args.overrides, args.ray, Path(tmp), "0")
            per_seed[seed] = {method: metrics_of(run_dir, step) for method, step in METHODS.items()}
    table = mean_std(per_seed, ("accuracy", "accuracy_gray_head", "accuracy_color_head", "accuracy_gray_prototype",
                                "accuracy_color_prototype"))
    gaps = [(per_seed[s]["pmr"]["accuracy"] - per_seed[s]["naive"]["accuracy"])
            / (per_seed[s]["uni_gray"]["accuracy"] - per_seed[s]["naive"]["accuracy"]) for s in args.seeds]
    results = {"seeds": args.seeds, "overrides": args.overrides, "methods": table, "per_seed": per_seed,
               "selection": selection, "pmr_gap_recovered": statistics.mean(gaps), "pmr_gap_recovered_per_seed": gaps}
    for seed, chosen in selection.items():
        print(f"seed {seed}: chose {chosen['chosen']} by {sweep['metric']} {chosen[sweep['metric']]}")
    print(f"\nCG-MNIST test accuracy (%), {len(args.seeds)} seeds, mean ± std")
    for method, row in table.items():
        print(f"  {method:9s} {100 * row['accuracy']:5.1f} ± {100 * row['accuracy_std']:.1f}")
    print(f"  PMR recovers {100 * results['pmr_gap_recovered']:.0f}% of the naive -> uni-gray gap "
          f"(paper: 46%; per seed: {', '.join(f'{100 * g:.0f}%' for g in gaps)})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
