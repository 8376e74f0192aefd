"""Components used only by the tests: tiny, torch-free, and controllable from the outside."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from mmflow.engine import Many, Maybe, Params, StepContext, TrainSession, component


class TextParams(Params):
    text: str = Field("hello", description="text to write")


@component("test.text", params=TextParams, outputs={"copy": "text"})
def text(ctx: StepContext, params: TextParams) -> dict:
    """Write `text` to the output."""
    ctx.output("copy").write_text(params.text)
    return {"chars": len(params.text)}


class ListingParams(Params):
    folder: str = Field(description="folder whose file names are listed")


@component("test.listing", params=ListingParams, outputs={"copy": "text"}, reads=lambda params: [Path(params.folder)])
def listing(ctx: StepContext, params: ListingParams) -> dict:
    """List the names (not the contents) of the files under `folder`, as a dataset reader does."""
    names = sorted(str(p.relative_to(params.folder)) for p in Path(params.folder).rglob("*") if p.is_file())
    ctx.output("copy").write_text("\n".join(names))
    return {"files": len(names)}


class PassthroughParams(Params):
    suffix: str = "!"
    fail_if_exists: str = Field("", description="fail (after a partial write) while this file exists")
    kill_if_exists: str = Field("", description="SIGKILL the whole process (after a partial write) while this file exists")


@component("test.passthrough", params=PassthroughParams, inputs={"source": "text"}, outputs={"copy": "text"})
def passthrough(ctx: StepContext, params: PassthroughParams) -> dict:
    """Copy the input text, adding a suffix; can be told to crash half-way."""
    out = ctx.output("copy")
    out.write_text(ctx.inputs["source"].read_text())  # a partial output before the crash
    if params.fail_if_exists and Path(params.fail_if_exists).exists():
        raise RuntimeError("injected failure")
    if params.kill_if_exists and Path(params.kill_if_exists).exists():
        os.kill(os.getpid(), signal.SIGKILL)
    out.write_text(ctx.inputs["source"].read_text() + params.suffix)
    counter = os.environ.get("MMFLOW_TEST_COUNTER")
    if counter:  # lets tests count how often a step really ran
        with open(counter, "a") as fh:
            fh.write(ctx.step + "\n")
    return {"chars": len(out.read_text())}


@component("test.join", inputs={"parts": Many("text"), "extra": Many("text", optional=True)}, outputs={"joined": "text"})
def join(ctx: StepContext, params: Params) -> dict:
    """Join the texts of several steps, labelled by step name, then any extra ones."""
    parts = [f"{step}={path.read_text()}" for name in ("parts", "extra") if name in ctx.inputs
             for step, path in zip(ctx.sources[name], ctx.inputs[name], strict=True)]
    ctx.output("joined").write_text(",".join(parts))
    return {"parts": len(parts)}


class GreetParams(Params):
    shout: bool = False


def _shouting_needs_a_name(params: GreetParams, wired: set[str]) -> list[tuple[tuple[str, ...], str]]:
    return [(("params", "shout"), "shouting needs a name: wire inputs.name")] if params.shout and "name" not in wired else []


@component("test.greet", params=GreetParams, inputs={"name": Maybe("text")}, outputs={"greeting": "text"},
           check=_shouting_needs_a_name)
def greet(ctx: StepContext, params: GreetParams) -> dict:
    """Greet the wired name, or the world when none is wired."""
    name = ctx.inputs["name"].read_text() if "name" in ctx.inputs else "world"
    ctx.output("greeting").write_text(f"hello {name}".upper() if params.shout else f"hello {name}")
    return {}


class CountParams(Params):
    epochs: int = Field(5, ge=1, le=1000)
    checkpoint_every: int = Field(0, ge=0, description="rank 0 checkpoints every n-th epoch; 0: never")
    epoch_seconds: float = Field(0.0, ge=0, description="each epoch sleeps this long (for a live display to show)")
    meet: str = Field("", description="rank 0 first meets another training here (test.meet's rendezvous)")
    fail_at_epoch: int = Field(0, ge=0, description="rank 0 raises at this epoch (from 1); 0: never")


def count_epochs(session: TrainSession, config: dict) -> None:
    """Per worker: report the epoch, a value from the seed and the ranks summed over workers; rank 0
    checkpoints every n-th epoch; a restart continues after the restored checkpoint."""
    import torch

    session.restored()
    if config.get("meet") and session.rank == 0:
        meet_others(config["meet"], str(os.getpid()), 1, 120)
    for epoch in range(len(session.history), config["epochs"]):
        if session.rank == 0 and epoch + 1 == config.get("fail_at_epoch"):
            raise RuntimeError(f"injected failure at epoch {epoch + 1}")
        for batch in range(4):
            session.progress(epoch + 1, config["epochs"], batch + 1, 4)
            time.sleep(config.get("epoch_seconds", 0) / 4)
        ranks = session.all_reduce_sum(torch.tensor([float(session.rank)])).item()
        metrics = {"epoch": epoch, "value": (epoch + 1) * (session.seed + 1), "rank_sum": ranks}
        session.progress(epoch + 1, config["epochs"], metrics=metrics)
        session.log(f"counted epoch {epoch + 1}")
        every = config["checkpoint_every"]
        if session.rank == 0 and every and (epoch + 1) % every == 0:
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "state.json").write_text(json.dumps({"epoch": epoch}))
                session.report(metrics, folder)
        else:
            session.report(metrics)
    print(f"rank {session.rank} is done", flush=True)  # the worker's own output, not the step's log


@component("test.count", params=CountParams, outputs={"history": "json"}, distributed=True)
def count(ctx: StepContext, params: CountParams) -> dict:
    """A training step: what the training function reported, and the epoch of its last checkpoint."""
    result = ctx.train(count_epochs, params.model_dump())
    ctx.output("history").write_text(json.dumps(result.history))
    state = json.loads((result.checkpoint / "state.json").read_text()) if result.checkpoint else {}
    return {"epochs": len(result.history), "final_value": result.history[-1]["value"],
            "checkpoint_epoch": state.get("epoch", -1)}


class InspectParams(Params):
    raise_error: str = Field("", description="RuntimeError, InputDataError, ResourcesError or KeyboardInterrupt: "
                             "raise it")
    write: bool = Field(True, description="write the declared output")


@component("test.inspect", params=InspectParams, outputs={"report": "json"})
def inspect_step(ctx: StepContext, params: InspectParams) -> dict:
    """Report what a running step sees (its own status, work folder, failure budget); fail on demand."""
    from mmflow.engine import InputDataError
    from mmflow.engine.errors import ResourcesError

    ctx.log("looking around")
    run = ctx._run  # what the runner hands the step, beyond what components use
    seen = {"status": json.loads((run.outputs_dir.parent / "status.json").read_text()),
            "work_dir": run.work_dir.name, "max_failures": run.max_failures, "executor": run.executor.name}
    if params.raise_error:
        error = {"RuntimeError": RuntimeError, "InputDataError": InputDataError, "ResourcesError": ResourcesError,
                 "KeyboardInterrupt": KeyboardInterrupt}[params.raise_error]
        ctx.output("report").write_text("half")
        raise error("boom")
    if params.write:
        ctx.output("report").write_text(json.dumps(seen))
    return {"looked": 1}


class MeetParams(Params):
    folder: str = Field(description="where steps that must run at the same time leave their marks")
    others: int = Field(1, ge=0, description="how many other steps must be running at the same time as this one")
    wait_s: float = Field(10.0, gt=0, description="fail when they have not all come within this time")
    hold_s: float = Field(0.0, ge=0, description="then stay this long")
    then: Literal["finish", "fail", "interrupt"] = Field("finish", description="fail, or interrupt the process (as "
                                                         "Ctrl-C does), once they all came")


def meet_others(folder: str, name: str, others: int, wait_s: float) -> None:
    """Leave a mark named `name` in `folder` and wait for `others` more marks: who left them runs at the same time."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / name).write_text("here")
    deadline = time.monotonic() + wait_s
    while len(list(Path(folder).iterdir())) < others + 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ran alone: {others} other step(s) did not run at the same time")
        time.sleep(0.02)


@component("test.meet", params=MeetParams, inputs={"after": Maybe("text")}, outputs={"mark": "text"})
def meet(ctx: StepContext, params: MeetParams) -> dict:
    """Leave a mark and wait for `others` steps to leave theirs: they run side by side, or this one fails."""
    meet_others(params.folder, ctx.step, params.others, params.wait_s)
    ctx.log(f"met {params.others} other step(s)")
    if params.then == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
    time.sleep(params.hold_s)
    if params.then == "fail":
        raise RuntimeError("injected failure")
    ctx.output("mark").write_text(ctx.step)
    return {"others": params.others}


class ScoreParams(Params):
    by_seed: list[float] = Field(description="the accuracy this step reports with seed i")


@component("test.score", params=ScoreParams, inputs={"after": Maybe("text")},
           outputs={"metrics": "metrics", "seed": "text"}, seeds="each")
def score(ctx: StepContext, params: ScoreParams) -> dict:
    """An evaluation whose result depends only on its seed (a step per seed of the workflow's `seeds:`)."""
    metrics = {"accuracy": params.by_seed[ctx.seed], "seed": ctx.seed}
    ctx.output("metrics").write_text(json.dumps(metrics))
    ctx.output("seed").write_text(str(ctx.seed))
    return metrics


@component("test.best", inputs={"result": "metrics"}, outputs={"best": "text"}, seeds="together")
def best(ctx: StepContext, params: Params) -> dict:
    """Takes every seed's outputs at once, but through a single input: a workflow with `seeds:` is refused."""
    ctx.output("best").write_text(ctx.inputs["result"].read_text())
    return {}
