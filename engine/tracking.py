"""`tracking:` — a run's metrics, params and workflow in TensorBoard and MLflow, as the run goes (a run hook).

TensorBoard: event files under `<run_dir>/tensorboard/<step>/` (tensorboardX): every training epoch's
metrics as they are reported, then each step's final metrics and params. MLflow: one run per workflow run
(the workflow text as an artifact, the overrides as params) with one nested run per step (its params, its
per-epoch metrics with the epoch as MLflow's step, its final metrics). A sweep's trials go through Ray
Tune's own logger callbacks instead (tune.py).
"""

from __future__ import annotations

import importlib.util
import time
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from .errors import UsageError
from .hooks import RunHook, RunInfo, StepOutcome
from .model_paths import dotted
from .registry import Params

if TYPE_CHECKING:
    from pathlib import Path

TENSORBOARD_DIR = "tensorboard"
MLFLOW_EXTRA = "pip install 'mmflow-ray[mlflow]'"


class TrackingSpec(Params):
    """Where a run's metrics go besides its folder (`tracking:` in a workflow, `--tracking` on the command line)."""

    tensorboard: bool = Field(True, description="TensorBoard event files in the run folder: <run>/tensorboard/<step>/")
    mlflow: str | None = Field(
        None, description="an MLflow tracking URI: sqlite:///mlflow.db (a local file, no server), http://host:5000, "
        "databricks; one MLflow run per workflow run, a nested one per step")
    experiment: str | None = Field(None, description="the MLflow experiment (default: the workflow's name)")

    @field_validator("mlflow")
    @classmethod
    def _mlflow_installed(cls, value: str | None) -> str | None:
        if value is not None and importlib.util.find_spec("mlflow") is None:
            raise ValueError(f"MLflow is not installed here ({MLFLOW_EXTRA})")
        return value


def tracking_overrides(given: str) -> list[str]:
    """`--tracking tensorboard,mlflow=sqlite:///mlflow.db` (or `none`) as workflow overrides."""
    overrides: list[str] = []
    for item in filter(None, (part.strip() for part in given.split(","))):
        key, _, value = item.partition("=")
        if key == "none":
            overrides.append("tracking=null")
        elif key == "tensorboard":
            overrides.append(f"tracking.tensorboard={value or 'true'}")
        elif key in ("mlflow", "experiment") and value:
            overrides.append(f"tracking.{key}={value}")
        else:
            raise UsageError(f"--tracking {given}: '{item}' is not tensorboard, mlflow=URI, experiment=NAME or none")
    return overrides


class TrackingHook(RunHook):
    """Writes what the run reports to TensorBoard and MLflow while it runs."""

    def __init__(self, spec: TrackingSpec) -> None:
        self.spec = spec
        self._writers: dict[str, Any] = {}  # step -> tensorboardX SummaryWriter
        self._mlflow: Any = None  # an MlflowClient
        self._parent: str | None = None  # the workflow run's MLflow run id
        self._children: dict[str, str] = {}  # step -> its nested MLflow run id
        self._experiment: str | None = None
        self._epochs: dict[str, int] = {}  # step -> the last epoch it reported

    def before_run(self, run: RunInfo) -> None:
        if self.spec.mlflow is None:
            return
        from mlflow import MlflowClient

        try:  # before anything of the run is written: a store that cannot be reached is a one-line error
            self._mlflow = client = MlflowClient(self.spec.mlflow)
            name = self.spec.experiment or run.workflow.name
            found = client.get_experiment_by_name(name)
            self._experiment = found.experiment_id if found else client.create_experiment(name)
            parent = client.create_run(self._experiment, run_name=run.run_dir.name,
                                       tags={"mmflow.workflow": run.workflow.name, "mmflow.run_dir": str(run.run_dir)})
        except Exception as exc:
            self._mlflow = None
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"tracking.mlflow {self.spec.mlflow}: MLflow cannot record there: {reason}") from exc
        self._parent = parent.info.run_id
        client.log_text(self._parent, run.workflow.document.text, "workflow.yaml")
        for override in run.workflow.overrides:
            path, _, value = override.partition("=")
            client.log_param(self._parent, path[:250], value[:6000])

    def on_progress(self, run: RunInfo, step: str, event: dict[str, Any]) -> None:
        """An epoch's metrics, as the training reports them (batch positions are not recorded)."""
        metrics = _numbers(event.get("metrics") or {})
        if not metrics:
            return
        epoch = int(event["epoch"])
        if self.spec.tensorboard:
            writer = self._writer(run.run_dir, step)
            for key, value in metrics.items():
                writer.add_scalar(key, value, epoch)
            writer.flush()
        self._epochs[step] = epoch
        if self._mlflow is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._mlflow.log_batch(self._child(step), metrics=[Metric(k, v, now, epoch) for k, v in metrics.items()])

    def after_step(self, run: RunInfo, outcome: StepOutcome) -> None:
        """The step's final metrics and params; a reused step is recorded too, with where it came from."""
        metrics = _numbers(outcome.metrics)
        params = dotted(run.workflow.steps[outcome.name].params.model_dump(mode="json"))
        if self.spec.tensorboard:
            writer = self._writer(run.run_dir, outcome.name)
            writer.add_text("params", "\n".join(f"    {k}: {v}" for k, v in params.items()))
            for key, value in metrics.items():
                writer.add_scalar(f"final/{key}", value, 0)
            writer.close()
            self._writers.pop(outcome.name)
        if self._mlflow is not None:
            from mlflow.entities import Metric, Param, RunTag

            child = self._child(outcome.name)
            tags = [RunTag("mmflow.state", outcome.state), RunTag("mmflow.component",
                                                                   run.workflow.steps[outcome.name].component.name)]
            if outcome.reused_from:
                tags.append(RunTag("mmflow.reused_from", outcome.reused_from))
            self._mlflow.log_batch(child, params=[Param(k[:250], str(v)[:6000]) for k, v in params.items()], tags=tags)
            now, last = int(time.time() * 1000), self._epochs.get(outcome.name, 0)  # the run's latest values: final
            self._mlflow.log_batch(child, metrics=[Metric(k, v, now, last) for k, v in metrics.items()])
            self._mlflow.set_terminated(child)

    def on_step_error(self, run: RunInfo, step: str, error: BaseException) -> None:
        if step in self._writers:
            self._writers.pop(step).close()
        if self._mlflow is not None and step in self._children:
            self._mlflow.set_terminated(self._children[step], "KILLED" if isinstance(error, KeyboardInterrupt)
                                        else "FAILED")

    def after_run(self, run: RunInfo, outcomes: list[StepOutcome], error: BaseException | None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        if self._mlflow is not None and self._parent is not None:
            state = "FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            self._mlflow.set_terminated(self._parent, state)

    def _writer(self, run_dir: Path, step: str) -> Any:
        if step not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[step] = SummaryWriter(str(run_dir / TENSORBOARD_DIR / step))
        return self._writers[step]

    def _child(self, step: str) -> str:
        """The step's nested MLflow run, made on first use."""
        if step not in self._children:
            assert self._mlflow is not None and self._parent is not None
            child = self._mlflow.create_run(self._experiment, run_name=step,
                                            tags={"mlflow.parentRunId": self._parent})
            self._children[step] = child.info.run_id
        return self._children[step]


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
