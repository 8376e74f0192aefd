"""The shipped real-data workflows, end to end on tiny trees in each dataset's layout (tiny sizes)."""

from __future__ import annotations

import json

import pytest

from ...conftest import REPO
from .media_trees import ave_tree, cremad_tree, kinetics_tree

TINY_MEDIA = [
    "executor=inline",
    "steps.shard.params.samples_per_shard=8",
    "steps.shard.params.audio={preset: null, sample_rate: 8000, duration: 1.0, features: stft, n_fft: 128, hop: 64}",
    "steps.shard.params.visual.size=24",
    "steps.shard.params.visual.store_size=28",
]


def run_shipped(cli, tmp_path, workflow, root, trained, extra=()):
    sets = [*TINY_MEDIA, f"steps.data.params.root={root}", *extra]
    for step in trained:
        sets += [f"steps.{step}.params.epochs=2", f"steps.{step}.params.batch_size=8"]
    args = [arg for item in sets for arg in ("--set", item)]
    status, out, err = cli("run", REPO / "workflows" / workflow, "--run-dir", tmp_path / "run", *args)
    assert status == 0, out + err
    return tmp_path / "run"


def test_cremad_pmr_workflow_runs_on_a_cremad_tree(cli, tmp_path):
    run = run_shipped(cli, tmp_path, "cremad_pmr.yaml", cremad_tree(tmp_path / "CREMA-D"), ["naive", "pmr"])
    history = json.loads((run / "pmr" / "metrics.json").read_text())["history"]
    assert len(history) == 2 and "pmr_rho" in history[0]
    table = (run / "compare" / "outputs" / "table").read_text()
    assert "eval_naive" in table and "eval_pmr" in table
    evaluation = json.loads((run / "eval_pmr" / "metrics.json").read_text())
    assert evaluation["test_samples"] == 6 and 0 <= evaluation["accuracy"] <= 1


@pytest.mark.parametrize("workflow, tree, trained, extra", [
    ("ave_pmr.yaml", ave_tree, ["naive", "pmr"], ["steps.shard.params.visual.num_frames=2"]),
    ("ks_gblend.yaml", kinetics_tree, ["naive", "gblend"],
     ["steps.gblend.params.method={name: gblend, mode: online, warmup_super_epoch: 1, super_epoch: 1}"]),
])
def test_ave_and_kinetics_workflows_run_on_their_trees(cli, tmp_path, workflow, tree, trained, extra):
    run = run_shipped(cli, tmp_path, workflow, tree(tmp_path / "root"), trained, extra)
    last = trained[-1]
    assert json.loads((run / last / "metrics.json").read_text())["epochs"] == 2
    assert json.loads((run / f"eval_{last}" / "metrics.json").read_text())["test_samples"] > 0


@pytest.mark.parametrize("workflow, tree", [("cremad_cpu.yaml", cremad_tree), ("ave_cpu.yaml", ave_tree),
                                            ("ks_cpu.yaml", kinetics_tree)])
def test_cpu_companions_run_all_four_methods_on_the_same_shards(cli, tmp_path, workflow, tree):
    methods = ["naive", "pmr", "ogm_ge", "gblend"]
    run = run_shipped(cli, tmp_path, workflow, tree(tmp_path / "root"), methods, [
        "steps.shard.params.visual.num_frames=2",
        "steps.gblend.params.method={name: gblend, mode: online, warmup_super_epoch: 1, super_epoch: 1, "
        "refit_fused_head: true}"])
    for method in methods:
        assert json.loads((run / method / "metrics.json").read_text())["epochs"] == 2
        assert json.loads((run / f"eval_{method}" / "metrics.json").read_text())["test_samples"] > 0
    table = (run / "compare" / "outputs" / "table").read_text()
    assert all(f"| eval_{method} |" in table for method in methods)


def test_the_av_balance_benchmark_runs_every_method_on_a_cremad_tree(cli, tmp_path):
    """workflows/balance_benchmark_av.yaml end to end on a tiny CREMA-D tree: every method, one table."""
    import yaml

    workflow = REPO / "workflows" / "balance_benchmark_av.yaml"
    trainings = [name for name, step in yaml.safe_load(workflow.read_text())["steps"].items()
                 if step["component"] == "train.classifier"]
    assert len(trainings) >= 16
    run = run_shipped(cli, tmp_path, "balance_benchmark_av.yaml", cremad_tree(tmp_path / "CREMA-D"), trainings,
                      ["steps.gblend.params.method={name: gblend, mode: online, warmup_super_epoch: 1, "
                       "super_epoch: 1, refit_fused_head: true}", "seeds=[0]"])
    table = (run / "compare" / "outputs" / "table").read_text()
    for step in trainings:  # the workflow's seeds narrowed to one: a row per method for seed 0
        assert f"| eval_{step}@0 |" in table, table
    assert "accuracy_visual_prototype" in table and "| contribution_audio | contribution_visual |" in table
    assert "| effective_robustness_audio | effective_robustness_visual |" in table
    assert "| training_samples_per_s | training_peak_memory_mb |" in table


def test_a_dataset_root_relative_to_where_mmflow_runs_reaches_the_shard_step(cli, tmp_path, monkeypatch):
    """As the benchmark workflows' headers say (`--set steps.data.params.root=benchmarks/...`): the shard step
    looked for the media under the data step's output folder."""
    cremad_tree(tmp_path / "CREMA-D")
    monkeypatch.chdir(tmp_path)
    sets = [*TINY_MEDIA, "steps.data.params.root=CREMA-D"]
    status, out, err = cli("run", REPO / "workflows" / "cremad_pmr.yaml", "--run-dir", tmp_path / "run", "--to",
                           "shard", *(arg for item in sets for arg in ("--set", item)))
    assert status == 0, out + err
    assert json.loads((tmp_path / "run" / "shard" / "metrics.json").read_text())["train_samples"] > 0
