"""Atomic file writes: a reader never sees a half-written file, and a failure leaves none.

A failed write raises :class:`WriteError` (an ``OSError``) whose message names the file and
the operating system's reason, e.g. ``cannot write out/last.ckpt: File too large``.
"""

import contextlib
import errno
import os
import re
import resource
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Union

PathLike = Union[str, os.PathLike]

# temporary files are ".<target name>.<8 random characters>.tmp" beside their target
_TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


class WriteError(OSError):
    """A file that could not be written; the message names the file and the OS error."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _write_error(error: OSError, path: Path) -> WriteError:
    return WriteError(error.errno, error.strerror, str(path))


def _file_system_limit(tmp: Path) -> Optional[OSError]:
    """The OS error behind a failed write that a library reported without it (torch does),
    when the file has reached the file-size limit or the disk is full; else None."""
    try:
        size = tmp.stat().st_size
        soft_limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft_limit != resource.RLIM_INFINITY and size >= soft_limit:
            return OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        disk = os.statvfs(tmp.parent)
        if (disk.f_bfree if os.geteuid() == 0 else disk.f_bavail) == 0:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        pass
    return None


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    For writers that want a file name rather than a file object (torch.save,
    torch.package, AOTInductor). On any exception the temporary file is removed and
    ``path`` is left as it was; a failure to write raises :class:`WriteError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileExistsError as err:  # mkdir met a file where a directory should be
        raise WriteError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from err
    except OSError as err:
        raise _write_error(err, path) from err
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates files readable by their owner only; give the result the usual permissions
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
        yield tmp
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as err:
        # errors of the temporary file (or without a file: a failed write) are this write's
        if err.filename not in (None, str(tmp)):
            raise
        raise _write_error(err, path) from err
    except Exception as err:
        cause = _file_system_limit(tmp)
        if cause is None:
            raise
        raise _write_error(cause, path) from err
    finally:
        if tmp.exists():
            tmp.unlink()


class _RecordingFile:
    """A file object that keeps the OSError of a failed write: torch.save turns it into a
    RuntimeError that says nothing of the cause."""

    def __init__(self, file):
        self._file = file
        self.error: Optional[OSError] = None

    def write(self, data):
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name):
        return getattr(self._file, name)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file for writing that replaces ``path`` when closed cleanly."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes files: mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            recording = _RecordingFile(f)
            try:
                yield recording
            except Exception as err:
                if recording.error is None:
                    raise
                raise _write_error(recording.error, Path(path)) from err
            f.flush()
            os.fsync(f.fileno())


def check_output_dir(path: PathLike) -> Path:
    """``path`` as a Path, after refusing one that is a file or lies under one (ValueError), so
    that a run meant to write there is stopped before any work. A missing directory is fine:
    the writer creates it."""
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if existing.is_dir():
                return path
            if existing == path:
                raise ValueError(f"{path} is a file; give a directory (it is created if missing)")
            raise ValueError(f"{path} is under {existing}, which is a file; give a directory elsewhere")
    return path


def remove_stale_temporaries(directory: PathLike) -> List[Path]:
    """Remove the temporary files of atomic writes into ``directory`` that a killed process
    left behind; returns them. Call it only while no other process writes there."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in sorted(directory.iterdir()) if _TEMPORARY_NAME.match(p.name) and p.is_file()]
    for path in stale:
        path.unlink()
    return stale
