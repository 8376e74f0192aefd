"""Where a run's durable state lives: a local folder or an object store, through pyarrow's filesystems.

A workflow's `storage: s3://bucket/mmflow` (or gs://, hdfs://, abfs://, file://, a plain path)
receives Ray Train's checkpoints directly and a copy of every finished step, so a restart on
another node (`mmflow run --resume <storage URI of the run>`) finds both. pyarrow options go
in the query string (`s3://bucket/x?endpoint_override=host:9000&scheme=http`); credentials
come from the environment as usual for each store.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .errors import StorageError

if TYPE_CHECKING:
    import pyarrow.fs

SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_uri(text: str) -> bool:
    """Whether `text` names a location by scheme (`s3://...`) rather than a plain path."""
    return bool(_SCHEME.match(text))


def check_location(text: str) -> str:
    """The reason `text` cannot be a storage location, or '' (syntax only: nothing is contacted)."""
    match = _SCHEME.match(text)
    if match is None:
        return "" if text.strip() else "is empty"
    if match.group(1).lower() not in SCHEMES:
        return f"scheme '{match.group(1)}://' is not a pyarrow filesystem (use one of {', '.join(SCHEMES)}, or a path)"
    return ""


@dataclass(frozen=True)
class Storage:
    """A folder on a pyarrow filesystem; `uri` names it again (query string kept), for messages and --resume."""

    filesystem: pyarrow.fs.FileSystem
    path: str
    uri: str

    @classmethod
    def open(cls, location: str | Path) -> Storage:
        """Resolve a URI or a local path; raises StorageError when pyarrow cannot open it."""
        import pyarrow.fs

        text = str(location)
        if not is_uri(text):
            local = Path(text).expanduser().resolve()
            return cls(pyarrow.fs.LocalFileSystem(), local.as_posix(), local.as_uri())
        try:
            filesystem, path = pyarrow.fs.FileSystem.from_uri(text)
        except (ValueError, OSError) as exc:  # pyarrow.ArrowInvalid is a ValueError
            raise StorageError(f"storage {text}: {exc}") from exc
        return cls(filesystem, path.rstrip("/"), text)

    @property
    def is_local(self) -> bool:
        """Whether this is a folder on this machine's own filesystem."""
        import pyarrow.fs

        return isinstance(self.filesystem, pyarrow.fs.LocalFileSystem)

    def joinpath(self, *parts: str) -> Storage:
        """The sub-folder `parts` below this one."""
        base, sep, query = self.uri.partition("?")
        return Storage(self.filesystem, posixpath.join(self.path, *parts),
                       posixpath.join(base, *parts) + sep + query)

    def exists(self) -> bool:
        """Whether a file or folder is there."""
        import pyarrow.fs

        with self._reaching():
            return self.filesystem.get_file_info(self.path).type != pyarrow.fs.FileType.NotFound

    def folders(self) -> list[str]:
        """Names of the sub-folders, sorted (none if this folder does not exist)."""
        import pyarrow.fs

        with self._reaching():
            selector = pyarrow.fs.FileSelector(self.path, allow_not_found=True)
            return sorted(posixpath.basename(i.path) for i in self.filesystem.get_file_info(selector)
                          if i.type == pyarrow.fs.FileType.Directory)

    def upload(self, local: Path, last: str | None = None) -> None:
        """Copy a local file or folder (its contents) here, replacing what was there; a folder's file
        named `last` is copied after all others (a reader may take it as the mark of a complete copy)."""
        import pyarrow.fs

        local = local.resolve()
        files = [local] if local.is_file() else sorted((p for p in local.rglob("*") if p.is_file()),
                                                       key=lambda p: p.name == last)
        with self._reaching():
            self.delete()
            if local.is_dir():
                self.filesystem.create_dir(self.path)
            for file in files:
                target = self.path if file == local else posixpath.join(self.path, *file.relative_to(local).parts)
                self.filesystem.create_dir(posixpath.dirname(target))
                pyarrow.fs.copy_files(file.as_posix(), target, source_filesystem=pyarrow.fs.LocalFileSystem(),
                                      destination_filesystem=self.filesystem)

    def download(self, local: Path) -> None:
        """Copy this file or folder (its contents) to a local path."""
        import pyarrow.fs

        with self._reaching():
            if self.filesystem.get_file_info(self.path).type == pyarrow.fs.FileType.Directory:
                local.mkdir(parents=True, exist_ok=True)
            else:
                local.parent.mkdir(parents=True, exist_ok=True)
            pyarrow.fs.copy_files(self.path, local.resolve().as_posix(), source_filesystem=self.filesystem,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())

    def copy_to(self, target: Storage) -> None:
        """Copy this folder's contents to `target` (same or another filesystem), replacing it."""
        import pyarrow.fs

        with self._reaching():
            target.delete()
            target.filesystem.create_dir(target.path)
            pyarrow.fs.copy_files(self.path, target.path, source_filesystem=self.filesystem,
                                  destination_filesystem=target.filesystem)

    def delete(self) -> None:
        """Remove this file or folder if it exists."""
        import pyarrow.fs

        with self._reaching():
            kind = self.filesystem.get_file_info(self.path).type
            if kind == pyarrow.fs.FileType.Directory:
                self.filesystem.delete_dir(self.path)
            elif kind == pyarrow.fs.FileType.File:
                self.filesystem.delete_file(self.path)

    def read_text(self) -> str | None:
        """The text of this file, or None if there is none."""
        if not self.exists():
            return None
        with self._reaching(), self.filesystem.open_input_stream(self.path) as stream:
            return stream.read().decode("utf-8")

    def write_text(self, text: str) -> None:
        """Write this file (whole; object stores show it only once complete)."""
        with self._reaching():
            self.filesystem.create_dir(posixpath.dirname(self.path))
            with self.filesystem.open_output_stream(self.path) as stream:
                stream.write(text.encode("utf-8"))

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Name the location in what goes wrong on the way (network, credentials, permissions)."""
        try:
            yield
        except OSError as exc:
            raise StorageError(f"storage {self.uri}: {exc}") from exc

    def __str__(self) -> str:
        return self.uri
