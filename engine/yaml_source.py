"""Read YAML with `yaml.safe_load` and remember the line of every key, so errors can point at it.

A workflow file is trusted not to run code, not to be benign: before anything is built from it, one
pass over its parse events bounds its size, its nesting and what its aliases expand to (a 2 KB
"billion laughs" file expands to 10^9 nodes), refuses recursive aliases and numbers too long to
convert, so a hostile file is a one-line error in bounded time and memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, UsageError, WorkflowError

YamlPath = tuple[str | int, ...]

MAX_BYTES = 4 << 20  # a workflow is a few KB
MAX_DEPTH = 64  # mappings and lists inside each other; workflows need fewer than 10
MAX_NODES = 100_000  # values after expanding every alias
MAX_NUMBER_CHARS = 40
LARGEST_NUMBER = 2**53  # no count, size or rate a workflow sets is larger; beyond it floats lose integers
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


@dataclass
class YamlDocument:
    """A parsed YAML file plus the 1-based line of each path in it."""

    file: str
    data: Any
    lines: dict[YamlPath, int] = field(default_factory=dict)
    text: str = ""  # the source, as read (run folders keep a copy)
    overrides: dict[YamlPath, str] = field(default_factory=dict)  # path -> the --set that wrote it

    def line_of(self, path: YamlPath) -> int | None:
        """Line of `path`, or of its nearest ancestor that exists in the file."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def problem(self, path: YamlPath, message: str) -> Problem:
        """A Problem located at `path`: its line, or the `--set` that wrote it."""
        for end in range(len(path), 0, -1):
            expr = self.overrides.get(tuple(str(p) for p in path[:end]))
            if expr is not None:
                return Problem(f"{self.file} (--set {shorten(expr)})", None, dotted(path), message)
        return Problem(self.file, self.line_of(path), dotted(path), message)


def shorten(text: str, limit: int = 80) -> str:
    """`text`, cut to `limit` characters with '...' (a command-line value echoed in an error)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dotted(path: YamlPath) -> str:
    """`('steps', 'train', 'params', 'lr')` -> `steps.train.params.lr`; list indices as `[i]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_yaml(path: str | Path) -> YamlDocument:
    """Parse a YAML file safely; malformed YAML and duplicate keys raise WorkflowError."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise WorkflowError([Problem(name, None, "", f"file is larger than {MAX_BYTES >> 20} MB")])
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError([Problem(name, None, "", f"cannot read file: {exc}")]) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> YamlDocument:
    """Parse YAML text that came from `name`."""
    try:
        _check_events(text, name)
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise WorkflowError([_malformed(exc, name)]) from None
    doc = YamlDocument(name, data, text=text)
    problems: list[Problem] = []
    if root is not None:
        _index(root, (), doc.lines, problems, name)
    if problems:
        raise WorkflowError(problems)
    return doc


def parse_value(text: str, name: str) -> Any:
    """One value written on the command line (`--set path=VALUE`), parsed as YAML within the same bounds
    as a file; text that is not valid YAML is taken as a string."""
    try:
        _check_events(text, name)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        if isinstance(exc, _TooLarge):
            raise WorkflowError([Problem(name, None, "", exc.problem)]) from None
        return text


class _TooLarge(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark, problem: str) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


def _malformed(exc: yaml.YAMLError, name: str) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return Problem(name, line, "", problem if isinstance(exc, _TooLarge) else f"malformed YAML: {problem}")


def _check_events(text: str, name: str) -> None:
    """Raise _TooLarge at the first place `text` nests too deep, expands too far or holds a number too long.

    Works on parse events, which PyYAML produces without recursion and before any alias is expanded.
    """
    if len(text) > MAX_BYTES:
        raise _TooLarge(yaml.Mark(name, 0, 0, 0, None, None), f"more than {MAX_BYTES >> 20} MB of YAML")
    resolver = yaml.resolver.Resolver()
    expanded: dict[str, int] = {}  # anchor -> values it stands for
    open_nodes: list[list[Any]] = [[None, 0]]  # [anchor, values so far] per open mapping or list
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        size = None
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_nodes):
                raise _TooLarge(event.start_mark, f"recursive alias '*{event.anchor}' (it refers to itself)")
            size = expanded.get(event.anchor, 1)  # an unknown anchor is the composer's error
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if len(event.value) > MAX_NUMBER_CHARS and event.implicit[0] and \
                    resolver.resolve(yaml.ScalarNode, event.value, event.implicit) in _NUMBER_TAGS:
                raise _TooLarge(event.start_mark, f"number of {len(event.value)} characters is too long")
            if event.anchor:
                expanded[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) > MAX_DEPTH:
                raise _TooLarge(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
            open_nodes.append([event.anchor, 1])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = open_nodes.pop()
            if anchor:
                expanded[anchor] = size
        if size is not None:
            open_nodes[-1][1] += size
            if open_nodes[-1][1] > MAX_NODES:
                raise _TooLarge(event.start_mark, f"more than {MAX_NODES} values once aliases are expanded")


def value_problems(doc: YamlDocument) -> list[Problem]:
    """Numbers no workflow means: infinities, NaN, and magnitudes beyond 2^53 (each at its line)."""
    problems = []
    pending: list[tuple[YamlPath, Any]] = [((), doc.data)]
    while pending:  # shared (aliased) values are visited once per use: the event check bounds that
        path, value = pending.pop()
        if isinstance(value, dict):
            pending += [(path + (k,), v) for k, v in value.items()]
        elif isinstance(value, list):
            pending += [(path + (i,), v) for i, v in enumerate(value)]
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(doc.problem(path, f"expected a finite number (got {value})"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > LARGEST_NUMBER:
            problems.append(doc.problem(path, f"number too large: {value:.3g} (at most 2^53 in magnitude)"))
    return problems


def _index(node: yaml.Node, path: YamlPath, lines: dict, problems: list[Problem], name: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    Problem(name, line, dotted(path + (key,)),
                            f"duplicate key '{key}' (first defined at line {seen[key]})")
                )
                continue
            seen[key] = line
            lines[path + (key,)] = line
            _index(value_node, path + (key,), lines, problems, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, path + (i,), lines, problems, name)


_PLAIN, _BRACKETED = r"[^.\[\]=]+", r"\[[^\[\]]+\]"
_PART = rf"(?:{_PLAIN}|{_BRACKETED})"
_OVERRIDE_PATH = re.compile(rf"^{_PART}(?:\.{_PLAIN}|\.?{_BRACKETED})*$")  # a.b[c.d].e


def apply_overrides(doc: YamlDocument, overrides: list[str]) -> None:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to the document in place. A part may be a list index
    (`modalities.0.signal=3`); a key with dots is matched as it stands (`sweep.parameters.steps.train.params.lr.grid`
    where `steps.train.params.lr` is a key), or written in brackets (`sweep.parameters[steps.train.params.lr]`)."""
    if doc.data is None:
        doc.data = {}
    for expr in overrides:
        key, sep, raw = expr.partition("=")
        key = key.strip()
        if not sep or not _OVERRIDE_PATH.match(key):
            raise UsageError(f"--set {shorten(expr)!r}: expected PATH=VALUE, e.g. steps.train.params.lr=0.01")
        parts = [p[1:-1] if p.startswith("[") else p for p in re.findall(_PART, key)]
        value = parse_value(raw, f"{doc.file} (--set {shorten(expr)})")
        node, path = doc.data, []
        while True:
            part, taken = _next_key(node, parts)
            parts = parts[taken:]
            where = ".".join(str(p) for p in [*path, part])
            if isinstance(node, list):
                if not (isinstance(part, int) and -len(node) <= part < len(node)):
                    raise UsageError(f"--set {shorten(expr)!r}: '{where}': the list has {len(node)} item(s)")
                part %= len(node)  # -1: the last item, as the YAML paths of errors count
            elif not isinstance(node, dict):
                raise UsageError(f"--set {shorten(expr)!r}: '{'.'.join(map(str, path))}' is not a mapping or a list")
            path.append(part)
            if not parts:
                node[part] = value
                break
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]
        doc.overrides[tuple(path)] = expr


def _next_key(node: Any, parts: list[str]) -> tuple[str | int, int]:
    """The key `parts` start with in `node`, and how many parts it takes: a list index; else the longest run of parts
    that is a key as it stands (keys with dots); else one part."""
    if isinstance(node, list):
        return (int(parts[0]) if re.fullmatch(r"-?\d+", parts[0]) else parts[0]), 1
    if isinstance(node, dict):
        for taken in range(len(parts), 1, -1):
            if ".".join(parts[:taken]) in node:
                return ".".join(parts[:taken]), taken
    return parts[0], 1
