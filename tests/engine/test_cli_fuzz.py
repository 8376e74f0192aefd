"""Fuzzing `mmflow validate` with mutated shipped workflows.

1. Text mutations (any bytes): exit 0 or 2, never a traceback, every line names the file.
2. Known faults planted in the shipped workflows, one to four at a time (1,200 cases): exit 2, every
   fault reported in the one run at its path, each line once. Since the unmutated files are valid,
   "every planted fault is reported" is "fixing the reported problems never reveals new ones".
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmflow.engine.cli import main
from mmflow.engine.yaml_source import dotted

from ..conftest import REPO

WORKFLOWS = sorted((REPO / "workflows").glob("*.yaml"))
TOKENS = ["${steps.data.outputs.dataset}", "${steps.x.outputs.y}", "component: data.shard", "params:", "- ", ": ",
          "  ", "\t", "[", "{", "}", "'", '"', "&a", "*a", "!!python/object:os.system", "null", "-1", "1e9",
          "steps:", "inputs:", "name:", "~", "\x00", "é", "#", "&b [*a, *a, *a]", ".inf", "1e309", "true",
          "9" * 5000, "[" * 200]


def validate(text: str) -> tuple[int, str, Path]:
    """Run `mmflow validate` on `text` in-process: exit status, stderr and the file's path."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wf.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["validate", str(path)])  # an unexpected exception fails the test
        assert time.perf_counter() - started < 2, "validation took over 2 s"
    assert "Traceback" not in out.getvalue() + err.getvalue()
    return status, err.getvalue(), path


def mutate_lines(data: st.DataObject) -> str:
    lines = data.draw(st.sampled_from(WORKFLOWS)).read_text().splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["delete", "duplicate", "insert", "replace_char", "swap"]))
        i = data.draw(st.integers(0, len(lines) - 1))
        if kind == "delete" and len(lines) > 1:
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "insert":
            lines.insert(i, data.draw(st.sampled_from(TOKENS)) + data.draw(st.text(max_size=8)) + "\n")
        elif kind == "replace_char" and lines[i].strip():
            j = data.draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:j] + data.draw(st.sampled_from(TOKENS)) + lines[i][j + 1:]
        elif kind == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_text_exits_0_or_2_without_traceback(data):
    status, err, path = validate(mutate_lines(data))
    assert status in (0, 2)
    if status == 2:
        assert all(line.startswith(str(path)) for line in err.strip().splitlines()), err


# -- planted faults -------------------------------------------------------------------------------

@dataclass
class Fault:
    """A change that makes a workflow invalid, and where the report must point."""

    kind: str
    at: tuple  # the path the report names (or a path below it)
    owner: tuple  # the part of the file it makes unreadable for other checks: one fault per owner
    says: str = ""  # for a missing key, the report is at the mapping and names the key


CHOICE_KEYS = {"executor", "optimizer", "mode", "coefficient", "fusion"}
NOT_A_VALUE = {"zzz": {}}  # no number, string or list field takes this mapping


def nodes(data: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    found = [(path, data)]
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        found += nodes(value, path + (key,))
    return found


def owner_of(path: tuple) -> tuple:
    """Faults in one step, or in one top-level section, mask each other (a step without a component has no
    params to check): plant at most one per owner. A step's broken component also hides the sweep's checks
    of its params, so it is marked."""
    if path[:1] == ("steps",):
        return path[:2] + (("component",) if path[2:3] == ("component",) else ())
    return path[:1]


def candidate_faults(data: dict) -> list[tuple[Fault, Any]]:
    """Every fault this workflow can take, as (fault, how to apply it)."""
    found: list[tuple[Fault, Any]] = [(Fault("missing name", (), ("name",), "'name'"), ("delete", ("name",)))]
    for path, value in nodes(data):
        if isinstance(value, dict):
            found.append((Fault("unknown key", path + ("zzz_unknown",), owner_of(path + ("zzz_unknown",))),
                          ("set", path + ("zzz_unknown",), copy.deepcopy(NOT_A_VALUE))))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for bad in (float("inf"), 10**30, True):
                found.append((Fault(f"number -> {bad!r}", path, owner_of(path)), ("set", path, bad)))
        swept_value = path[:2] == ("sweep", "parameters") and len(path) > 4  # grid items: Any until tried
        if isinstance(value, (str, int, float)) and not swept_value:
            found.append((Fault("scalar -> mapping", path, owner_of(path)), ("set", path, copy.deepcopy(NOT_A_VALUE))))
        if isinstance(value, str) and path[-1] in CHOICE_KEYS:
            found.append((Fault("not an option", path, owner_of(path)), ("set", path, "zzz_no_such_option")))
        if len(path) == 3 and path[0] == "steps" and path[2] == "component":
            found.append((Fault("unknown component", path, owner_of(path)), ("set", path, "zzz.unknown")))
            found.append((Fault("missing component", path[:2], owner_of(path), "'component'"), ("delete", path)))
        if isinstance(value, str) and value.startswith("${steps."):
            found.append((Fault("unknown step", path, owner_of(path)), ("set", path, "${steps.zzz.outputs.train}")))
    return found


def apply(data: dict, action: tuple) -> None:
    op, path, *value = action
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if op == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value[0]


def reported(fault: Fault, lines: list[str], file: str) -> bool:
    at = dotted(fault.at)
    for line in lines:
        location, _, rest = line.removeprefix(file).partition(": ")
        if fault.says:
            if (rest.startswith(f"{at}: ") if at else True) and f"missing required field {fault.says}" in rest:
                return True
        elif rest.startswith((f"{at}: ", f"{at}.", f"{at}[")):
            return True
    return False


def plant(rng: random.Random, original: dict) -> tuple[dict, list[Fault]]:
    """One to four faults with different owners; a step whose component is broken excludes the sweep."""
    data = copy.deepcopy(original)
    faults: list[Fault] = []
    wanted = rng.randint(1, 4)
    for fault, action in rng.sample(candidate_faults(original), 40):
        owners = {f.owner[:2] for f in faults}
        broken_component = any(f.owner[2:] for f in faults + [fault])
        sweep = ("sweep",) in owners | {fault.owner[:2]}
        if fault.owner[:2] in owners or (broken_component and sweep):
            continue
        apply(data, action)
        faults.append(fault)
        if len(faults) == wanted:
            break
    return data, faults


def shipped(workflow: Path) -> dict:
    """A shipped workflow, its real datasets' roots set (they are the user's to give)."""
    data = yaml.safe_load(workflow.read_text())
    for path, value in nodes(data):
        if path[-1:] == ("root",) and value is None:
            apply(data, ("set", path, "/datasets/" + path[1]))
    return data


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_the_shipped_workflow_is_valid(workflow):
    status, err, _ = validate(yaml.safe_dump(shipped(workflow), sort_keys=False))
    assert status == 0, err


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.stem)
def test_every_planted_fault_is_reported_once_in_one_pass(workflow):
    original = shipped(workflow)
    rng = random.Random(workflow.stem)
    cases = -(-1200 // len(WORKFLOWS))
    for case in range(cases):
        data, faults = plant(rng, original)
        text = yaml.safe_dump(data, sort_keys=False)
        status, err, path = validate(text)
        lines = err.strip().splitlines()
        context = f"case {case}: {[(f.kind, dotted(f.at)) for f in faults]}\n{err}"
        assert status == 2, "an invalid workflow was accepted: " + context
        assert all(line.startswith(str(path)) for line in lines), context
        assert len(lines) == len(set(lines)), "a problem was reported twice: " + context
        missing = [f for f in faults if not reported(f, lines, str(path))]
        assert not missing, f"not reported: {[(f.kind, dotted(f.at)) for f in missing]}; " + context
