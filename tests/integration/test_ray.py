"""Ray integration: the quickstart through the CLI on 2 Ray Train workers, and the shard split on Ray."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from mmflow.engine import RunHook

from ..conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def mmflow(*args: object, cwd: Path, timeout: float = 280, **popen: object) -> subprocess.CompletedProcess:
    """`mmflow ARGS` in a fresh process, as a user runs it (its own local Ray unless told otherwise)."""
    return subprocess.run([sys.executable, "-m", "mmflow.engine.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, **popen)


def start_mmflow(*args: object, cwd: Path, **popen: object) -> subprocess.Popen:
    """`mmflow ARGS` in the background, to be interrupted."""
    return subprocess.Popen([sys.executable, "-m", "mmflow.engine.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def synthetic_steps(data: str, samples_per_shard: int) -> str:
    """The data.synthetic and data.shard steps most workflows here begin with (YAML under `steps:`)."""
    return f"""  data: {{component: data.synthetic, params: {data}}}
  shard:
    component: data.shard
    inputs: {{dataset: "${{steps.data.outputs.dataset}}"}}
    params: {{samples_per_shard: {samples_per_shard}}}
"""


@contextlib.contextmanager
def ray_node(*start_args: str, env: dict[str, str] | None = None) -> Iterator[None]:
    """A Ray node of the test's own: `ray start` in a session of its own, so that every process it leaves
    running is in its process group, which is stopped at the end: only this node, never another Ray on the
    host (`ray stop` would stop them all)."""
    import signal
    import time

    ray_cli = str(Path(sys.executable).parent / "ray")
    recorded = Path(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")  # where `ray start` notes it
    before = recorded.read_text() if recorded.exists() else None
    node = subprocess.Popen([ray_cli, "start", "--disable-usage-stats", *start_args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    try:
        _, err = node.communicate(timeout=120)  # `ray start` returns once the node is up
        assert node.returncode == 0, err[-2000:]
        yield
    finally:
        for signum in (signal.SIGTERM, signal.SIGKILL):  # the GCS may ignore SIGTERM
            deadline = time.time() + 10
            while _group_alive(node.pid) and time.time() < deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.pid, signum)
                time.sleep(0.5)
        assert not _group_alive(node.pid), "the test's Ray node did not stop"
        if recorded.exists() and recorded.read_text() != before:  # a plain ray.init() would try to join the dead node
            recorded.unlink()


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies left to a container's init do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_two_quickstarts_at_once_each_run_on_their_own_ray(tmp_path):
    import time

    first = start_mmflow("run", REPO / "workflows" / "quickstart.yaml", "--run-dir", tmp_path / "a", cwd=tmp_path)
    time.sleep(3)
    second = start_mmflow("run", REPO / "workflows" / "quickstart.yaml", "--run-dir", tmp_path / "b", cwd=tmp_path)
    for process, run in ((first, "a"), (second, "b")):
        out, err = process.communicate(timeout=280)
        assert process.returncode == 0, err[-3000:]
        assert "Traceback" not in out + err and "multiple active Ray instances" not in err, err[-3000:]
        assert json.loads((tmp_path / run / "run.json").read_text())["state"] == "done"


def test_quickstart_through_the_cli_on_two_ray_workers(tmp_path):
    # A dead `ray start` leaves its address recorded in Ray's temp folder; that must not divert
    # the run's own local Ray (it once failed CI: "When connecting to an existing cluster...").
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are capped
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("192.0.2.2:6379")
    try:
        done = mmflow("run", REPO / "workflows" / "quickstart.yaml", "--run-dir", tmp_path / "run", cwd=tmp_path,
                      env={**os.environ, "RAY_TMPDIR": str(ray_tmp)})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["state"] == "done"
    for step in ("data", "shard", "train", "eval"):
        assert json.loads((run / step / "status.json").read_text())["state"] == "done"
    assert "Ray Train: 2 worker(s)" in done.stderr
    assert re.search(r"^    epoch 8/8 loss ", done.stderr, re.M)  # rank 0's log lines, on the driver as the step's
    assert done.stderr.count("Ray dashboard: http://") == 1 and "Token authentication" not in done.stderr
    log = (run / "run.log").read_text()  # every line the terminal got, timestamped, with the summary
    assert re.search(r"^\d{4}-\d\d-\d\d [\d:.]+     epoch 8/8 loss ", log, re.M) and "finished in" in log
    train = json.loads((run / "train" / "metrics.json").read_text())
    assert len(train["history"]) == 8 and train["padded_samples"] == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] > 3 * metrics["chance"]
    assert "eval" in done.stdout and "accuracy=" in done.stdout  # summary table
    # a clean run shows no error lines from Ray's processes (Train's preemption watcher logged one)
    assert not re.search(r"\[\d{4}-\d\d-\d\d [\d:,]+ E \d+ \d+\]", done.stderr), done.stderr[-3000:]


def record_keys(session, config):
    """Train-function stand-in: each rank records the keys it reads in each epoch."""
    from mmflow.components.data.shards import ShardReader

    reader = ShardReader(Path(config["shards"]), rank=session.rank, world_size=session.world_size, seed=session.seed)
    for epoch in range(2):
        keys = [s["__key__"] for s in reader.samples(epoch)]
        Path(config["out"], f"rank{session.rank}-epoch{epoch}.json").write_text(json.dumps(keys))
        session.report({"epoch": epoch, "samples": len(keys)})


def test_two_ray_train_workers_read_every_key_exactly_once(tmp_path):
    import ray.cloudpickle

    from mmflow.components.data.datasets import iter_samples, save_tensor_dataset
    from mmflow.components.data.shards import load_manifest, write_shards
    import torch

    from mmflow.engine import Resources, TrainingJob
    from mmflow.engine.ray_executor import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable on workers
    data = {"label": torch.arange(96) % 4, "m": torch.randn(96, 3)}
    save_tensor_dataset(tmp_path / "ds", {"train": data}, num_classes=4)
    write_shards(iter_samples(tmp_path / "ds", "train"), tmp_path / "shards", 12, num_classes=4)  # 8 shards
    manifest_keys = [k for s in load_manifest(tmp_path / "shards")["shards"] for k in s["keys"]]
    out = tmp_path / "keys"
    out.mkdir()
    executor = RayExecutor()
    try:
        executor.train(record_keys, {"shards": str(tmp_path / "shards"), "out": str(out)},
                       TrainingJob(Resources(workers=2), tmp_path / "train", seed=5))
    finally:
        executor.close()
    for epoch in range(2):
        per_rank = [json.loads((out / f"rank{r}-epoch{epoch}.json").read_text()) for r in range(2)]
        assert len(per_rank[0]) == len(per_rank[1]) == 48
        assert not set(per_rank[0]) & set(per_rank[1])
        assert collections.Counter(per_rank[0] + per_rank[1]) == collections.Counter(manifest_keys)


def meet(config, device):
    """Side-task stand-in: announce itself, then wait (30 s at most) until every task of the batch has."""
    import time

    folder = Path(config["folder"])
    (folder / str(config["n"])).touch()
    deadline = time.time() + 30
    while len(list(folder.iterdir())) < config["of"] and time.time() < deadline:
        time.sleep(0.05)
    return config["n"], len(list(folder.iterdir())), device.type


def test_side_tasks_run_side_by_side_on_ray_and_come_back_in_order(tmp_path):
    """On a Ray started from a thread that has ended since, as a step's: Ray's processes died with that thread."""
    import threading

    import ray._private.worker
    import ray.cloudpickle

    from mmflow.engine import Resources
    from mmflow.engine.ray_executor import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable on workers
    executor = RayExecutor()
    step = threading.Thread(target=executor.connect)
    step.start()
    step.join()
    time.sleep(0.5)
    started = ray._private.worker._global_node.all_processes  # what ray.init started (Ray's internals: no API has it)
    assert all(info.process.poll() is None for infos in started.values() for info in infos)
    try:
        found = executor.run_tasks(meet, [{"n": n, "of": 3, "folder": str(tmp_path)} for n in range(3)],
                                   Resources(cpus_per_task=0.5))
        waiting = tmp_path / "waiting"  # tasks that wait 30 s for a fourth that never comes, in a step's thread
        waiting.mkdir()
        outcome = []

        def wait_in_step() -> None:
            try:
                executor.run_tasks(meet, [{"n": n, "of": 4, "folder": str(waiting)} for n in range(3)],
                                   Resources(cpus_per_task=0.5))
            except Exception as exc:
                outcome.append(type(exc).__name__)

        threading.Thread(target=wait_in_step).start()
        while len(list(waiting.iterdir())) < 3:
            time.sleep(0.1)
    finally:
        started = time.monotonic()
        executor.close()  # an interrupt: the waiting tasks are cancelled, their step's thread leaves Ray first
    assert time.monotonic() - started < 15 and outcome == ["TaskCancelledError"] and not ray.is_initialized()
    assert found == [(0, 3, "cpu"), (1, 3, "cpu"), (2, 3, "cpu")]  # one by one, the first would have met no one


COUNT = """
name: parity
seed: 1
resources: {workers: 1}
steps:
  count: {component: test.count, params: {epochs: 5}}
"""


class ProgressRecorder(RunHook):
    """Keeps every progress event the run passes on to its hooks."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def on_progress(self, run, step, event):
        self.events.append((step, event))


def test_a_plugin_training_step_gets_the_same_result_inline_and_on_ray(tmp_path, capfd):
    """Ray Train hands back only checkpointed metrics: a training function that reports without a
    checkpoint once got an empty history on Ray and its whole history inline. Its log lines and progress
    reach the driver alike; what a worker prints itself is labelled with the step and rank."""
    import ray.cloudpickle

    from mmflow.engine import load_workflow
    from mmflow.engine.ray_executor import RayExecutor
    from mmflow.engine.runner import Runner

    from .. import plugin_components

    ray.cloudpickle.register_pickle_by_value(plugin_components)  # tests/ is not importable on workers
    wf = tmp_path / "count.yaml"
    wf.write_text(COUNT)
    ray_executor = RayExecutor()
    found = {}
    try:
        for every in (0, 2):  # never checkpoints; checkpoints at epochs 1 and 3 but not at the last one
            for executor in ("inline", "ray"):
                workflow = load_workflow(wf, [f"executor={executor}", f"steps.count.params.checkpoint_every={every}"])
                run = tmp_path / f"{executor}{every}"
                lines, progress = [], ProgressRecorder()
                Runner(workflow, run, tmp_path / "runs", executor=ray_executor if executor == "ray" else None,
                       echo=lines.append, hooks=[progress]).run()
                found[executor, every] = (json.loads((run / "count" / "outputs" / "history").read_text()),
                                          json.loads((run / "count" / "metrics.json").read_text()))
                assert [line for line in lines if "counted" in line] == [f"    counted epoch {e}" for e in range(1, 6)]
                ends = [(step, e["epoch"], e["epochs"], e["metrics"]["epoch"]) for step, e in progress.events
                        if e["metrics"]]
                assert ends == [("count", e + 1, 5, e) for e in range(5)]
        deadline = time.monotonic() + 20  # Ray's log monitor forwards worker output on its own schedule
        while "(count rank 0 pid=" not in capfd.readouterr().out and time.monotonic() < deadline:
            time.sleep(0.5)
        assert time.monotonic() < deadline, "a worker's own output is labelled with its step and rank"
    finally:
        ray_executor.close()
    for every, checkpoint_epoch in ((0, -1), (2, 3)):
        history, metrics = found["ray", every]
        assert (history, metrics) == found["inline", every]
        assert [h["epoch"] for h in history] == list(range(5))
        assert metrics == {"epochs": 5, "final_value": 10, "checkpoint_epoch": checkpoint_epoch}


TWO_AT_ONCE = """
name: two_at_once
resources: {workers: 1, cpus_per_worker: HALF}
steps:
  good: {component: test.count, params: {epochs: 4, epoch_seconds: 1, meet: MEET}}
  bad: {component: test.count, params: {epochs: 4, meet: MEET, fail_at_epoch: 2}}
  late: {component: test.count, params: {epochs: 1}}
"""


def test_two_steps_train_at_once_on_ray_and_one_failing_lets_the_other_finish(tmp_path):
    """Each training takes half the machine's CPUs: two train at once, and their rank 0 meet (each waits for the
    other); the third waits for room. The failing one fails the run once the other has finished, and the third
    never starts."""
    import ray.cloudpickle

    from mmflow.engine import StepFailed, load_workflow
    from mmflow.engine.runner import Runner

    from .. import plugin_components

    ray.cloudpickle.register_pickle_by_value(plugin_components)  # tests/ is not importable on workers
    wf = tmp_path / "two.yaml"
    wf.write_text(TWO_AT_ONCE.replace("MEET", str(tmp_path / "meet")).replace("HALF", str(os.cpu_count() / 2)))
    lines: list[str] = []
    run = tmp_path / "run"
    with pytest.raises(StepFailed) as failed:
        Runner(load_workflow(wf), run, tmp_path / "runs", echo=lines.append).run()
    assert str(failed.value).startswith("step 'bad' failed: RuntimeError: injected failure at epoch 2"), lines
    assert len(list((tmp_path / "meet").iterdir())) == 2
    status = {step: json.loads((run / step / "status.json").read_text())["state"] for step in ("good", "bad")}
    assert status == {"good": "done", "bad": "failed"} and not (run / "late").exists()
    history = json.loads((run / "good" / "outputs" / "history").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    # each step's lines carry its name: they ran side by side
    assert [line for line in lines if "good: counted" in line] == [f"    good: counted epoch {e}" for e in range(1, 5)]
    assert "    bad: counted epoch 1" in lines


GBLEND_ONLINE = """
name: gb_online
seed: 1
executor: ray
resources: {workers: 2, cpus_per_worker: 1, cpus_per_task: 0.5}
steps:
""" + synthetic_steps("{num_classes: 3, train_size: 320, test_size: 60, modalities: [{name: a, dim: 4, signal: 2.0}, "
                      "{name: b, dim: 64, informative: 2, signal: 1.0}]}", 40) + """  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params:
      epochs: 3
      batch_size: 32
      hidden: [16]
      embedding_dim: 8
      lr: 0.1
      method: {name: gblend, mode: online, warmup_super_epoch: 1, super_epoch: 1, holdout: 0.25}
"""


def test_online_gblend_on_two_ray_workers_reestimates_every_super_epoch(tmp_path):
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(GBLEND_ONLINE)
    done = mmflow("run", workflow, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "train" / "metrics.json").read_text())["history"]
    assert len(history) == 3
    for row in history:  # an estimate at every epoch: the weights of 3 heads and what they came from
        weights = [row[f"gblend_weight/{h}"] for h in ("a", "b", "fused")]
        assert sum(weights) == pytest.approx(1) and all(w >= 0 for w in weights)
        assert {"gblend_G/a", "gblend_O/b", "gblend_dO/fused"} <= set(row)
    assert "80 training samples held out as gblend validation" in done.stdout + done.stderr


def test_what_the_ray_cannot_give_fails_at_once(tmp_path):
    """64 workers on a laptop once started 64 torch processes (OOM-killed); a GPU worker without a GPU waited
    300 s for a node that never came."""
    import time

    from mmflow.engine import Resources, TrainingJob
    from mmflow.engine.errors import ResourcesError
    from mmflow.engine.ray_executor import RayExecutor

    cores = os.cpu_count()
    executor = RayExecutor()
    try:
        started = time.monotonic()
        with pytest.raises(ResourcesError, match=f"^64 worker\\(s\\) x 64 CPUs need 4096 CPUs at once; "
                                                 f"the local Ray has {cores} CPUs: lower resources.workers, "
                                                 "cpus_per_worker or gpus_per_worker, or pass --oversubscribe"):
            executor.train(meet, {}, TrainingJob(Resources(workers=64, cpus_per_worker=64), tmp_path / "a"))
        with pytest.raises(ResourcesError, match="x 1 CPU and 64 GPUs need 64 GPUs at once; the local Ray has "
                                                 "[0-9]+ GPUs?: lower"):
            executor.train(meet, {}, TrainingJob(Resources(gpus_per_worker=64), tmp_path / "b"))
        with pytest.raises(ResourcesError, match="^each parallel task \\(4096 CPUs\\) need 4096 CPUs at once"):
            executor.run_tasks(meet, [{}], Resources(cpus_per_task=4096))
        assert time.monotonic() - started < 60  # the Ray's start-up, then nothing is waited for
    finally:
        executor.close()


def test_online_gblend_probes_run_in_the_worker_when_it_takes_every_cpu(tmp_path):
    """1 worker x every CPU, probes of 1 CPU each: the worker once waited for its probes forever."""
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(GBLEND_ONLINE)
    done = mmflow("run", workflow, "--run-dir", tmp_path / "run", "--set", "resources.workers=1",
                  "--set", f"resources.cpus_per_worker={os.cpu_count()}", "--set", "resources.cpus_per_task=1",
                  "--set", "steps.train.params.epochs=2", cwd=tmp_path, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "its 3 side tasks run in the training worker, one after another" in done.stdout + done.stderr
    history = json.loads((tmp_path / "run" / "train" / "metrics.json").read_text())["history"]
    assert all(sum(row[f"gblend_weight/{h}"] for h in ("a", "b", "fused")) == pytest.approx(1) for row in history)


MEDIA_SHARD = """
name: media_on_ray
executor: ray
steps:
  data:
    component: data.cremad
    params: {{root: "{root}"}}
  shard:
    component: data.shard
    inputs: {{dataset: "${{steps.data.outputs.dataset}}"}}
    params:
      samples_per_shard: 3
      store: arrays
      on_error: {on_error}
      audio: {{preset: null, sample_rate: 8000, duration: 1.0, features: stft, n_fft: 128, hop: 64}}
      visual: {{num_frames: 1, size: 16, store_size: 16}}
"""


def test_media_shards_convert_as_parallel_ray_tasks_and_a_bad_file_fails_by_name(tmp_path):
    from ..components.data.media_trees import cremad_tree

    root = cremad_tree(tmp_path / "CREMA-D", train_per_class=2)
    bad = root / "Image-01-FPS" / "1001_TEST_FEA_XX" / "000001.jpg"
    bad.write_bytes(b"not a jpeg")
    results = {}
    for on_error in ("skip", "fail"):
        wf = tmp_path / f"{on_error}.yaml"
        wf.write_text(MEDIA_SHARD.format(root=root, on_error=on_error))
        results[on_error] = mmflow("run", wf, "--run-dir", tmp_path / on_error, cwd=tmp_path, timeout=200)
    assert results["skip"].returncode == 0, results["skip"].stderr[-3000:]
    metrics = json.loads((tmp_path / "skip" / "shard" / "metrics.json").read_text())
    assert (metrics["train_shards"], metrics["test_skipped"], metrics["test_samples"]) == (4, 1, 5)
    failed = results["fail"]
    assert failed.returncode == 2 and f"{bad}: corrupt or unreadable JPEG" in failed.stderr
    assert "Traceback" not in failed.stderr and not (tmp_path / "fail" / "shard" / "outputs").exists()


LOCALIZATION = """
name: localization_on_ray
resources: {workers: 2, cpus_per_worker: 1}
steps:
  data: {component: data.synthetic_events, params: {train_size: 64, test_size: 16}}
  shard:
    component: data.shard
    inputs: {dataset: "${steps.data.outputs.dataset}"}
    params: {samples_per_shard: 16}
  train:
    component: train.localization
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {fusion: dmrn, epochs: 2, batch_size: 8, hidden: 8, attention_dim: 8, method: {name: pmr}}
  eval:
    component: eval.localization
    inputs: {model: "${steps.train.outputs.model}", train: "${steps.shard.outputs.train}",
             test: "${steps.shard.outputs.test}"}
"""


def test_localization_with_pmr_on_two_ray_workers(tmp_path):
    wf = tmp_path / "loc.yaml"
    wf.write_text(LOCALIZATION)
    done = mmflow("run", wf, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Ray Train: 2 worker(s)" in done.stderr
    history = json.loads((tmp_path / "run" / "train" / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all("pmr_rho" in h for h in history)
    assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["test_segments"] == 160


SWEEP = """
name: tiny_sweep
resources: {workers: 1, cpus_per_worker: 1}
steps:
""" + synthetic_steps("{train_size: 600, test_size: 200}", 200) + """  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {epochs: 4, batch_size: 64, diagnostics: false}
  eval:
    component: eval.classifier
    inputs: {model: "${steps.train.outputs.model}", train: "${steps.shard.outputs.train}",
             test: "${steps.shard.outputs.test}"}
sweep:
  parameters:
    steps.train.params.lr: {grid: [0.3, 0.05, 0.001, 0.0001]}
  metric: eval.accuracy
  scheduler: {name: asha, metric: train.train_accuracy, mode: max, max_t: 4, grace_period: 1, reduction_factor: 2}
  max_concurrent_trials: 2
"""


def test_a_sweep_with_asha_through_the_cli_twice_beside_another_ray(tmp_path):
    """With another Ray on the host, Ray's address-less state calls once failed in every trial ("Found
    multiple active Ray instances"), and the trials ASHA stopped never gave their workers back: the sweep hung."""
    import csv

    wf = tmp_path / "sweep.yaml"
    wf.write_text(SWEEP)
    other = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are capped
    with ray_node("--head", "--port", "6395", "--num-cpus", "1", "--temp-dir", str(other), "--include-dashboard",
                  "false"):
        for tracking in ("none", f"mlflow=sqlite:///{tmp_path / 'mlflow.db'}"):  # the second sweep must start:
            # nothing leaked by the first one's stopped trials
            done = mmflow("sweep", wf, "--runs-root", tmp_path / "runs", "--tracking", tracking, cwd=tmp_path,
                          timeout=240)
            assert done.returncode == 0, done.stderr[-3000:]
            assert "Traceback" not in done.stderr, done.stderr[-3000:]
    shutil.rmtree(other, ignore_errors=True)
    sweeps = sorted((tmp_path / "runs" / "tiny_sweep").iterdir())
    assert len(sweeps) == 2
    for sweep_dir in sweeps:
        rows = list(csv.DictReader((sweep_dir / "results.csv").open()))
        assert len(rows) == 4 and {r["status"] for r in rows} <= {"done", "stopped"}
        assert any(r["status"] == "stopped" for r in rows)  # ASHA stopped at least one early
        assert rows[0]["status"] == "done" and float(rows[0]["eval.accuracy"]) > 0.3
        assert (sweep_dir / "best.yaml").read_text().startswith("# best trial")
        trial = sweep_dir / "trials" / "trial_00000"
        assert json.loads((trial / "data" / "status.json").read_text())["state"] == "done"
    first = sweeps[0]
    for trial in (first / "trials").iterdir():  # upstream steps ran once, before the trials, and were reused
        for step in ("data", "shard"):
            status = json.loads((trial / step / "status.json").read_text())
            assert status["reused_from"] == str(first / step)
    assert "best: trial_" in done.stdout
    assert len(re.findall(r"^trial_0000\d lr=[\d.e-]+: (?:done eval\.accuracy=|stopped)", done.stderr, re.M)) == 4
    assert re.search(r"\(trial_0000\d pid=\d+\)(?:\x1b\[0m)? +\[\d/\d\] train \(train\.classifier\)", done.stderr), \
        "what a trial prints is labelled with its name"
    sweep_log = (sweeps[1] / "run.log").read_text()  # the sweep's lines, its trials' ends and its results
    assert len(re.findall(r"trial_0000\d lr=[\d.e-]+: (?:done|stopped)", sweep_log)) == 4
    assert "best: trial_" in sweep_log
    assert "    epoch 1/4 loss " in (sweeps[1] / "trials" / "trial_00000" / "run.log").read_text()
    # each trial of the tracked sweep is an MLflow run (Tune's logger): its sampled value and every report
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny_sweep").experiment_id])
    assert len(runs) == 4 and {r.data.tags["mmflow.sweep"] for r in runs} == {sweeps[1].name}
    assert sorted(float(r.data.params["steps.train.params.lr"]) for r in runs) == [0.0001, 0.001, 0.05, 0.3]
    assert all(r.data.metrics["train.train_accuracy"] > 0 for r in runs)
    assert any(len(client.get_metric_history(r.info.run_id, "train.train_accuracy")) >= 4 for r in runs)
    events = list((sweeps[1] / "tune").rglob("events.out.tfevents.*"))  # Tune's TensorBoard logger, per trial
    assert len({e.parent for e in events}) == 4


FAULTS = """
name: faults
resources: {workers: 2, cpus_per_worker: 1}
failure: {max_failures: 1}
steps:
""" + synthetic_steps("{train_size: 6000, test_size: 200, modalities: [{name: a, dim: 256}, {name: b, dim: 256}]}",
                      500) + """  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {epochs: 8, batch_size: 16, hidden: [512], method: {name: pmr}}
"""


def wait_for(found: Callable[[], bool], process: subprocess.Popen, timeout: float = 150) -> None:
    """Until `found()` (a checkpoint was written), while the run is still going."""
    import time

    deadline = time.time() + timeout
    while not found():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.5)


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether process `pid` was started, directly or not, by process `ancestor` (Linux /proc)."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def registered_placement(run: Path) -> list[dict] | None:
    """Where each rank runs, as the training step's latest checkpoint that the Train controller registered
    records it; None before there is one. A checkpoint folder counts only once the controller has polled
    its report (every 0.5 s); a worker killed before that restarts from the previous checkpoint."""
    ray_run = run / "train" / "work" / "train" / "run"
    try:
        snapshot = json.loads((ray_run / "checkpoint_manager_snapshot.json").read_text())
        latest = snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
        return json.loads((ray_run / latest / "placement.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or still being written
        return None


def test_a_killed_worker_is_replaced_and_training_resumes_from_its_checkpoint(tmp_path):
    import os
    import signal

    wf = tmp_path / "faults.yaml"
    wf.write_text(FAULTS)
    run = tmp_path / "run"
    process = start_mmflow("run", wf, "--run-dir", run, cwd=tmp_path)
    wait_for(lambda: registered_placement(run) is not None, process)
    placement = registered_placement(run)
    worker = next(p["pid"] for p in placement if p["rank"] == 1)  # a process search once hit a bystander
    assert descends_from(worker, process.pid), "rank 1 is not a process of this run"
    os.kill(worker, signal.SIGKILL)
    out, err = process.communicate(timeout=280)
    assert process.returncode == 0, err[-3000:]
    history = json.loads((run / "train" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(8))
    resumed = [h["resumed_at_epoch"] for h in history if "resumed_at_epoch" in h]
    assert len(resumed) == 1 and resumed[0] >= 1, err[-3000:]  # the log says whether a restart happened


def processes_of(ancestor: int) -> set[int]:
    """Every live process started, directly or not, by `ancestor` (the run's own Ray among them)."""
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != ancestor
            and descends_from(int(p.name), ancestor)}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum, whole_group", [("SIGINT", True), ("SIGTERM", False)])
def test_ctrl_c_and_sigterm_stop_a_ray_run_cleanly_and_it_resumes(tmp_path, signum, whole_group):
    """Ctrl-C (SIGINT to the terminal's process group) and SIGTERM (to the process): the run stops within
    seconds, says `interrupted`, exits 128 + the signal, leaves no Ray process, and resumes from its checkpoint."""
    import os
    import signal
    import time

    from ..engine.test_interrupt import assert_interrupted

    signum = getattr(signal, signum)
    wf = tmp_path / "faults.yaml"
    wf.write_text(FAULTS)
    run = tmp_path / "run"
    process = start_mmflow("run", wf, "--run-dir", run, cwd=tmp_path, start_new_session=True)
    wait_for(lambda: registered_placement(run) is not None, process)
    ray_processes = processes_of(process.pid)
    assert len(ray_processes) > 3  # GCS, raylet, the Train controller and workers, ...
    (os.killpg if whole_group else os.kill)(process.pid, signum)
    err = assert_interrupted(process, run, signum, within_s=15)  # its fit ended at once, not after waiting for it
    deadline = time.time() + 20
    while any(alive(p) for p in ray_processes) and time.time() < deadline:
        time.sleep(0.5)
    left = [Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")[:120] for p in ray_processes if alive(p)]
    assert not left, left
    done = mmflow("run", "--resume", run, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training continues from" in done.stderr, done.stderr[-3000:]
    history = json.loads((run / "train" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(8))
    resumed = [h["resumed_at_epoch"] for h in history if "resumed_at_epoch" in h]
    assert len(resumed) == 1 and resumed[0] >= 1, err[-3000:]


def test_ctrl_c_stops_a_sweep_in_seconds_and_quietly(tmp_path):
    """Ctrl-C during a sweep's trials: Tune's own stop waited for each trial's next report, then up to 15 s, and
    Ray stopped under a Tune loop still running ("Trial controller checkpointing failed" and the like)."""
    import signal

    wf = tmp_path / "sweep.yaml"
    wf.write_text(SWEEP.replace("epochs: 4", "epochs: 60").replace("max_t: 4", "max_t: 60"))
    process = start_mmflow("sweep", wf, "--runs-root", tmp_path / "runs", cwd=tmp_path, start_new_session=True)
    wait_for(lambda: any("epoch 2/" in log.read_text() for log in (tmp_path / "runs").glob("*/*/trials/*/run.log")),
             process)
    ray_processes = processes_of(process.pid)
    started = time.time()
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert time.time() - started < 10, err[-3000:]
    assert process.returncode == 130 and err.rstrip().splitlines()[-1] == "interrupted", err[-3000:]
    assert not re.search("Traceback|WARNING|ERROR", err), err[-3000:]
    from ray.tune import ExperimentAnalysis

    tune_state = next((tmp_path / "runs" / "tiny_sweep").iterdir()) / "tune"
    # Tune's loop ended before Ray stopped: its last record has no trial still running
    trials = ExperimentAnalysis(str(tune_state)).trials
    # seen twice (PENDING in the last record): what each trial and the sweep left (Tune's lines after the
    # interrupt are in the sweep's run.log), to tell why
    evidence = "\n".join([f"{t.trial_id}: {t.status}" for t in trials]
                         + [f"{f}:\n{f.read_text()[-6000:]}" for f in sorted(tune_state.parent.rglob("*"))
                            if f.name in ("error.txt", "run.log") and f.is_file()])
    assert {t.status for t in trials} <= {"TERMINATED", "ERROR"}, evidence
    deadline = time.time() + 20
    while any(alive(p) for p in ray_processes) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(alive(p) for p in ray_processes)


def test_a_driver_sent_sigterm_unwinds_in_its_own_time(tmp_path):
    """Ray's C++ crash handler took SIGTERM for a crash: it aborted the driver 3 s later, mid-unwind."""
    script = """
import os, signal, time
from mmflow.engine.ray_executor import RayExecutor
got = []
signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))  # before Ray starts, as mmflow's CLI does
executor = RayExecutor()
executor.connect()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(4)
executor.close()
print(got)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "[15]"), done.stderr[-3000:]
    assert "SIGTERM received" not in done.stderr


def test_after_the_driver_dies_another_machine_resumes_from_object_storage(tmp_path, s3_storage):
    """Checkpoints go to S3 (moto); after the driver dies, `--resume <run URI>` in an empty runs root
    fetches the finished steps (not re-run) and training continues from the checkpoint in the bucket."""
    import os
    import signal

    from mmflow.engine.executor import HISTORY_FILE
    from mmflow.engine.storage import Storage

    wf = tmp_path / "faults.yaml"
    wf.write_text(FAULTS + f"storage: '{s3_storage}'\n")
    process = start_mmflow("run", wf, "--runs-root", tmp_path / "first", cwd=tmp_path, start_new_session=True)
    runs = Storage.open(s3_storage).joinpath("faults")

    def checkpoint_in_bucket() -> bool:
        train = [runs.joinpath(r, "train", "train", "run") for r in runs.folders()]
        return any(t.joinpath(c, HISTORY_FILE).exists() for t in train for c in t.folders()
                   if c.startswith("checkpoint_"))

    wait_for(checkpoint_in_bucket, process)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the local Ray it started, nothing else
    process.communicate(timeout=60)
    (run_id,) = runs.folders()
    shard_status = runs.joinpath(run_id, "shard", "status.json").read_text()
    done = mmflow("run", "--resume", runs.joinpath(run_id).uri, "--runs-root", tmp_path / "second", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "second" / "faults" / run_id
    here, stored = json.loads((run / "shard" / "status.json").read_text()), json.loads(shard_status)
    assert here.pop("files") != stored.pop("files") and here == stored  # not re-run: downloaded, checked, new mtimes
    assert done.stderr.count("kept") == 2 and "training continues from" in done.stderr
    history = json.loads((run / "train" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(8))
    resumed = [h["resumed_at_epoch"] for h in history if "resumed_at_epoch" in h]
    assert len(resumed) == 1 and resumed[0] >= 1
    assert json.loads(runs.joinpath(run_id, "train", "status.json").read_text())["state"] == "done"


TWO_NODES = """
name: two_nodes
resources: {workers: 2, cpus_per_worker: 1}
steps:
""" + synthetic_steps("{train_size: 400, test_size: 100}", 100) + """  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {epochs: 2}
"""


def test_a_workflow_spreads_its_workers_over_a_real_two_node_cluster_and_runs_as_a_ray_job(tmp_path, monkeypatch):
    import os

    import ray

    ray_cli = str(Path(sys.executable).parent / "ray")
    address = "127.0.0.1:6390"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # one auth mode for both nodes, the driver and this test
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    env = dict(os.environ)
    with contextlib.ExitStack() as nodes:  # two raylets, each a separate process tree with one CPU
        nodes.enter_context(ray_node("--head", "--port", "6390", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                                     "--resources", '{"node_a": 1}', "--dashboard-host", "127.0.0.1",
                                     "--dashboard-port", "8266", env=env))
        nodes.enter_context(ray_node("--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                                     "--resources", '{"node_b": 1}', env=env))
        wf = tmp_path / "two.yaml"
        wf.write_text(TWO_NODES)
        done = mmflow("run", wf, "--run-dir", tmp_path / "run", "--address", address, cwd=tmp_path, timeout=240,
                      env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        placement = json.loads((tmp_path / "run" / "train" / "outputs" / "model" / "placement.json").read_text())
        assert sorted(p["rank"] for p in placement) == [0, 1]
        ray.init(address=address, logging_level="ERROR")
        try:
            resources = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        finally:
            ray.shutdown()
        used = {name for p in placement for name in resources[p["node_id"]] if name.startswith("node_")}
        assert used == {"node_a", "node_b"}  # one worker on each node
        # the same workflow submitted as a Ray job: no --address, the job's RAY_ADDRESS is used
        job = subprocess.run([ray_cli, "job", "submit", "--address", "http://127.0.0.1:8266", "--", sys.executable,
                              "-m", "mmflow.engine.cli", "run", str(wf), "--run-dir", str(tmp_path / "job"),
                              "--set", "steps.train.params.epochs=1"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
        assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
        assert json.loads((tmp_path / "job" / "run.json").read_text())["state"] == "done"
        job_placement = json.loads((tmp_path / "job" / "train" / "outputs" / "model" / "placement.json").read_text())
        assert {p["node_id"] for p in job_placement} == {p["node_id"] for p in placement}  # on the cluster
