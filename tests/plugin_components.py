"""Components used only by the tests: tiny, torch-free, and controllable from the outside."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path

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


@component("test.join", inputs={"parts": Many("text")}, outputs={"joined": "text"})
def join(ctx: StepContext, params: Params) -> dict:
    """Join the texts of several steps, labelled by step name."""
    parts = [f"{step}={path.read_text()}" for step, path in zip(ctx.sources["parts"], ctx.inputs["parts"], strict=True)]
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


def count_epochs(session: TrainSession, config: dict) -> None:
    """Per worker: report the epoch, a value from the seed and the ranks summed over workers; rank 0
    checkpoints every n-th epoch; a restart continues after the restored checkpoint."""
    import torch

    session.restored()
    for epoch in range(len(session.history), config["epochs"]):
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
