"""A balancing method and a fusion from a package: one file each, registered through their entry points,
validated, listed and trained like the built-in ones, with nothing in mmflow edited."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import REPO

METHOD = '''
"""Label smoothing on the fused logits."""
from typing import Literal

from pydantic import Field

from mmflow.components.balance.base import BalanceMethod, method
from mmflow.engine import Params


class LabelSmoothingParams(Params):
    """Cross-entropy with label smoothing on the fused logits."""

    name: Literal["label_smoothing"] = "label_smoothing"
    smoothing: float = Field(0.1, ge=0, lt=1, description="share of the target mass spread over the classes")


@method("label_smoothing", LabelSmoothingParams)
class LabelSmoothing(BalanceMethod):
    def loss(self, out, labels):
        import torch.nn.functional as F

        loss = F.cross_entropy(out.logits, labels, label_smoothing=self.params.smoothing)
        return loss, {"smoothing": loss.new_tensor(self.params.smoothing)}
'''

FUSION = '''
"""Max fusion: the element-wise maximum of each modality's linear logits."""
from typing import Literal

import torch
from torch import nn

from mmflow.components.models.fusions import fusion, late
from mmflow.engine import Params


class MaxParams(Params):
    """max_m fc_m(z_m), element-wise."""

    name: Literal["max"] = "max"


class MaxFusion(nn.Module):
    def __init__(self, dims, num_classes):
        super().__init__()
        self.fcs = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})

    def forward(self, embeddings):
        return torch.stack([fc(embeddings[m]) for m, fc in self.fcs.items()]).amax(0), {}


@fusion("max", MaxParams, splits=False)
def build(params, encoders, num_classes, heads):
    return late(MaxFusion({m: e.out_dim for m, e in encoders.items()}, num_classes), encoders, heads)
'''


@pytest.fixture
def plugin_env(tmp_path):
    """Both plugins laid out as installed distributions (what `pip install` leaves behind)."""
    site = tmp_path / "site"
    for module, source, group, name in (("smooth_method", METHOD, "mmflow.methods", "label_smoothing"),
                                        ("max_fusion", FUSION, "mmflow.fusions", "max")):
        dist = site / f"{module}-0.1.dist-info"
        dist.mkdir(parents=True)
        (site / f"{module}.py").write_text(source)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def mmflow(*args, env, cwd):
    return subprocess.run([sys.executable, "-m", "mmflow.engine.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=240)


QUICK = ("--set", "executor=inline", "--set", "steps.data.params.train_size=300", "--set",
         "steps.data.params.test_size=100", "--set", "steps.train.params.epochs=2")
CHOSEN = ("--set", "steps.train.params.method={name: label_smoothing, smoothing: 0.2}",
          "--set", "steps.train.params.fusion=max")


def test_a_plugin_method_and_fusion_validate_list_and_train(plugin_env, tmp_path):
    workflow = REPO / "workflows" / "quickstart.yaml"
    listed = mmflow("components", "--table", "method", env=plugin_env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "| `label_smoothing` | Cross-entropy with label smoothing on the fused logits. |" in listed.stdout
    fusions = mmflow("components", "--table", "fusion", env=plugin_env, cwd=tmp_path).stdout
    assert "| `max` | max_m fc_m(z_m), element-wise. | splits: false, stage: \"late\"" in fusions
    bad = mmflow("validate", workflow, *CHOSEN, "--set", "steps.train.params.method.smoothing=1.5",
                 env=plugin_env, cwd=tmp_path)
    assert bad.returncode == 2 and "steps.train.params.method.smoothing: Input should be less than 1" in bad.stderr
    done = mmflow("run", workflow, *QUICK, *CHOSEN, "--run-dir", tmp_path / "run", env=plugin_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "run" / "train" / "metrics.json").read_text())
    assert metrics["label_smoothing_smoothing"] == pytest.approx(0.2) and metrics["epochs"] == 2
    architecture = json.loads((tmp_path / "run" / "train" / "outputs" / "model" / "architecture.json").read_text())
    assert architecture["fusion"] == {"name": "max"}


def test_without_the_plugins_their_names_are_unknown(tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}
    done = mmflow("validate", REPO / "workflows" / "quickstart.yaml", *CHOSEN, env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "steps.train.params.method.name: unknown method 'label_smoothing'" in done.stderr
    assert "steps.train.params.fusion: unknown fusion 'max'" in done.stderr
