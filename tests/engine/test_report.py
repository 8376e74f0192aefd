"""`mmflow report` draws one figure per per-epoch metric and a markdown summary."""

from __future__ import annotations

import json


def test_report_draws_each_history_metric(cli, tmp_path):
    run = tmp_path / "run"
    for step, scale in (("train_a", 1.0), ("train_b", 2.0)):
        (run / step).mkdir(parents=True)
        history = [{"epoch": e, "loss": scale / (e + 1), "rho": 1.5} for e in range(3)]
        (run / step / "metrics.json").write_text(json.dumps({"loss": scale / 3, "history": history}))
    (run / "run.json").write_text(json.dumps({"order": ["train_a", "train_b"]}))
    status, out, err = cli("report", run)
    assert status == 0, err
    files = sorted(p.name for p in (run / "report").iterdir())
    assert files == ["loss.png", "report.md", "rho.png"]
    assert (run / "report" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    summary = (run / "report" / "report.md").read_text()
    assert "## train_b" in summary and "| loss | 0.6667 |" in summary and "![rho](rho.png)" in summary


def test_report_needs_a_run_directory(cli, tmp_path):
    status, _, err = cli("report", tmp_path)
    assert status == 2 and "not a run directory" in err


def test_metric_families_share_one_figure(cli, tmp_path):
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    history = [{"epoch": e, "weight/a": 0.2, "weight/b": 0.8, "loss": 1.0} for e in range(2)]
    (run / "train" / "metrics.json").write_text(json.dumps({"history": history}))
    (run / "run.json").write_text(json.dumps({"order": ["train"]}))
    status, out, err = cli("report", run)
    assert status == 0, err
    assert sorted(p.name for p in (run / "report").iterdir()) == ["loss.png", "report.md", "weight.png"]
