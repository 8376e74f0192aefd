"""A run directory that only the driver's node has (a cluster without a shared filesystem).

Ray workers and tasks on other nodes get the driver's paths. Inputs they lack are fetched from
the run's storage to those same paths (`StepInputs`); files a task writes into a folder its node
does not have are written to a stand-in and shipped back for the driver to write
(`node_folder`, `write_shipped`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import StorageError
from .storage import Storage


@dataclass(frozen=True)
class StepInputs:
    """A step's inputs as paths relative to its run directory, each with the storage URI of its copy:
    a node without the run directory (no shared filesystem) fetches them from there."""

    run_dir: str
    stored: tuple[tuple[str, str], ...]  # (path relative to the run directory, URI of its stored copy)

    @property
    def paths(self) -> tuple[str, ...]:
        """The inputs' paths relative to the run directory."""
        return tuple(relative for relative, _ in self.stored)

    def ensure_local(self) -> None:
        """Copy every input this node lacks from the storage to the path the step was given."""
        for relative, uri in self.stored:
            local = Path(self.run_dir, relative)
            if local.exists():
                continue
            source = Storage.open(uri)
            if not source.exists():
                raise StorageError(f"{local}: not on node {socket.gethostname()}, nor in the storage ({source})")
            partial = local.with_name(f".{local.name}.fetching-{os.getpid()}")
            try:
                partial.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"{local}: not on node {socket.gethostname()} and cannot be copied there from "
                                   f"{source} ({exc}); give --runs-root a folder every node may write") from exc
            source.download(partial)
            try:
                partial.rename(local)
            except OSError:  # another worker on this node fetched it first
                shutil.rmtree(partial) if partial.is_dir() else partial.unlink()


@contextlib.contextmanager
def node_folder(folder: Path) -> Iterator[tuple[Path, dict[str, bytes]]]:
    """`folder` where this node has it; else a temporary stand-in whose files, after the block, are in
    the dict (path relative to the folder -> bytes) for the driver to write with `write_shipped`."""
    shipped: dict[str, bytes] = {}
    if folder.is_dir():
        yield folder, shipped
        return
    with tempfile.TemporaryDirectory(prefix="mmflow-output-") as stand_in:
        yield Path(stand_in), shipped
        shipped.update({p.relative_to(stand_in).as_posix(): p.read_bytes()
                        for p in Path(stand_in).rglob("*") if p.is_file()})


def write_shipped(folder: Path, shipped: dict[str, bytes]) -> None:
    """Write the files a task on another node shipped back (see `node_folder`) under `folder`."""
    for relative, data in shipped.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
