"""Landmark schemes as data: point count, names, left/right flip pairs and normalising points.

Augmentation (mirroring), metrics (normalising distance), the face-box convention and the transfer
between schemes all read these objects; nothing in the package infers meaning from a point count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The five-point scheme every scheme maps onto through its ``five_point_groups``.
MTFL_5_NAME = "mtfl-5"


@dataclass(frozen=True)
class LandmarkScheme:
    """A landmark annotation scheme.

    ``five_point_groups`` maps the scheme onto the five MTFL points (eye centres, nose tip, mouth
    corners, image-left first): each entry lists the indices whose mean gives that point. It is how the
    face-box convention and 5-point comparisons work for every scheme, and it is this scheme's derivation
    of the ``mtfl-5`` scheme (``derivation_matrix``).

    ``derived_schemes`` declares further coarser schemes as functions of this one: ``(name, groups)``
    pairs, one group of indices per point of scheme ``name``, in its order, each point the mean of its
    group.
    """

    name: str
    point_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    five_point_groups: tuple[tuple[int, ...], ...]
    # Points whose distance normalises errors: "inter-ocular" = outer eye corners (or eye centres when
    # the scheme has no corners), "inter-pupil" = eye centres (means of the eye groups).
    outer_eye_corners: tuple[int, int] | None = None
    description: str = ""
    # Named groups of points (face regions) that per-region errors are reported over.
    regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    derived_schemes: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...] = ()
    # Named groups of points that the local stage (tcdcn.inference.local_stage) cuts one patch around each;
    # disjoint, and closed under mirroring (a group's mirror partners form a group), so a mirrored face keeps
    # every point in a group of the same shape.
    patch_groups: tuple[tuple[str, tuple[int, ...]], ...] = ()
    _flip_index: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.point_names)
        perm = list(range(n))
        for a, b in self.flip_pairs:
            if not (0 <= a < n and 0 <= b < n):
                raise ValueError(f"scheme {self.name}: flip pair ({a}, {b}) outside 0..{n - 1}")
            perm[a], perm[b] = b, a
        if len(self.five_point_groups) != 5:
            raise ValueError(f"scheme {self.name}: five_point_groups needs 5 groups")
        for group in self.five_point_groups:
            if not group or any(not 0 <= i < n for i in group):
                raise ValueError(f"scheme {self.name}: bad five-point group {group}")
        for target, groups in self.derived_schemes:
            if not groups or any(not group or any(not 0 <= i < n for i in group) for group in groups):
                raise ValueError(f"scheme {self.name}: derivation of {target!r} has an empty group or indices "
                                 f"outside 0..{n - 1}")
        for region, indices in self.regions:
            if not indices or any(not 0 <= i < n for i in indices):
                raise ValueError(f"scheme {self.name}: region {region!r} has indices outside 0..{n - 1}")
        if self.patch_groups:
            grouped = [i for _, group in self.patch_groups for i in group]
            if len(grouped) != len(set(grouped)) or any(not 0 <= i < n for i in grouped):
                raise ValueError(f"scheme {self.name}: patch groups overlap or hold indices outside 0..{n - 1}")
            groups = {frozenset(group) for _, group in self.patch_groups}
            if any(frozenset(perm[i] for i in group) not in groups for group in groups):
                raise ValueError(f"scheme {self.name}: the mirror image of a patch group is not a patch group")
        object.__setattr__(self, "_flip_index", tuple(perm))

    @property
    def num_points(self) -> int:
        return len(self.point_names)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation that maps a mirrored face's points back to this scheme's order."""
        return np.asarray(self._flip_index, dtype=np.int64)

    def five_points(self, landmarks: np.ndarray) -> np.ndarray:
        """(..., P, 2) -> (..., 5, 2): eye centres, nose tip, mouth corners."""
        return np.stack([landmarks[..., list(g), :].mean(axis=-2) for g in self.five_point_groups], axis=-2)

    def derivation_groups(self, target: str) -> tuple[tuple[int, ...], ...]:
        """The index groups whose means give scheme ``target``'s points, in its order: each point itself for
        this scheme, ``five_point_groups`` for ``mtfl-5``, else the ``derived_schemes`` entry."""
        if target == self.name:
            return tuple((i,) for i in range(self.num_points))
        if target == MTFL_5_NAME:
            return self.five_point_groups
        for name, groups in self.derived_schemes:
            if name == target:
                return groups
        known = sorted({self.name, MTFL_5_NAME, *(name for name, _ in self.derived_schemes)})
        raise KeyError(f"scheme {self.name} does not derive scheme {target!r}; it derives: {', '.join(known)}")

    def derivation_matrix(self, target: str) -> np.ndarray:
        """(Q, P) float64 averaging matrix ``D`` with ``D @ landmarks`` = scheme ``target``'s Q points, for
        ``landmarks`` (P, 2) of this scheme: row q holds 1/|group| at the indices of point q's group."""
        groups = self.derivation_groups(target)
        matrix = np.zeros((len(groups), self.num_points))
        for row, group in enumerate(groups):
            matrix[row, list(group)] = 1.0 / len(group)
        return matrix

    def eye_centres(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        five = self.five_points(landmarks)
        return five[..., 0, :], five[..., 1, :]

    def interpupil_distance(self, landmarks: np.ndarray) -> np.ndarray:
        left, right = self.eye_centres(landmarks)
        return np.linalg.norm(left - right, axis=-1)

    def interocular_distance(self, landmarks: np.ndarray) -> np.ndarray:
        """Outer-eye-corner distance where the scheme has corners, else the eye-centre distance."""
        if self.outer_eye_corners is None:
            return self.interpupil_distance(landmarks)
        a, b = self.outer_eye_corners
        return np.linalg.norm(landmarks[..., a, :] - landmarks[..., b, :], axis=-1)


MTFL_5 = LandmarkScheme(
    name=MTFL_5_NAME,
    point_names=("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right"),
    flip_pairs=((0, 1), (3, 4)),
    five_point_groups=((0,), (1,), (2,), (3,), (4,)),
    description="MTFL / MAFL / CelebA five points; 'left' is the image's left.",
    regions=(("eyes", (0, 1)), ("nose", (2,)), ("mouth", (3, 4))),
)


def _ibug68_flip_pairs() -> tuple[tuple[int, int], ...]:
    jaw = tuple((i, 16 - i) for i in range(8))
    brows = ((17, 26), (18, 25), (19, 24), (20, 23), (21, 22))
    nose = ((31, 35), (32, 34))
    eyes = ((36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46))
    mouth = ((48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67))
    return jaw + brows + nose + eyes + mouth


IBUG_68 = LandmarkScheme(
    name="ibug-68",
    point_names=tuple(
        [f"jaw_{i}" for i in range(17)]
        + [f"brow_{i}" for i in range(10)]
        + [f"nose_{i}" for i in range(9)]
        + [f"eye_{i}" for i in range(12)]
        + [f"mouth_{i}" for i in range(20)]
    ),
    flip_pairs=_ibug68_flip_pairs(),
    five_point_groups=(tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,)),
    outer_eye_corners=(36, 45),
    description="300-W / iBUG 68 points, 0-based.",
    regions=(("contour", tuple(range(0, 17))), ("brows", tuple(range(17, 27))), ("nose", tuple(range(27, 36))),
             ("eyes", tuple(range(36, 48))), ("mouth", tuple(range(48, 68)))),
    patch_groups=(("jaw_left", tuple(range(0, 6))), ("chin", tuple(range(6, 11))),
                  ("jaw_right", tuple(range(11, 17))), ("brow_eye_left", tuple(range(17, 22)) + tuple(range(36, 42))),
                  ("brow_eye_right", tuple(range(22, 27)) + tuple(range(42, 48))), ("nose", tuple(range(27, 36))),
                  ("mouth", tuple(range(48, 68)))),
)

SCHEMES: dict[str, LandmarkScheme] = {s.name: s for s in (MTFL_5, IBUG_68)}


def register_scheme(scheme: LandmarkScheme) -> LandmarkScheme:
    SCHEMES[scheme.name] = scheme
    return scheme


def derivation_matrix(source: LandmarkScheme, target: LandmarkScheme) -> np.ndarray:
    """(Q, P) matrix giving ``target``'s points from ``source``'s, checked against both schemes: one row per
    ``target`` point, and mirroring commutes with it (``D[target flip] == D[:, source flip]``), so a mirrored
    face of either scheme stays consistent with the other."""
    matrix = source.derivation_matrix(target.name)
    if matrix.shape[0] != target.num_points:
        raise ValueError(f"scheme {source.name} derives {matrix.shape[0]} points of {target.name}, "
                         f"which has {target.num_points}")
    if not np.array_equal(matrix[target.flip_index], matrix[:, source.flip_index]):
        raise ValueError(f"scheme {source.name}'s derivation of {target.name} does not commute with mirroring "
                         "(flip pairs of the two schemes disagree)")
    return matrix


def get_scheme(name: str) -> LandmarkScheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown landmark scheme {name!r}; known: {sorted(SCHEMES)}") from None
