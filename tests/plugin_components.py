"""Components used only by the tests: tiny, torch-free, and controllable from the outside."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pydantic import Field

from mmflow.engine import Many, Maybe, Params, StepContext, component


class TextParams(Params):
    text: str = Field("hello", description="text to write")


@component("test.text", params=TextParams, outputs={"copy": "text"})
def text(ctx: StepContext, params: TextParams) -> dict:
    """Write `text` to the output."""
    ctx.output("copy").write_text(params.text)
    return {"chars": len(params.text)}


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
