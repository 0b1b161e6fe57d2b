"""Data: file formats (one reader per format), one dataset class, transforms."""

from .annotation import FaceAnnotation
from .formats import read_annotations

__all__ = ["FaceAnnotation", "read_annotations"]
