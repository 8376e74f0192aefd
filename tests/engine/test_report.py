"""`mmflow report`: a figure per metric family with every modality on one axis, one colour per step in every
figure, epochs from 1, labelled axes, constant series in a table, one side-by-side results table, report.html;
checked through matplotlib's objects and the HTML."""

from __future__ import annotations

import base64
import json
import re

import pytest

from mmflow.engine.report import curve_figures, draw, figures_for, load_series


def write_run(run, steps: dict[str, dict], workflow: str = "name: wf\n") -> None:
    run.mkdir(parents=True)
    for step, metrics in steps.items():
        (run / step).mkdir()
        (run / step / "metrics.json").write_text(json.dumps(metrics))
    (run / "run.json").write_text(json.dumps({"order": list(steps)}))
    (run / "workflow.yaml").write_text(workflow)


def training(scale: float, epochs: int = 3) -> dict:
    history = [{"epoch": e, "loss": scale / (e + 1), "lr": 0.05, "padded_samples": 0, "rho": 1.0 + e,
                "head_accuracy_audio": 0.5 + 0.1 * e, "head_accuracy_visual": 0.3 + 0.05 * e,
                "grad_angle_audio": 10.0 * e, "grad_angle_visual": 20.0 * e,
                "pmr_coef_audio": 0.0, "pmr_coef_visual": 0.2 * e, "gblend_weight/audio": 0.4,
                "gblend_weight/visual": 0.6 - 0.1 * e} for e in range(epochs)]
    return {"loss": scale / epochs, "train_accuracy": 0.9, "history": history}


@pytest.fixture
def two_steps(tmp_path):
    run = tmp_path / "run"
    write_run(run, {"data": {"train_samples": 30}, "naive": training(1.0), "pmr": training(2.0),
                    "eval": {"accuracy": 0.8}}, workflow="name: wf\nsteps: {}\n")
    return run


def test_each_family_is_one_figure_with_every_modality_each_step_in_one_colour(two_steps):
    import matplotlib

    matplotlib.use("Agg")
    series, _ = load_series([two_steps])
    figures, constant = figures_for(series)
    by_title = {f.title: f for f in figures}
    assert set(by_title) == {"grad_angle", "head_accuracy", "pmr_coef", "gblend_weight", "loss", "rho"}
    assert constant == {"lr": {"naive": 0.05, "pmr": 0.05}, "padded_samples": {"naive": 0, "pmr": 0}}
    colours = {"naive": "tab:blue", "pmr": "tab:orange"}
    for figure in figures:
        ax = draw(figure, [s for s in series if s.history], colours).axes[0]
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
        for line in ax.get_lines():
            step, _, member = line.get_label().removeprefix("step ").partition(" · ")
            assert line.get_color() == colours[step]  # a step's colour, in every figure
            assert list(line.get_xdata()) == [1, 2, 3]  # epochs from 1
    head = draw(by_title["head_accuracy"], series, colours).axes[0]
    lines = {line.get_label(): line for line in head.get_lines()}
    assert set(lines) == {"step naive · audio", "step naive · visual", "step pmr · audio", "step pmr · visual"}
    assert lines["step pmr · audio"].get_linestyle() != lines["step pmr · visual"].get_linestyle()
    assert lines["step pmr · audio"].get_linestyle() == lines["step naive · audio"].get_linestyle()
    assert list(lines["step naive · visual"].get_ydata()) == pytest.approx([0.3, 0.35, 0.4])
    assert head.get_ylabel() == "head accuracy (fraction correct)"
    angle = draw(by_title["grad_angle"], series, colours).axes[0]
    assert angle.get_ylabel() == "grad angle (degrees)"
    coef = draw(by_title["pmr_coef"], series, colours).axes[0]  # audio's zero coefficient drawn beside visual's
    assert len(coef.get_lines()) == 4


def test_the_report_files_one_results_table_constant_series_and_a_self_contained_html(two_steps, cli):
    status, out, err = cli("report", two_steps)
    assert status == 0, err
    assert "wrote 6 figure(s)" in out
    folder = two_steps / "report"
    assert sorted(p.name for p in folder.glob("*.png")) == [
        "gblend_weight.png", "grad_angle.png", "head_accuracy.png", "loss.png", "pmr_coef.png", "rho.png"]
    markdown = (folder / "report.md").read_text()
    assert "| metric | data | naive | pmr | eval |" in markdown  # one table, the steps side by side
    assert "| loss |  | 0.3333 | 0.6667 |  |" in markdown and "| lr | naive: 0.05, pmr: 0.05 |" in markdown
    page = (folder / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 6 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "<th>naive</th><th>pmr</th>" in page and "src='http" not in page and "<link" not in page
    assert "<pre>name: wf\nsteps: {}\n</pre>" in page


def test_several_runs_and_a_sweep_folder_label_each_step_by_run_or_by_its_trials_values(tmp_path, cli):
    write_run(tmp_path / "a", {"train": training(1.0)})
    write_run(tmp_path / "b", {"train": training(2.0)})
    labels = [s.label for s in load_series([tmp_path / "a", tmp_path / "b"])[0]]
    assert labels == ["a/train", "b/train"]
    sweep = tmp_path / "sweep"
    write_run(sweep, {"data": {"train_samples": 30}})
    for trial, scale in (("trial_00000", 1.0), ("trial_00001", 2.0)):
        write_run(sweep / "trials" / trial, {"train": training(scale)})
    (sweep / "results.csv").write_text("trial,status,steps.train.params.lr,eval.accuracy,results\n"
                                       "trial_00001,done,0.05,0.8,4\ntrial_00000,stopped,0.3,,2\n")
    series, workflows = load_series([sweep])
    assert [s.label for s in series] == ["lr=0.3/train", "lr=0.05/train"] and len(workflows) == 2
    status, out, _ = cli("report", sweep)
    assert status == 0 and "wrote 6 figure(s)" in out


def test_runs_without_per_epoch_metrics_say_why_there_is_no_figure(tmp_path, cli):
    write_run(tmp_path / "run", {"eval": {"accuracy": 0.8}})
    status, out, _ = cli("report", tmp_path / "run")
    assert status == 0 and "wrote 0 figure(s)" in out and "no step of these runs has per-epoch metrics" in out
    status, _, err = cli("report", tmp_path)
    assert status == 2 and "not a run directory" in err


def test_matrix_metrics_get_a_table_each_in_both_files(tmp_path, cli):
    confusion = [[3, 1], [0, 4]]  # e.g. rows: true class, columns: predicted
    write_run(tmp_path / "run", {"eval": {"accuracy": 0.875, "confusion_matrix": confusion, "ragged": [[1], [1, 2]],
                                          "names": [["a", "b"]]}})
    status, _, err = cli("report", tmp_path / "run")
    assert status == 0, err
    markdown = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "## Matrices\n\n### eval: confusion_matrix\n\n| row / column | 0 | 1 |\n| --- | --- | --- |\n" \
           "| 0 | 3 | 1 |\n| 1 | 0 | 4 |\n" in markdown
    assert "ragged" not in markdown and "names" not in markdown  # not matrices of numbers
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "<h3>eval: confusion_matrix</h3><table><tr><th>row / column</th><th>0</th><th>1</th></tr>" in page


def test_curve_metrics_are_drawn_over_their_own_axis_a_family_per_figure_in_both_files(tmp_path, cli):
    import matplotlib

    matplotlib.use("Agg")

    def curves(clean: float) -> dict:
        return {f"accuracy_under_noise/{m}": {"x": "noise level", "points": [[0, clean], [0.5, clean - drop],
                                                                              [1, 0.1]]}
                for m, drop in (("audio", 0.2), ("visual", 0.4))}

    write_run(tmp_path / "run", {"eval_naive": {"accuracy": 0.8, **curves(0.8)}, "eval_pmr": {**curves(0.9),
                                 "not_a_curve": {"x": "level", "points": [[0, "a"]]}}})
    series, _ = load_series([tmp_path / "run"])
    figures = curve_figures(series)
    assert [(f.title, f.metrics, f.xlabel) for f in figures] == [
        ("accuracy_under_noise", ["accuracy_under_noise/audio", "accuracy_under_noise/visual"], "noise level")]
    ax = draw(figures[0], series, {"eval_naive": "tab:blue", "eval_pmr": "tab:orange"}).axes[0]
    assert ax.get_xlabel() == "noise level" and ax.get_ylabel() == "accuracy under noise (fraction correct)"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {f"step {s} · {m}" for s in ("eval_naive", "eval_pmr") for m in ("audio", "visual")}
    assert list(lines["step eval_pmr · visual"].get_xdata()) == [0, 0.5, 1]
    assert list(lines["step eval_pmr · visual"].get_ydata()) == pytest.approx([0.9, 0.5, 0.1])
    status, out, err = cli("report", tmp_path / "run")
    assert status == 0 and "wrote 1 figure(s)" in out, err
    markdown = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "## Curves of the final metrics\n\n![accuracy_under_noise](accuracy_under_noise.png)" in markdown
    assert "no step of these runs has per-epoch metrics" in markdown  # curves are not per-epoch
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "<h2>Curves of the final metrics</h2>\n<img alt='accuracy_under_noise' src='data:image/png;base64," in page


def test_a_step_run_for_several_seeds_is_drawn_as_its_mean_in_a_band_of_one_standard_deviation(tmp_path, cli):
    import matplotlib

    matplotlib.use("Agg")

    def noise_curve(clean: float, half: float) -> dict:
        return {"accuracy_under_noise/audio": {"x": "noise level", "points": [[0, clean], [0.5, half], [1, 0.1]]}}

    write_run(tmp_path / "run", {"train@0": training(1.0), "train@1": training(3.0),
                                 "eval@0": noise_curve(0.8, 0.6), "eval@1": noise_curve(0.6, 0.2),
                                 "eval_ref": noise_curve(0.5, 0.3)})
    series, _ = load_series([tmp_path / "run"])
    colours = {"train": "tab:green", "eval": "tab:blue", "eval_ref": "tab:orange"}
    ax = draw(curve_figures(series)[0], series, colours).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"step eval · audio (mean ± std of 2 seeds)", "step eval_ref · audio"}
    mean = lines["step eval · audio (mean ± std of 2 seeds)"]
    assert list(mean.get_xdata()) == [0, 0.5, 1] and list(mean.get_ydata()) == pytest.approx([0.7, 0.4, 0.1])
    assert mean.get_color() == "tab:blue"
    (band,) = ax.collections  # the seeds' spread: sample std of (0.8, 0.6) at level 0, (0.6, 0.2) at 0.5, none at 1
    corners = band.get_paths()[0].vertices
    for x, half_width in ((0, 0.02 ** 0.5), (0.5, 0.08 ** 0.5), (1, 0)):
        ys = corners[corners[:, 0] == x][:, 1]
        assert (ys.min(), ys.max()) == pytest.approx((mean.get_ydata()[[0, 0.5, 1].index(x)] - half_width,
                                                      mean.get_ydata()[[0, 0.5, 1].index(x)] + half_width))
    figures, _ = figures_for(series)
    loss = draw(next(f for f in figures if f.title == "loss"), series, colours).axes[0]
    (line,) = loss.get_lines()  # per epoch too: the mean of losses 1/(e+1) and 3/(e+1)
    assert list(line.get_ydata()) == pytest.approx([2.0, 1.0, 2 / 3]) and line.get_color() == "tab:green"
    status, out, err = cli("report", tmp_path / "run")
    assert status == 0 and "wrote" in out, err
