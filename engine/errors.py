"""Typed errors: user mistakes (exit 2, one line each) versus step failures (exit 1)."""

from __future__ import annotations

import difflib
import signal
from dataclasses import dataclass
from typing import ClassVar, Iterable


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow, located by file, line and YAML path."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class WorkflowError(Exception):
    """A workflow the user wrote is invalid; carries every problem found at once, in file order."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line is None, p.line or 0))
        super().__init__("\n".join(str(p) for p in self.problems))


class InputDataError(Exception):
    """Raised by a component when the data a workflow points at is missing or malformed.

    The message must name the file (and the field or record) at fault; it is shown as one
    line with exit status 2, like a workflow error, without a traceback.
    """


class StepFailed(Exception):
    """A step raised while running; the run directory keeps its error log."""

    def __init__(self, step: str, message: str, log_path: str | None = None, user_error: bool = False):
        self.step = step
        self.log_path = log_path
        self.user_error = user_error
        tail = f" (traceback in {log_path})" if log_path and not user_error else ""
        super().__init__(f"step '{step}' failed: {message}{tail}")


class StepsFailed(StepFailed):
    """Several steps failed side by side (each error on a line of its own); a user's mistake (exit 2) only if every
    one is."""

    def __init__(self, errors: list[BaseException]):
        self.errors = errors
        failed = [e for e in errors if isinstance(e, StepFailed)]
        self.step = ", ".join(e.step for e in failed)
        self.log_path = None
        self.user_error = len(failed) == len(errors) and all(e.user_error for e in failed)
        Exception.__init__(self, f"{len(errors)} steps failed:\n" + "\n".join(f"  {e}" for e in errors))


class Interrupted(KeyboardInterrupt):
    """The user stopped the run: Ctrl-C (SIGINT) or SIGTERM; the exit status is 128 + the signal's number."""

    #: the signal of an interrupt that has not unwound the run yet: CPython drops an exception raised while a
    #: file object is finalized (webdataset's tar reads make many), so the run raises it again at its next report
    pending: ClassVar[int | None] = None

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @classmethod
    def raise_pending(cls) -> None:
        """Raise the interrupt again if one was swallowed before it reached the run."""
        if cls.pending is not None:
            signum, cls.pending = cls.pending, None
            raise cls(signum)


class UsageError(Exception):
    """A command-line mistake that is not about the workflow's content."""


class ResourcesError(UsageError):
    """A step asks for more CPUs or GPUs at once than its Ray cluster (or this machine) has."""


class StorageError(UsageError):
    """A storage location that pyarrow cannot open or reach."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest candidate, or ''."""
    # a YAML key may be no string at all (`&a key:` is an anchor on a null key)
    close = difflib.get_close_matches(str(name), [c for c in candidates if isinstance(c, str)], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
