"""Where the local stage's patches come from: the face re-framed on first-stage points, and one patch per
patch group of the scheme (numpy and OpenCV only). Used by ``tcdcn.inference.local_stage`` (the runtime),
``tcdcn.models.local_stage`` (the network and its export) and the stage's training (``bench/local_refinement.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from ..errors import CheckpointError
from ..geometry import box_from_landmarks, crop_matrix
from ..schemes import LandmarkScheme, get_scheme

FORMAT_NAME = "tcdcn-local-stage"
FORMAT_VERSION = "1"


@dataclass(frozen=True)
class PatchGeometry:
    """Where the patches are cut: the re-framed face's size, the patch size and each group's patch side."""

    scheme: LandmarkScheme
    canonical_size: int  # pixels per face-box side in the re-framed face
    patch_size: int  # network input side, pixels
    sides: tuple[float, ...]  # per patch group: patch side in re-framed pixels

    def __post_init__(self) -> None:
        if not self.scheme.patch_groups:
            raise ValueError(f"scheme {self.scheme.name} has no patch groups")
        if len(self.sides) != len(self.scheme.patch_groups):
            raise ValueError(f"{len(self.sides)} patch sides for {len(self.scheme.patch_groups)} patch groups")

    @cached_property
    def point_sides(self) -> np.ndarray:
        """(P,) each point's patch side (re-framed pixels); read-only."""
        out = np.zeros(self.scheme.num_points)
        for side, (_, group) in zip(self.sides, self.scheme.patch_groups):
            out[list(group)] = side
        out.flags.writeable = False
        return out

    @cached_property
    def _group_means(self) -> np.ndarray:
        """(G, P) averaging matrix: row g gives the mean of group g's points."""
        matrix = np.zeros((len(self.sides), self.scheme.num_points))
        for g, (_, group) in enumerate(self.scheme.patch_groups):
            matrix[g, list(group)] = 1.0 / len(group)
        return matrix

    @cached_property
    def _group_of(self) -> np.ndarray:
        out = np.zeros(self.scheme.num_points, dtype=np.int64)
        for g, (_, group) in enumerate(self.scheme.patch_groups):
            out[list(group)] = g
        return out

    def reframing(self, points: np.ndarray) -> np.ndarray:
        """Image -> re-framed face (2, 3) for first-stage ``points`` (P, 2): their convention box, eye line level."""
        left, right = self.scheme.eye_centres(np.asarray(points, dtype=np.float64)[None])
        d = right[0] - left[0]
        angle = float(np.degrees(np.arctan2(d[1], d[0])))
        return crop_matrix(box_from_landmarks(points, self.scheme), self.canonical_size, rotation_deg=angle)

    def cut(self, reframed: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patches of a re-framed face around ``points`` (P, 2, re-framed pixels): (G, S, S) float32, each
        standardised, and the points in patch sides from their patch's centre (P, 2) float32."""
        size = self.patch_size
        centres = self._group_means @ points  # (G, 2)
        patches = np.empty((len(self.sides), size, size), np.float32)
        c = (size - 1) / 2.0
        for g, (side, centre) in enumerate(zip(self.sides, centres)):
            s = size / side
            m = np.array([[s, 0.0, c - s * centre[0]], [0.0, s, c - s * centre[1]]])
            patches[g] = cv2.warpAffine(reframed, m, (size, size), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REPLICATE)
        flat = patches.reshape(len(self.sides), -1)  # (G, S*S); one standardisation for all patches
        flat -= flat.mean(axis=1, keepdims=True)
        flat /= flat.std(axis=1, keepdims=True) + 1e-3
        relative = (points - centres[self._group_of]) / self.point_sides[:, None]  # (P, 2)
        return patches, relative.astype(np.float32)

    def mirrored(self, reframed: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The re-framed face and its points mirrored, points put in the scheme's order."""
        flipped = np.array(points, dtype=np.float64)[self.scheme.flip_index]
        flipped[:, 0] = self.canonical_size - 1 - flipped[:, 0]
        return np.ascontiguousarray(reframed[:, ::-1]), flipped

    def to_metadata(self) -> dict[str, str]:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "scheme": self.scheme.name,
                "canonical_size": str(self.canonical_size), "patch_size": str(self.patch_size),
                "sides": json.dumps([round(float(s), 4) for s in self.sides]),
                "groups": json.dumps([name for name, _ in self.scheme.patch_groups])}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], where: str) -> PatchGeometry:
        if metadata.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{where}: not a tcdcn local stage (metadata 'format' is "
                                  f"{metadata.get('format')!r}, expected {FORMAT_NAME!r})")
        try:
            scheme = get_scheme(metadata["scheme"])
            groups = json.loads(metadata["groups"])
            if groups != [name for name, _ in scheme.patch_groups]:
                raise ValueError(f"patch groups {groups} are not scheme {scheme.name}'s")
            return cls(scheme, int(metadata["canonical_size"]), int(metadata["patch_size"]),
                       tuple(float(s) for s in json.loads(metadata["sides"])))
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{where}: bad local-stage metadata ({exc})") from None
