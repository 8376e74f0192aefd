"""Property: whatever a workflow file contains, `mmflow validate` exits 0 or 2 and never shows a traceback."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmflow.engine.cli import main

from ..conftest import REPO

BASE = (REPO / "workflows" / "quickstart.yaml").read_text()
LINES = BASE.splitlines(keepends=True)
TOKENS = ["${steps.data.outputs.dataset}", "${steps.x.outputs.y}", "component: data.shard", "params:", "- ", ": ",
          "  ", "\t", "[", "{", "}", "'", '"', "&a", "*a", "!!python/object:os.system", "null", "-1", "1e9",
          "steps:", "inputs:", "name:", "~", "\x00", "é", "#"]


def mutate(data: st.DataObject) -> str:
    lines = list(LINES)
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
def test_mutated_workflows_exit_0_or_2_without_traceback(data):
    text = mutate(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wf.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["validate", str(path)])  # an unexpected exception fails the test
    assert status in (0, 2)
    assert "Traceback" not in out.getvalue() + err.getvalue()
    if status == 2:
        assert all(line.startswith(str(path)) for line in err.getvalue().strip().splitlines()), err.getvalue()
