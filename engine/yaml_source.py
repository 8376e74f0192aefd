"""Read YAML with `yaml.safe_load` and remember the line of every key, so errors can point at it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, WorkflowError

YamlPath = tuple[str | int, ...]


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
        """A Problem located at `path`."""
        return Problem(self.file, self.line_of(path), dotted(path), message)


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
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError([Problem(name, None, "", f"cannot read file: {exc}")]) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> YamlDocument:
    """Parse YAML text that came from `name`."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise WorkflowError([Problem(name, line, "", f"malformed YAML: {problem}")]) from None
    doc = YamlDocument(name, data, text=text)
    problems: list[Problem] = []
    if root is not None:
        _index(root, (), doc.lines, problems, name)
    if problems:
        raise WorkflowError(problems)
    return doc


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
