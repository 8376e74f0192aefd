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
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "benchmarks" / "results" / "mutation"
MUTATED = ["components/balance", "components/models/fusion.py", "components/models/intermediate.py",
           "components/tasks", "engine/runner.py"]
TESTS = ["tests/components/balance", "tests/components/models", "tests/components/tasks", "tests/engine/test_runner.py",
         "tests/engine/test_storage.py", "tests/engine/test_sweep.py"]
TARGETS = {"components/balance": 0.90, "all": 0.80}
KILLED, TIMEOUT, UNTESTED = {1, 3}, {36, 24, -24, 152, 255}, {5, 33}  # mutmut's exit codes; a timeout counts as killed
CONFIG = f"""
[tool.mutmut]
source_paths = {json.dumps(["mmflow/" + p for p in MUTATED])}
pytest_add_cli_args_test_selection = {json.dumps(TESTS)}
pytest_add_cli_args = ["-m", "not ray", "-k", "not s3", "-p", "no:cacheprovider", "-q"]  # moto keeps its buckets in-process
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


def scores() -> tuple[dict[str, Counter], dict[str, str]]:
    """Per mutated module: killed / timeout / survived / untested / device-only counts; the diff of every
    mutant the tests did not kill."""
    counts: dict[str, Counter] = {}
    missed: dict[str, tuple[str, str]] = {}  # mutant -> (module, verdict)
    for meta in sorted((STAGE / "mutants" / "mmflow").rglob("*.py.meta")):
        module = str(meta.relative_to(STAGE / "mutants" / "mmflow"))[: -len(".meta")]
        tally = counts.setdefault(module, Counter())
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if code is None:  # the run was stopped before this one
                continue
            verdict = ("killed" if code in KILLED else "timeout" if code in TIMEOUT else "untested" if code in UNTESTED
                       else "survived")
            tally[verdict] += 1
            if verdict in ("survived", "untested"):
                missed[name] = (module, verdict)
    diffs = _diffs(list(missed))
    for name, (module, verdict) in missed.items():
        if verdict == "survived" and _device_only(diffs[name]):
            counts[module]["survived"] -= 1
            counts[module]["device-only"] += 1
    return counts, diffs


def _diffs(names: list[str]) -> dict[str, str]:
    """mutmut's diff of each mutant (read in one process: `mutmut show` takes one per call)."""
    code = ("import json, sys; from mutmut.mutation.diff_apply import get_diff_for_mutant; "
            "print(json.dumps({n: get_diff_for_mutant(n) for n in json.load(sys.stdin)}))")
    found = subprocess.run([sys.executable, "-c", code], cwd=STAGE, input=json.dumps(names), capture_output=True,
                           text=True, check=True)
    return json.loads(found.stdout)


def _device_only(diff: str) -> bool:
    """Whether a mutant only drops where a tensor goes (`x.to(device)` -> `x.to(None)`, `device=...` removed).
    On a machine without a GPU every tensor is on the CPU anyway: no test here can tell such a mutant apart."""
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    if len(removed) != 1 or len(added) != 1:
        return False
    before, after = (re.findall(r"[\w.]+|[^\w\s]", line) for line in (removed[0], added[0]))
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    changed = [before[i1:i2] for op, i1, i2, _, _ in matcher.get_opcodes() if op in ("replace", "delete")]
    return bool(changed) and all(any("device" in token for token in chunk) and
                                 all("device" in token or token in ("=", ",") for token in chunk) for chunk in changed)


def report(counts: dict[str, Counter]) -> bool:
    """Print the score table; whether every target is met. Score: killed (timeouts included) over the mutants
    a test on this machine can tell apart (device-only ones left out)."""
    def share(tally: Counter) -> float:
        return (tally["killed"] + tally["timeout"]) / max(sum(tally.values()) - tally["device-only"], 1)

    def row(name: str, tally: Counter) -> str:
        return (f"{name:42s} {sum(tally.values()):8d} {tally['killed']:7d} {tally['timeout']:8d} {tally['survived']:9d} "
                f"{tally['untested']:9d} {tally['device-only']:7d} {share(tally):6.1%}")

    print(f"{'module':42s} {'mutants':>8s} {'killed':>7s} {'timeout':>8s} {'survived':>9s} {'untested':>9s} "
          f"{'device':>7s} {'score':>6s}")
    for module, tally in counts.items():
        if tally:
            print(row(module, tally))
    groups = {"components/balance": sum((t for m, t in counts.items() if m.startswith("components/balance/")),
                                        Counter()),
              "all": sum(counts.values(), Counter())}
    met = True
    for group, tally in groups.items():
        ok = share(tally) >= TARGETS[group]
        met &= ok
        print(f"{row(group, tally)}  target {TARGETS[group]:.0%}: {'met' if ok else 'NOT met'}")
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
    # one thread per test process: mutmut forks them, and a fork of a process whose OpenMP pool is running hangs
    single = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([*mutmut, "run", "--max-children", str(args.max_children)], cwd=STAGE, check=False, env=single)
    counts, diffs = scores()
    met = report(counts)
    print(f"\n{len(diffs)} mutant(s) no test killed{' (device-only ones included)' if diffs else ''}:")
    for name, diff in diffs.items():
        print(f"  {name}")
        if args.show:
            print("    " + diff.strip().replace("\n", "\n    "))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
