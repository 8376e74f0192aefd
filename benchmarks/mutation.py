"""Mutation testing: do the tests notice when the code breaks?

Runs mutmut (https://github.com/boxed/mutmut) over the balancing methods, the fusions, the tasks and the
runner with the unit tests that exercise them, then prints, per module, how many mutants the tests
killed, and every surviving mutant (`--show` prints each one's diff). Targets: >= 90% killed in
components/balance, >= 80% over every module listed.

mutmut imports modules by their path under its copy of the project, so the script stages one where
the sources sit at their import paths (mmflow/engine, mmflow/components) next to the tests, under
benchmarks/results/mutation/ (kept between runs: mutmut re-tests only what changed).

    (mutmut is in the dev extra)
    python benchmarks/mutation.py [--max-children 2] [--show] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "benchmarks" / "results" / "mutation"
MUTATED = ["components/balance", "components/models/fusion.py", "components/models/intermediate.py",
           "components/tasks", "engine/runner.py"]
TESTS = ["tests/components/balance", "tests/components/models", "tests/components/tasks", "tests/engine/test_runner.py"]
TARGETS = {"components/balance": 0.90, "all": 0.80}
KILLED = {1, 3, 36, 24, -24, 152, 255, 37}  # failed tests, pytest errors, timeouts (mutmut's exit codes)
CONFIG = f"""
[tool.mutmut]
source_paths = {json.dumps(["mmflow/" + p for p in MUTATED])}
pytest_add_cli_args_test_selection = {json.dumps(TESTS)}
pytest_add_cli_args = ["-m", "not ray", "-p", "no:cacheprovider", "-p", "no:randomly", "-q"]
also_copy = ["mmflow", "workflows", "docs", "constraints.txt"]

[tool.pytest.ini_options]
testpaths = ["tests"]
markers = ["ray: integration tests that start a local Ray cluster (slow)"]
timeout = 600
"""


def stage() -> None:
    """The project as mutmut expects it: sources at their import paths, tests beside them."""
    STAGE.mkdir(parents=True, exist_ok=True)
    for name, source in (("mmflow/engine", "engine"), ("mmflow/components", "components"), ("tests", "tests"),
                         ("workflows", "workflows"), ("docs", "docs")):
        target = STAGE / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "constraints.txt", STAGE)
    (STAGE / "pyproject.toml").write_text(CONFIG)


def scores() -> tuple[dict[str, Counter], list[str]]:
    """Per mutated module: killed / survived / untested counts; and the surviving mutants' names."""
    counts: dict[str, Counter] = {}
    survivors = []
    for meta in sorted((STAGE / "mutants" / "mmflow").rglob("*.py.meta")):
        module = str(meta.relative_to(STAGE / "mutants" / "mmflow"))[: -len(".meta")]
        tally = counts.setdefault(module, Counter())
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            verdict = "killed" if code in KILLED else "untested" if code in (5, 33) else "survived"
            tally[verdict] += 1
            if verdict != "killed":
                survivors.append(f"{name} ({verdict})")
    return counts, survivors


def report(counts: dict[str, Counter]) -> bool:
    """Print the score table; whether every target is met."""
    def share(tally: Counter) -> float:
        return tally["killed"] / max(sum(tally.values()), 1)

    print(f"{'module':45s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'untested':>9s} {'score':>6s}")
    for module, tally in counts.items():
        print(f"{module:45s} {sum(tally.values()):8d} {tally['killed']:7d} {tally['survived']:9d} "
              f"{tally['untested']:9d} {share(tally):6.1%}")
    groups = {"components/balance": sum((t for m, t in counts.items() if m.startswith("components/balance/")),
                                        Counter()),
              "all": sum(counts.values(), Counter())}
    met = True
    for group, tally in groups.items():
        ok = share(tally) >= TARGETS[group]
        met &= ok
        print(f"{group:45s} {sum(tally.values()):8d} {tally['killed']:7d} {tally['survived']:9d} "
              f"{tally['untested']:9d} {share(tally):6.1%}  target {TARGETS[group]:.0%}: {'met' if ok else 'NOT met'}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--show", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(STAGE, ignore_errors=True)
    stage()
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run([*mutmut, "run", "--max-children", str(args.max_children)], cwd=STAGE, check=False)
    counts, survivors = scores()
    met = report(counts)
    print(f"\n{len(survivors)} surviving mutant(s):")
    for name in survivors:
        print(f"  {name}")
        if args.show:
            shown = subprocess.run([*mutmut, "show", name.split(" ")[0]], cwd=STAGE, capture_output=True, text=True)
            print("    " + shown.stdout.strip().replace("\n", "\n    "))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
