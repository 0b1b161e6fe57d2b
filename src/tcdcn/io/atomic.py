"""Atomic file writes: a reader sees the old file or the complete new one, never a part.

The data goes to a temp file in the target's folder (a rename across file systems would not be atomic),
is flushed to disk, and is then renamed over the target. On any failure the temp file is removed and the
previous file, if any, is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o644  # mkstemp creates 0600; results are ordinary files others may read


def temp_path_for(target: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """A fresh hidden file name beside ``target`` (created empty, so no other writer takes it)."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(tmp)


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], object], *, fsync: bool = True,
                      mkdir: bool = False) -> Path:
    """Call ``write(fh)`` on a temp file beside ``path``, then rename it over ``path``; returns ``path``.

    ``mkdir`` creates missing parent folders first. Raises the ``OSError`` of the failing step.
    """
    target = Path(path)
    if mkdir:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True,
                       mkdir: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    return atomic_write_with(path, lambda fh: fh.write(data), fsync=fsync, mkdir=mkdir)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = True,
                      mkdir: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (``encoding``, with undecodable file-name bytes kept as they
    were read); returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding, errors="surrogateescape"), fsync=fsync, mkdir=mkdir)


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise ``OSError`` naming ``path`` unless a file can be written there (its folder created as needed):
    for outputs written only at the end of a long run, checked before the run."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(21, "is a folder, not a file", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    probe = temp_path_for(target)  # raises when the folder is not writable
    probe.unlink()
