"""The local stage: a second pass on patches around the first stage's points (dense schemes).

The first stage frames the whole face at 80x80. The local stage re-frames it on the first stage's points (the
face-box convention of those points, eye line levelled, ``canonical_size`` pixels per box side), cuts one
``patch_size`` patch around the mean point of each of the scheme's ``patch_groups``, and a small network (a
convolutional trunk shared by the patches, one head per group that also reads where the first stage put the
group's points in its patch) predicts each point's residual in patch sides. ``LocalStage.refine`` runs it
on onnxruntime; the geometry, numpy and OpenCV only and shared with training
(``bench/local_refinement.py``) and the torch network (``tcdcn.models.local_stage``), lives in
``tcdcn.data.patches``.
Measured in docs/results.md ("A second stage on local patches").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..data.patches import PatchGeometry
from ..errors import CheckpointError
from ..geometry import apply_affine, invert_affine, warp_crop


class LocalStage:
    """The local stage exported to ONNX (``tcdcn.models.local_stage.export_local_stage``), on onnxruntime.

    ``mirror_average``: also run each face mirrored and average: 0.05 points better on the 300-W validation
    split at about 0.8 ms more per face (docs/results.md); off by default, which keeps the 68-point model
    within 2x the 5-point model's time.
    """

    def __init__(self, path: str | Path, threads: int = 1, mirror_average: bool = False) -> None:
        import onnxruntime as ort

        from ..models.denormals import cpu_session_options

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        try:
            self.session = ort.InferenceSession(str(self.path), cpu_session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{self.path}: not a readable ONNX model ({reason})") from None
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.geometry = PatchGeometry.from_metadata(metadata, str(self.path))
        self.mirror_average = mirror_average

    def run_network(self, patches: np.ndarray, relative: np.ndarray) -> np.ndarray:
        """(N, G, S, S) patches, (N, P, 2) points in patch sides -> (N, P, 2) residuals in patch sides."""
        return self.session.run(None, {"patches": np.ascontiguousarray(patches, np.float32),
                                       "relative": np.ascontiguousarray(relative, np.float32)})[0]

    def refine(self, grey_images: Sequence[np.ndarray], points: np.ndarray) -> np.ndarray:
        """``refine_points`` with this stage's geometry, network and mirror-averaging."""
        return refine_points(self.geometry, self.run_network, grey_images, points, self.mirror_average)


def refine_points(geometry: PatchGeometry, run_network: Callable[[np.ndarray, np.ndarray], np.ndarray],
                  grey_images: Sequence[np.ndarray], points: np.ndarray, mirror_average: bool) -> np.ndarray:
    """First-stage ``points`` (F, P, 2) in image pixels of ``grey_images[f]`` -> refined (F, P, 2); every face's
    patches (and mirror images) go through ``run_network`` (``LocalStage.run_network``'s contract) in one call.
    A face whose points give no face box (degenerate) keeps its first-stage points."""
    out = np.array(points, dtype=np.float64)  # (F, P, 2)
    faces, matrices, views = [], [], []
    for f, (grey, face_points) in enumerate(zip(grey_images, out)):
        try:
            m = geometry.reframing(face_points)
        except ValueError:
            continue
        reframed = warp_crop(grey, m, geometry.canonical_size)
        q = apply_affine(m, face_points)  # (P, 2) re-framed pixels
        faces.append(f)
        matrices.append(m)
        views.append((reframed, q))
        if mirror_average:
            views.append(geometry.mirrored(reframed, q))
    if not views:
        return out
    cut = [geometry.cut(reframed, q) for reframed, q in views]
    residual = run_network(np.stack([c[0] for c in cut]), np.stack([c[1] for c in cut]))  # (V, P, 2)
    answers = np.stack([q for _, q in views]) + residual * geometry.point_sides[:, None]  # (V, P, 2) re-framed px
    if mirror_average:
        back = answers[1::2][:, geometry.scheme.flip_index]  # (F, P, 2)
        back[..., 0] = geometry.canonical_size - 1 - back[..., 0]
        answers = (answers[0::2] + back) / 2
    for f, m, answer in zip(faces, matrices, answers):
        out[f] = apply_affine(invert_affine(m), answer)
    return out
