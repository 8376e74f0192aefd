"""mmflow.engine: the generic workflow engine (spec, registry, graph, runner, executors, sweeps).

This module is its public API, the only one components and plugins import: declaring components
(`component`, `Params`, `Many`, `Maybe`, `self_check`, and `ChoiceTable` for alternatives a
params field picks by name), what a running step sees (`StepContext`),
training on workers (`TrainSession`, `TrainResult`, `TrainingJob`, the `Executor` interface and
the built-in `InlineExecutor`), run hooks (`RunHook`, `RunInfo`, `StepOutcome`), files written on
other nodes (`node_folder`, `write_shipped`), workflows (`load_workflow`, `Workflow`, `Resources`), steps
run once per seed (`base_name`, `over_seeds`) and the errors a component may raise.
Everything else under mmflow.engine is internal and may change.
"""

from .choices import Choice, ChoiceField, ChoiceTable
from .context import StepContext
from .errors import InputDataError, Problem, StepFailed, UsageError, WorkflowError
from .executor import (PLACEMENT_FILE, Executor, ExecutorSettings, TrainingJob, TrainResult, TrainSession,
                       create_executor)
from .hooks import RunHook, RunInfo, StepOutcome
from .inline_executor import InlineExecutor
from .nodes import node_folder, write_shipped
from .registry import REGISTRY, ComponentSpec, Many, Maybe, Params, component, self_check
from .seeds import base_name, over_seeds
from .spec import Resources, Workflow, load_workflow

__all__ = [
    "PLACEMENT_FILE",
    "REGISTRY",
    "Choice",
    "ChoiceField",
    "ChoiceTable",
    "ComponentSpec",
    "Executor",
    "ExecutorSettings",
    "InlineExecutor",
    "InputDataError",
    "Many",
    "Maybe",
    "Params",
    "Problem",
    "Resources",
    "RunHook",
    "RunInfo",
    "StepContext",
    "StepFailed",
    "StepOutcome",
    "TrainResult",
    "TrainSession",
    "TrainingJob",
    "UsageError",
    "Workflow",
    "WorkflowError",
    "base_name",
    "component",
    "create_executor",
    "load_workflow",
    "node_folder",
    "over_seeds",
    "self_check",
    "write_shipped",
]
