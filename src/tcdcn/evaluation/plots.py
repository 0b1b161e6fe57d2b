"""Figures of evaluation results. matplotlib is an optional dependency (the ``studies`` extra): it is imported
only when a figure is drawn, and its absence is one ``MissingDependencyError`` naming the extra."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError

INSTALL_HINT = "pip install 'tcdcn[studies]'"


def _missing(purpose: str) -> MissingDependencyError:
    return MissingDependencyError(f"{purpose} needs matplotlib, which is not installed: {INSTALL_HINT}")


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported, without importing it (for checks before a long run)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ValueError, ImportError):  # a broken or blocked entry in sys.modules
        return False


def require_matplotlib(purpose: str) -> None:
    """Raise ``MissingDependencyError`` naming ``purpose`` unless matplotlib can be imported."""
    if not matplotlib_available():
        raise _missing(purpose)


def pyplot(purpose: str = "drawing a figure") -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display)."""
    try:
        import matplotlib
    except ImportError:
        raise _missing(purpose) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_ced_figure(thresholds: np.ndarray, fractions: np.ndarray, path: Path, label: str = "") -> Path:
    """The cumulative error distribution (fraction of faces at or below each normalised error) as a PNG."""
    return save_ced_comparison({label: (thresholds, fractions)}, path)


def save_ced_comparison(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Several predictors' CEDs on the same faces, one line each (label -> thresholds, fractions), as a PNG;
    an empty label draws no legend."""
    plt = pyplot("the CED figure (--ced)")
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (thresholds, fractions) in curves.items():
        ax.plot(thresholds, fractions, label=label or None)
    ax.set_xlabel("mean error / inter-ocular distance")
    ax.set_ylabel("fraction of faces")
    ax.grid(alpha=0.3)
    if any(curves):
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
