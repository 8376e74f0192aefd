"""The command line stays light: checking a workflow imports neither torch nor Ray."""

from __future__ import annotations

import subprocess
import sys

from ..conftest import REPO


def test_validate_graph_schema_and_components_import_neither_torch_nor_ray():
    code = ("import sys; from mmflow.engine.cli import main\n"
            f"for args in (['validate', {str(REPO / 'workflows' / 'quickstart.yaml')!r}], ['schema'], ['components'],\n"
            f"             ['graph', {str(REPO / 'workflows' / 'quickstart.yaml')!r}], ['--version']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'torchaudio') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
