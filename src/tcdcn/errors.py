"""Errors the package raises for bad input: each names the file (and line) it is about."""

from __future__ import annotations

from pathlib import Path


class TcdcnError(Exception):
    """Base class: an error a user can act on, printed as one line by the CLI."""


class AnnotationError(TcdcnError, ValueError):
    """A malformed annotation file; names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ImageError(TcdcnError, OSError):
    """An image that cannot be read or decoded."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")


class ConfigError(TcdcnError, ValueError):
    """A config with unknown, missing or mistyped keys."""


class CheckpointError(TcdcnError, RuntimeError):
    """A checkpoint that is unreadable, corrupt, or made for another model shape."""


class SchemeMismatchError(TcdcnError, ValueError):
    """A model scored on annotations of a landmark scheme it cannot be compared with."""


class BackendError(TcdcnError, RuntimeError):
    """An inference backend that is unknown, not installed, or cannot run the given model file."""


class InputError(TcdcnError, ValueError):
    """An argument that cannot be used: a degenerate or non-finite face box, an unsupported image source."""


class MissingDependencyError(TcdcnError, ImportError):
    """An optional dependency a feature needs is not installed; the message names what installs it."""
