"""tcdcn: fast, robust facial landmark detection (TCDCN, Zhang et al., TPAMI 2016).

The package's rooms, each importing only from the rooms below it (``docs/architecture.md``, checked by
``tests/test_architecture.py``): the shared vocabulary (``errors``, ``config``, ``schemes``, ``attributes``,
``geometry``, ``progress``), ``io``, ``data``, ``models``, ``evaluation``, ``training``, ``inference``,
``studies`` and ``cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["LandmarkDetector", "FaceResult", "load_model", "__version__"]

if TYPE_CHECKING:
    from .inference.api import FaceResult, LandmarkDetector


def load_model(name_or_path: str = "mtfl-5pt", backend: str = "auto") -> Any:
    """A landmark model (shipped name, checkpoint or ONNX file) without face detection."""
    from .inference.api import load_backend

    return load_backend(name_or_path, backend)


def __getattr__(name: str) -> Any:
    # Imported lazily so `import tcdcn` stays light (and works without torch for the ONNX path).
    if name in ("LandmarkDetector", "FaceResult"):
        from .inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'tcdcn' has no attribute {name!r}")
