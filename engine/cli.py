"""`mmflow` command line: run, sweep, validate, graph, schema, report, components, workflows, doctor.

User mistakes print one line per problem and exit 2; a failing step exits 1. `validate`,
`schema`, `graph` and `components` never import torch or Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
import typing
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel

from .choices import ChoiceField
from .errors import Interrupted, StepFailed, UsageError, WorkflowError, did_you_mean
from .graph import edges_of
from .registry import REGISTRY
from .shipped import copy_workflow, description_of, shipped_workflows, workflow_file
from .spec import Workflow, load_workflow
from .tracking import tracking_overrides


EXAMPLES = """examples:
  mmflow workflows                          the shipped workflows, one line each
  mmflow run quickstart                     run a shipped workflow by name, from any folder
  mmflow workflows copy cg_mnist_pmr .      copy one to edit
  mmflow validate my.yaml --set steps.train.params.lr=0.01
  mmflow run my.yaml --dry-run              which steps would run and which come from the cache
  mmflow run my.yaml --only eval            one step; what it reads comes from earlier runs (--from, --to, --tags)
  mmflow run --resume runs/my/20261201-101500-ab12
  mmflow run cg_mnist_pmr --seeds 0,1,2     each training once per seed, side by side; compare shows mean ± std
  mmflow sweep sweep_pmr                    a Ray Tune sweep from the file's sweep: section
  mmflow sweep quickstart --grid steps.train.params.lr=0.1,0.01 --metric eval.accuracy
  mmflow run my.yaml --name lr-0.01 --set steps.train.params.lr=0.01
  mmflow runs                               past runs: id, name, state, time, overrides, result
  mmflow runs compare lr-0.01 20261201-101500-ab12
  mmflow report runs/my/20261201-101500-ab12
  mmflow components train.classifier        a component's inputs, outputs and params (methods with theirs)
  mmflow components --table method          every balancing method as a markdown table
  mmflow doctor                             what works in this environment

Each command has its own --help."""

OVERSUBSCRIBE = ("let the local Ray count more CPUs than this machine has, so that every worker a step asks for "
                 "starts (default: a step that needs more fails at once)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mmflow` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if getattr(args, "workflow", None):
            args.workflow = workflow_file(args.workflow)
        if getattr(args, "max_parallel_steps", None) is not None:
            args.overrides.append(f"max_parallel_steps={args.max_parallel_steps}")
        if getattr(args, "seeds", None):
            args.overrides.append(f"seeds=[{args.seeds}]")
        if getattr(args, "tracking", None):
            args.overrides += tracking_overrides(args.tracking)
        if getattr(args, "grid", None) or getattr(args, "metric", None):
            args.overrides += grid_overrides(args.grid, args.metric)
        return args.handler(args)
    except (WorkflowError, UsageError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except StepFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.user_error else 1
    except KeyboardInterrupt as exc:  # the run and its step are marked interrupted; --resume continues them
        Interrupted.pending = None  # it reached us
        print("interrupted", file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)
    except BrokenPipeError:  # `mmflow graph wf.yaml | head`: the reader left, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a path that is a file, a folder not there, a read-only or full disk
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def describe_os_error(exc: OSError) -> str:
    """One line for a filesystem error: the path(s), then what the system said."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or str(exc)
    return f"{paths}: {reason}" if paths else reason


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: unwind the run (steps marked interrupted, its local Ray stopped); a second
    signal while that happens stops the process at once."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    Interrupted.pending = signum
    raise Interrupted(signum)


def _parser() -> argparse.ArgumentParser:
    from .doctor import DISTRIBUTION, version

    parser = argparse.ArgumentParser(prog="mmflow", description=__doc__.splitlines()[0], epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mmflow {version()} ({DISTRIBUTION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def workflow_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
        p.add_argument("workflow", nargs="?" if optional else None,
                       help="workflow YAML file, or the name of a shipped one (mmflow workflows)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                       help="override a value, e.g. --set steps.train.params.lr=0.01 (repeatable)")
        p.add_argument("--seeds", metavar="S1,S2,...", help="run the steps that depend on the seed once per seed, "
                       "e.g. 0,1,2 (the workflow's seeds:); comparisons show mean ± std")

    def parallel_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-parallel-steps", type=int, metavar="N", help="run at most N steps at once (the "
                       "workflow's max_parallel_steps; default: every ready step the executor has room for)")

    def tracking_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tracking", metavar="WHERE", help="track metrics, params and the workflow: tensorboard (event "
                       "files in the run folder), mlflow=URI (e.g. sqlite:///mlflow.db), experiment=NAME, or none; "
                       "comma-separated (the workflow's tracking: section, overridden)")

    run = add("run", _cmd_run, "run a workflow")
    workflow_args(run, optional=True)
    run.add_argument("--run-dir", type=Path, help="run directory (default runs/<workflow>/<run-id>)")
    run.add_argument("--runs-root", type=Path, default=Path("runs"),
                     help="where runs live and cached steps are looked up (default ./runs)")
    run.add_argument("--resume", metavar="RUN_DIR", help="finish a failed run in RUN_DIR, or the run at a storage "
                     "URI (s3://.../<workflow>/<run-id>: copied into the runs root first)")
    run.add_argument("--dry-run", action="store_true", help="print the plan and cached steps; run nothing")
    run.add_argument("--verify", action="store_true", help="reuse a finished step only if every output's SHA-256 "
                     "is as recorded (default: sizes and modification times as recorded, else the SHA-256)")
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    run.add_argument("--oversubscribe", action="store_true", help=OVERSUBSCRIBE)
    parallel_arg(run)
    tracking_arg(run)
    run.add_argument("--only", metavar="STEP[,STEP]", help="run only these steps; what they read comes from earlier "
                     "runs (the cache)")
    run.add_argument("--from", dest="start", metavar="STEP", help="run STEP and the steps downstream of it")
    run.add_argument("--to", dest="stop", metavar="STEP", help="run STEP and the steps upstream of it")
    run.add_argument("--tags", metavar="TAG[,TAG]", help="run the steps with any of these tags (a step's tags:)")
    run.add_argument("--name", help="a name for the run, to find it by in mmflow runs (its id stays the folder's name)")
    loudness = run.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="print only errors and the summary (run.log "
                          "in the run folder still has every line)")
    loudness.add_argument("-v", "--verbose", action="store_true", help="also Ray's own informational logs and notices")

    sweep = add("sweep", _cmd_sweep, "run the workflow's sweep: section with Ray Tune")
    workflow_args(sweep)
    sweep.add_argument("--runs-root", type=Path, default=Path("runs"),
                       help="where the sweep's folder goes and cached steps are looked up (default ./runs)")
    sweep.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    sweep.add_argument("--oversubscribe", action="store_true", help=OVERSUBSCRIBE)
    parallel_arg(sweep)
    tracking_arg(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="PATH=V1,V2",
                       help="sweep these values without editing the file, e.g. --grid steps.train.params.lr=0.1,0.01 "
                       "(repeatable; added to the file's sweep: section, or makes one)")
    sweep.add_argument("--metric", metavar="STEP.METRIC", help="the metric that ranks the trials, e.g. eval.accuracy "
                       "(needed with --grid when the file has no sweep: section)")

    runs = add("runs", _cmd_runs, "list past runs, show one, or compare several side by side")
    runs.add_argument("what", nargs="*", metavar="[WORKFLOW] | show RUN | compare RUN RUN...",
                      help="no argument: every run; a workflow name: its runs; show RUN: its steps, changed values "
                      "and metrics; compare RUN RUN...: one table, a column per run (RUN: a folder, id or --name)")
    runs.add_argument("--runs-root", type=Path, default=Path("runs"), help="where the runs are (default ./runs)")
    runs.add_argument("--all", action="store_true", help="compare: every numeric metric, not only the headline ones")

    validate = add("validate", _cmd_validate, "check a workflow file and report every problem")
    workflow_args(validate)

    graph = add("graph", _cmd_graph, "print the step graph")
    workflow_args(graph)
    graph.add_argument("--format", choices=["text", "mermaid"], default="text")

    schema = add("schema", _cmd_schema, "print the JSON Schema of workflow files (for editors)")
    schema.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")

    report = add("report", _cmd_report, "plot per-epoch metrics of runs by family (every modality on one axis), "
                 "a side-by-side results table, report.md and a self-contained report.html")
    report.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run folders (a sweep folder stands for its trials)")
    report.add_argument("-o", "--output", type=Path,
                        help="folder for the figures, report.md and report.html (default RUN_DIR/report)")

    components = add("components", _cmd_components, "list registered components and their params")
    components.add_argument("name", nargs="?", help="show one component")
    components.add_argument("--json", action="store_true", help="machine-readable output")
    components.add_argument("--table", metavar="KIND", help="a markdown table of the alternatives a params field "
                            "picks by name, e.g. method or fusion (with their capabilities and params)")

    workflows = add("workflows", _cmd_workflows, "list the workflows mmflow ships, or copy one to edit")
    workflows_sub = workflows.add_subparsers(dest="workflows_command", metavar="copy")
    copy = workflows_sub.add_parser("copy", help="write a shipped workflow to a file to edit",
                                    description="write a shipped workflow to a file to edit")
    copy.add_argument("name", help="a shipped workflow (mmflow workflows lists them)")
    copy.add_argument("destination", nargs="?", type=Path,
                      help="a file, or a folder for NAME.yaml (default ./NAME.yaml)")
    copy.add_argument("--force", action="store_true", help="overwrite the destination if it exists")

    add("doctor", _cmd_doctor, "check this environment: dependency versions, Ray, CUDA, audio and video decoding")
    return parser


def _cmd_runs(args: argparse.Namespace) -> int:
    from .runs import compare_runs, find_runs, list_runs, resolve_run, show_run

    command, *rest = args.what or [""]
    if command == "show" and len(rest) == 1:
        print(show_run(resolve_run(args.runs_root, rest[0])))
    elif command == "compare" and len(rest) >= 2:
        print(compare_runs([resolve_run(args.runs_root, r) for r in rest], args.all))
    elif command in ("show", "compare") or len(args.what) > 1:
        raise UsageError("mmflow runs: give nothing or a workflow name (a listing), show RUN, or compare RUN RUN...")
    else:
        runs = find_runs(args.runs_root, command or None)
        if not runs:
            where = f"of workflow '{command}' " if command else ""
            raise UsageError(f"no runs {where}in {args.runs_root} (--runs-root names another folder)")
        print(list_runs(runs))
    return 0


def _cmd_workflows(args: argparse.Namespace) -> int:
    if args.workflows_command == "copy":
        target = copy_workflow(args.name, args.destination, args.force)
        print(f"wrote {target}; run it with: mmflow run {target}")
        return 0
    shipped = shipped_workflows()
    width = max(map(len, shipped), default=0)
    for name, path in shipped.items():
        print(f"{name.ljust(width)}  {description_of(path)}")
    print("\nrun one by name (mmflow run quickstart), or copy it to edit: mmflow workflows copy NAME [DEST]")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose

    header, findings = diagnose()
    print(header)
    for finding in findings:
        print(finding)
    failed = sum(not f.ok for f in findings)
    print(f"{failed} problem(s) found" if failed else "everything mmflow needs works here")
    return 1 if failed else 0


def _cmd_validate(args: argparse.Namespace) -> int:
    wf = load_workflow(args.workflow, args.overrides)
    print(f"{args.workflow}: ok ({len(wf.steps)} steps: {' -> '.join(wf.order)})")
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    wf = load_workflow(args.workflow, args.overrides)
    print(render_graph(wf, args.format))
    return 0


def render_graph(wf: Workflow, fmt: str) -> str:
    """The workflow's steps and wiring as indented text or a mermaid flowchart."""
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        for name in wf.order:
            lines.append(f'    {name}["{name}<br/><small>{wf.steps[name].component.name}</small>"]')
        for name in wf.order:
            for input_name, wiring in wf.steps[name].inputs.items():
                for edge in edges_of(wiring):
                    label = edge.output if edge.output == input_name else f"{edge.output} → {input_name}"
                    lines.append(f"    {edge.step} -->|{label}| {name}")
        return "\n".join(lines)
    lines = [f"{wf.name}  (executor {wf.spec.executor}, {wf.spec.resources.workers} worker(s))"]
    for name in wf.order:
        step = wf.steps[name]
        lines.append(f"  {name}  [{step.component.name}]")
        for input_name, wiring in step.inputs.items():
            sources = ", ".join(f"{e.step}.{e.output}" for e in edges_of(wiring))
            lines.append(f"      {input_name} <- {sources}")
    return "\n".join(lines)


def _cmd_schema(args: argparse.Namespace) -> int:
    from .schema import workflow_schema

    text = json.dumps(workflow_schema(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    out = args.output or args.run_dirs[0] / "report"
    written, why = write_report(args.run_dirs, out)
    print(f"wrote {len(written) - 2} figure(s), {out / 'report.md'} and {out / 'report.html'}"
          + (f": {why}" if why else ""))
    return 0


def _cmd_components(args: argparse.Namespace) -> int:
    if args.table:
        print(choice_table(args.table))
        return 0
    names = REGISTRY.names()
    if args.name:
        if args.name not in names:
            raise UsageError(f"unknown component '{args.name}'{REGISTRY.suggest(args.name)}")
        names = [args.name]
    described = [_describe(name) for name in names]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for comp in described:
        ins = ", ".join(f"{k}: {v}" for k, v in comp["inputs"].items()) or "-"  # Many prints as "list of kind"
        outs = ", ".join(f"{k}: {v}" for k, v in comp["outputs"].items()) or "-"
        print(f"{comp['name']}  (v{comp['version']})  {comp['description']}")
        print(f"    inputs: {ins}    outputs: {outs}")
        _print_params(comp["params"], "    ")
    return 0


def _print_params(params: list[dict[str, Any]], indent: str) -> None:
    for p in params:
        default = "required" if p["required"] else f"default {_shown(p['default'])}"
        print(f"{indent}{p['name']}: {p['type']} ({default}){'  ' + p['description'] if p['description'] else ''}")
        _print_params(p.get("fields", []), indent + "    ")
        for choice in p.get("choices", []):
            print(f"{indent}  - {choice['name']}: {choice['description']}")
            _print_params([q for q in choice["params"] if q["name"] != "name"], indent + "      ")


def _shown(default: Any) -> Any:
    """A choice's default params show as its name."""
    return default["name"] if isinstance(default, dict) and list(default) == ["name"] else default


def _describe(name: str) -> dict[str, Any]:
    comp = REGISTRY.get(name)
    assert comp is not None
    return {"name": comp.name, "version": comp.version, "description": comp.description,
            "inputs": {k: str(v) for k, v in comp.inputs.items()}, "outputs": comp.outputs,
            "params": _describe_params(comp.params)}


def _describe_params(model: type) -> list[dict[str, Any]]:
    params = []
    for field_name, info in model.model_fields.items():
        described = {
            "name": field_name,
            "type": _type_name(info.annotation),
            "required": info.is_required(),
            "default": None if info.is_required() else _jsonable(info.get_default(call_default_factory=True)),
            "description": info.description or "",
        }
        nested = _nested_model(info.annotation)
        if nested is not None:
            described["fields"] = _describe_params(nested)
        if isinstance(info.annotation, ChoiceField):
            described["choices"] = [{"name": c.name, "description": c.description, "capabilities": dict(c.capabilities),
                                     "params": _describe_params(c.params)}
                                    for c in info.annotation.table.choices(info.annotation.where)]
        params.append(described)
    return params


def choice_table(what: str) -> str:
    """A markdown table of every registered alternative of kind `what` that some component's params pick from."""
    tables = {field.annotation.table.what: field.annotation.table for name in REGISTRY.names()
              for field in REGISTRY.get(name).params.model_fields.values() if isinstance(field.annotation, ChoiceField)}
    if what not in tables:
        raise UsageError(f"no params field picks a '{what}'{did_you_mean(what, tables)} (kinds: {', '.join(tables)})")
    rows = ["| name | what it is | capabilities | params (defaults) |", "| --- | --- | --- | --- |"]
    for choice in tables[what].choices():
        capabilities = ", ".join(f"{k}: {json.dumps(v)}" for k, v in choice.capabilities.items())
        params = ", ".join(f"`{p['name']}` {json.dumps(p['default']) if not p['required'] else '(required)'}"
                           for p in _describe_params(choice.params) if p["name"] != "name") or "–"
        rows.append(f"| `{choice.name}` | {choice.description} | {capabilities} | {params} |")
    return "\n".join(rows)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The params model a field holds (`Model`, `list[Model]`, `Model | None`, ...), whose fields are shown."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_nested_model, typing.get_args(annotation))), None)


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or _QUALIFIER.sub(r"\1", str(annotation))  # list[pkg.module.Model] -> list[Model]


_QUALIFIER = re.compile(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _cmd_run(args: argparse.Namespace) -> int:
    from .console import NORMAL, QUIET, VERBOSE, RunConsole
    from .executor import ExecutorSettings
    from .mirror import fetch_run
    from .run_folder import check_run_dir, new_run_dir, resume_workflow
    from .runner import Runner
    from .selection import select_steps
    from .storage import Storage, is_uri

    if args.resume:
        if args.run_dir:
            raise UsageError("--resume RUN_DIR already names the run directory; drop --run-dir")
        run_dir = fetch_run(Storage.open(args.resume), args.runs_root) if is_uri(args.resume) else Path(args.resume)
        wf = resume_workflow(run_dir, args.overrides)
    elif args.workflow:
        wf = load_workflow(args.workflow, args.overrides)
        if args.run_dir:
            check_run_dir(args.run_dir, wf.name)
        run_dir = args.run_dir or new_run_dir(args.runs_root, wf.name)
    else:
        raise UsageError("mmflow run: give a workflow file, or --resume RUN_DIR")
    selection = select_steps(wf, _names(args.only), args.start, args.stop, _names(args.tags))
    console = RunConsole(verbosity=QUIET if args.quiet else VERBOSE if args.verbose else NORMAL)
    runner = Runner(wf, run_dir, args.runs_root, verify=args.verify, echo=console.line,
                    settings=ExecutorSettings(args.address, args.oversubscribe, args.verbose), name=args.name,
                    hooks=[console], selection=selection)
    if args.dry_run:
        print(f"plan for {wf.name} in {run_dir}:")
        for entry in runner.plan():
            detail = f"  ({entry.source})" if entry.source else ""
            print(f"  {entry.action:7s} {entry.name}{detail}")
        return 0
    stored = f" (storage: {runner.storage})" if runner.storage else ""
    console.line(f"run {wf.name} -> {run_dir}{stored}")
    try:
        runner.run()  # the console prints the summary
    except (StepFailed, KeyboardInterrupt):
        print(f"resume with: mmflow run --resume {run_dir}", file=sys.stderr)
        if runner.storage is not None:
            print(f"  or, on another machine: mmflow run --resume '{runner.storage}'", file=sys.stderr)
        raise
    finally:
        console.close()
    return 0


def grid_overrides(grids: list[str], metric: str | None) -> list[str]:
    """`--grid PATH=V1,V2` (and `--metric`) as overrides of the sweep: section; each value parsed as YAML."""
    overrides = [f"sweep.metric={metric}"] if metric else []
    for grid in grids:
        path, sep, values = grid.partition("=")
        if not sep or not path.strip() or not values.strip():
            raise UsageError(f"--grid {grid!r}: expected PATH=V1,V2,..., e.g. steps.train.params.lr=0.1,0.01")
        listed = ", ".join(v.strip() for v in values.split(","))
        overrides.append(f"sweep.parameters[{path.strip()}]={{grid: [{listed}]}}")
    return overrides


def _names(given: str | None) -> list[str]:
    """`a,b` -> ['a', 'b']."""
    return [name.strip() for name in (given or "").split(",") if name.strip()]


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .console import SweepConsole
    from .executor import ExecutorSettings
    from .tune import run_sweep

    wf = load_workflow(args.workflow, args.overrides)
    if wf.spec.sweep is None:
        raise UsageError(f"{args.workflow}: no sweep: section to run (mmflow run runs the workflow once)")
    sweep = wf.spec.sweep
    console = SweepConsole([sweep.metric, *([sweep.scheduler.metric] if sweep.scheduler.metric else [])])
    started = time.perf_counter()
    try:
        sweep_dir, table, best = run_sweep(wf, args.runs_root, console, ExecutorSettings(args.address,
                                                                                         args.oversubscribe))
        console.result(table)
        console.result(f"finished in {time.perf_counter() - started:.1f}s; results: {sweep_dir / 'results.csv'}")
        if best is not None:
            console.result(f"best: {best.name} {sweep.metric}={best.metrics[sweep.metric]:.6g}; "
                           f"run it with: mmflow run {sweep_dir / 'best.yaml'}")
    finally:
        console.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
