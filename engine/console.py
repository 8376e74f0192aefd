"""What a run shows while it runs: a live display on a terminal, plain lines elsewhere, and `run.log`.

The runner sends its lines through `RunConsole.line` and, as to every run hook, a training step's progress
(what `session.progress` reports on the workers). On a terminal the lines scroll
above a live table of the steps (state, time, headline metrics), where the running training step shows its
epoch bar, batch, ETA and latest metrics; elsewhere (CI, a file) each line is printed as it comes. Every
line, and whatever else the process prints while the run goes on (Ray's forwarded worker output included),
is also written with a timestamp to the run folder's `run.log`.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .hooks import RunHook, RunInfo, StepOutcome
from .registry import ComponentSpec
from .runs import format_metrics, format_number, text_table

QUIET, NORMAL, VERBOSE = 0, 1, 2  # -q, default, -v
RUN_LOG = "run.log"


@dataclass
class StepRow:
    """A step as the live table shows it."""

    component: ComponentSpec
    state: str = "pending"
    started: float | None = None
    seconds: float | None = None
    headline: str = ""
    progress: dict[str, Any] = field(default_factory=dict)  # the latest session.progress event
    training_started: float | None = None


class RunLog:
    """The run folder's run.log: timestamped lines, appended (a resumed run continues it); lines written before
    the folder exists wait for it."""

    def __init__(self) -> None:
        self._file: IO[str] | None = None
        self._waiting: list[str] = []
        self._partial = ""
        self._lock = threading.Lock()

    def open(self, path: Path) -> None:
        """Start writing to `path` (its folder exists), beginning with what waited; once open, stays so."""
        with self._lock:
            if self._file is not None:
                return
            self._file = open(path, "a", encoding="utf-8", buffering=1)
            for line in self._waiting:
                self._file.write(line)
            self._waiting.clear()

    def write(self, text: str) -> None:
        """Text in any pieces; each finished line is written with the time it was finished."""
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                stamped = f"{dt.datetime.now().isoformat(sep=' ', timespec='milliseconds')} {line.rstrip()}\n"
                if self._file is not None:
                    self._file.write(stamped)
                else:
                    self._waiting.append(stamped)

    def close(self) -> None:
        """Finish a last unterminated line and close the file."""
        if self._partial:
            self.write("\n")
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class _Tee:
    """A stand-in for sys.stdout or sys.stderr that also writes to the run log."""

    def __init__(self, stream: IO[str], log: RunLog) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding ...
        return getattr(self._stream, name)


class _Terminal:
    """Lines on a stream and in a RunLog, above a live rich display while one runs."""

    def __init__(self, stream: IO[str] | None, live: bool | None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.log = RunLog()
        self._display: Any = None  # rich.live.Live while it runs

    def _show(self, text: str) -> None:
        if self._display is not None:
            self._display.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    def _start_display(self, transient: bool) -> None:
        from rich.console import Console
        from rich.live import Live

        self._display = Live(get_renderable=self._render, console=Console(file=self.stream), refresh_per_second=4,
                             transient=transient)
        self._display.start()

    def _stop_display(self) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None

    def _render(self) -> Any:
        raise NotImplementedError


class RunConsole(_Terminal, RunHook):
    """The terminal and run.log of one `mmflow run`: a run hook, plus `line` for the runner's lines.

    `live`: a rich live display (default: when `stream` is a terminal and the verbosity is not QUIET).
    """

    def __init__(self, stream: IO[str] | None = None, verbosity: int = NORMAL, live: bool | None = None,
                 summary: bool = True) -> None:
        super().__init__(stream, False if verbosity == QUIET else live)
        self.verbosity = verbosity
        self.summary = summary  # the table a run ends with, on stdout and in run.log (a sweep's trials: not)
        self.rows: dict[str, StepRow] = {}
        self._saved: tuple[IO[str], IO[str]] | None = None  # sys.stdout and sys.stderr before the tee
        self._started = time.monotonic()

    # -- what the runner sends ----------------------------------------------------------------
    def line(self, text: str) -> None:
        """A line of the run: into run.log, and on the terminal unless quiet."""
        self.log.write(text + "\n")
        if self.verbosity != QUIET:
            self._show(text)

    def on_progress(self, run: RunInfo, step: str, event: dict[str, Any]) -> None:
        """Where a training step is (`session.progress`): shown in the live table."""
        row = self.rows.get(step)
        if row is None:
            return
        row.training_started = row.training_started or time.monotonic()
        row.progress = {**row.progress, **{k: v for k, v in event.items() if v is not None}}  # metrics stay till new

    # -- hooks ----------------------------------------------------------------------------------
    def before_run(self, run: RunInfo) -> None:
        """Lay out the steps, start the live display and catch what the process prints."""
        self.rows = {name: StepRow(run.workflow.steps[name].component) for name in run.steps or run.workflow.order}
        self._started = time.monotonic()
        if self.live:  # the summary follows it; what the process prints goes above it (rich's redirect)
            self._start_display(transient=True)
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self.log), _Tee(sys.stderr, self.log)

    def before_step(self, run: RunInfo, step: str) -> None:
        """run.log opens at the first step: the run folder exists by then."""
        self.log.open(run.run_dir / RUN_LOG)
        self.rows[step].state, self.rows[step].started = "running", time.monotonic()

    def after_step(self, run: RunInfo, outcome: StepOutcome) -> None:
        row = self.rows[outcome.name]
        row.state, row.seconds, row.progress = outcome.state, outcome.seconds, {}
        headline = run.workflow.steps[outcome.name].component.headline_of(outcome.metrics)
        row.headline = format_metrics(headline)

    def on_step_error(self, run: RunInfo, step: str, error: BaseException) -> None:
        row = self.rows[step]
        row.state = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        row.seconds = time.monotonic() - (row.started or time.monotonic())
        # the terminal gets the CLI's line
        self.log.write(f"{step}: {row.state}: {type(error).__name__}: {error}\n{interrupt_cause(error)}")

    def after_run(self, run: RunInfo, outcomes: list[StepOutcome], error: BaseException | None) -> None:
        """Stop the display and the tee; the summary goes to stdout and run.log."""
        self._give_back()
        if error is None and self.summary:
            text = summary(run, outcomes, time.monotonic() - self._started)
            self.log.write(text + "\n")
            print(text, flush=True)
        self.log.close()

    def close(self) -> None:
        """Give the terminal back (the process's own streams, no live display) and close run.log; again: nothing."""
        self._give_back()
        self.log.close()

    def _give_back(self) -> None:
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        self._stop_display()

    # -- the live table -----------------------------------------------------------------------------
    def _render(self) -> Any:
        from rich.table import Table

        table = Table(box=None, padding=(0, 2, 0, 0), show_header=True, header_style="bold")
        for column in ("step", "component", "state", "time", ""):
            table.add_column(column)
        now = time.monotonic()
        for name, row in self.rows.items():
            seconds = row.seconds if row.seconds is not None else (now - row.started if row.started else None)
            style = {"running": "bold cyan", "failed": "red", "interrupted": "red", "pending": "dim"}.get(row.state, "")
            detail = _training(row, now) if row.state == "running" and row.progress else row.headline
            table.add_row(name, row.component.name, row.state, f"{seconds:.1f}s" if seconds is not None else "", detail,
                          style=style)
        return table


def _training(row: StepRow, now: float) -> Any:
    """A running training step: epoch bar, batch, ETA and the last epoch's headline metrics."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    event = row.progress
    epoch, epochs = event.get("epoch", 1), max(1, event.get("epochs", 1))
    batch, batches = event.get("batch"), event.get("batches")
    within = batch / batches if batch and batches else (1.0 if event.get("metrics") else 0.0)
    done = (epoch - 1 + within) / epochs
    text = f"epoch {epoch}/{epochs}" + (f"  batch {batch}/{batches}" if batch and batches else "")
    if 0 < done < 1 and row.training_started is not None:
        text += f"  ETA {_clock((now - row.training_started) * (1 - done) / done)}"
    metrics = event.get("metrics") or {}
    shown = row.component.headline_of(metrics, most=2)
    if shown:
        text += "  " + format_metrics(shown)
    line = Table.grid(padding=(0, 1))
    line.add_row(ProgressBar(total=1.0, completed=done, width=24), Text(text, no_wrap=True, overflow="ellipsis"))
    return line


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def summary(run: RunInfo, outcomes: list[StepOutcome], seconds: float) -> str:
    """The table a finished run ends with: each step's state, time and headline metrics."""
    rows = [["step", "status", "time", "metrics"]]
    for o in outcomes:
        headline = run.workflow.steps[o.name].component.headline_of(o.metrics)
        rows.append([o.name, o.state, f"{o.seconds:.1f}s", format_metrics(headline)])
    return f"{text_table(rows)}\nfinished in {seconds:.1f}s; run directory: {run.run_dir}"


@dataclass
class TrialRow:
    """A sweep trial as the sweep's table shows it."""

    values: dict[str, Any]
    state: str = "pending"
    metric: tuple[str, float] | None = None  # the latest shown metric and its value
    reports: int = 0


class SweepConsole(_Terminal):
    """What a sweep shows: a row per trial with its sampled values, state (running, done, stopped, error), how
    many results it reported and the latest of `metrics` (the first a result carries: the sweep's metric, else
    the scheduler's per-epoch one); a live table on a terminal, a line per start and end elsewhere."""

    def __init__(self, metrics: list[str], stream: IO[str] | None = None, live: bool | None = None) -> None:
        super().__init__(stream, live)  # its log: the sweep folder's run.log, once that exists
        self.metrics = metrics
        self.rows: dict[str, TrialRow] = {}
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        """A line of the sweep (shared steps, where the trials go)."""
        self.log.write(text + "\n")
        self._show(text)

    def trial(self, name: str, values: dict[str, Any], state: str, result: dict[str, Any] | None = None) -> None:
        """A trial started, reported (`result`), or ended: its row changes."""
        with self._lock:
            row = self.rows.setdefault(name, TrialRow(values))
            row.state = state
            if result:
                row.reports += 1
                row.metric = next(((m, result[m]) for m in self.metrics if isinstance(result.get(m), (int, float))),
                                  row.metric)
            if self.live and self._display is None:  # from the first trial on; the last state stays on screen
                self._start_display(transient=False)
        if result is None or state != "running":  # starts and ends, not every epoch: a line (run.log only if live)
            shown = f" {row.metric[0]}={format_number(row.metric[1])}" if row.metric else ""
            text = f"{name} {_values(values)}: {state}{shown}"
            if self.live:
                self.log.write(text + "\n")
            else:
                self.line(text)

    def result(self, text: str) -> None:
        """What the sweep found (its results table, the best trial): on stdout and in run.log."""
        self.log.write(text + "\n")
        print(text, flush=True)

    def close(self) -> None:
        """Stop the live table (its last state stays on the terminal) and close run.log."""
        self._stop_display()
        self.log.close()

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
        names = list(next(iter(self.rows.values())).values) if self.rows else []
        for column in ("trial", *(n.rpartition(".")[2] for n in names), "state", "reports", "latest"):
            table.add_column(column)
        with self._lock:
            for name, row in self.rows.items():
                style = {"running": "bold cyan", "error": "red", "pending": "dim"}.get(row.state, "")
                latest = f"{row.metric[0]}={format_number(row.metric[1])}" if row.metric else "-"
                cells = [format_number(row.values.get(n)) for n in names]
                table.add_row(name, *cells, row.state, str(row.reports), latest, style=style)
        return table


def interrupt_cause(error: BaseException) -> str:
    """For run.log: how the call into Ray that an interrupt stopped ended (its traceback), if it ended on an
    error (see ray_executor.off_main_thread); else nothing. After Ctrl-C nobody raises it, yet it tells whether
    Ray's loop ended cleanly."""
    cause = error.__cause__ if isinstance(error, KeyboardInterrupt) else None
    if cause is None:
        return ""
    return "the interrupted call ended on:\n" + "".join(traceback.format_exception(cause))


def _values(values: dict[str, Any]) -> str:
    return " ".join(f"{path.rpartition('.')[2]}={format_number(v)}" for path, v in values.items())
