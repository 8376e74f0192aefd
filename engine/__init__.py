"""mmflow.engine: generic workflow engine (spec, registry, graph, runner, Ray executor).

Public API for component authors: `component`, `Params`, `StepContext`, `TrainSession`.
"""

from .context import StepContext
from .distributed import TrainResult, TrainSession
from .errors import InputDataError, Problem, StepFailed, UsageError, WorkflowError
from .registry import REGISTRY, ComponentSpec, Many, Maybe, Params, component
from .spec import Workflow, load_workflow

__all__ = [
    "REGISTRY",
    "ComponentSpec",
    "InputDataError",
    "Many",
    "Maybe",
    "Params",
    "Problem",
    "StepContext",
    "StepFailed",
    "TrainResult",
    "TrainSession",
    "UsageError",
    "Workflow",
    "WorkflowError",
    "component",
    "load_workflow",
]
