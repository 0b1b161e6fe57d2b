"""The test-time pipeline every backend shares: from (image, face box) to landmarks in image pixels.

``CropLandmarkModel.predict`` crops each face from its box, optionally re-frames it on the box of its first
answer (box refinement), runs a grid of slightly moved crops (multi-crop) and each crop mirrored too
(mirror-averaging), and maps the answers back to image pixels. Subclasses provide only ``run_network``: the
torch backend (``backends.torch.LandmarkModel``) and the onnxruntime backend (``backends.onnx.OnnxLandmarkModel``).
Nothing here imports torch, so the onnxruntime path runs where torch is not installed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..attributes import ALL_TASKS, AttributeTask, flip_permutation
from ..data.transforms import box_array, make_jittered_crops
from ..geometry import (
    BOX_SCALE,
    Box,
    CropJitter,
    box_from_landmarks,
    invert_affines,
    normalised_to_image,
    warp_shifted_crops_of_one_face,
)
from ..schemes import LandmarkScheme
from .local_stage import LocalStage

# Faces whose crops are built together (bounded memory).
FACES_PER_BLOCK = 256
# Crops per network call (mirror images included) when predict gets no batch_size, from
# bench/default_inference.py --batch-sizes on the grid crops: torch on one thread was fastest at 32-64
# (128-256: 20-35% more per crop, the activations leave the cache), torch on two threads at 256 (half
# the time per crop of 64: each layer's thread hand-off is paid per call); onnxruntime was within 2%
# from 32 to 256 on one thread and fastest at 256 on two.
TORCH_ONE_THREAD_CROPS_PER_CALL = 64
TORCH_CROPS_PER_CALL = 256
ONNX_CROPS_PER_CALL = 256


@dataclass
class Prediction:
    """What every backend's ``predict`` returns."""

    landmarks: np.ndarray  # (N, P, 2) image pixels
    attribute_probabilities: np.ndarray  # (N, T)


class CropLandmarkModel:
    """The torch-free half of a landmark model: crops from (image, box) and landmarks back in image
    pixels around ``run_network``, which subclasses provide (``backends.torch.LandmarkModel`` with torch,
    ``OnnxLandmarkModel`` with onnxruntime). ``scheme``, ``task_names`` and ``input_size`` are set by
    the subclass.
    """

    scheme: LandmarkScheme
    task_names: tuple[str, ...]
    input_size: int
    mirror_average: bool = False  # also run each face mirrored and average (test-time flip)
    multi_crop: tuple[CropJitter, ...] = ()  # test-time crops averaged; empty: the box alone
    # Re-frame each face this many times on the convention's box of the previous answer's points, so
    # that the last pass sees the face framed as in training whatever the given box's error. Refinement
    # passes run on the crop alone, never mirrored: mirror-averaging them moved the MTFL validation error
    # by under 0.01 points with ground-truth or detector boxes (bench/test_time_plans.py) at one more crop.
    box_refinements: int = 0
    # (P, 2) normalised shift folded into the landmark head after training (tcdcn.evaluation.calibration), or
    # None.
    # Mirror-averaging must put it back on the mirrored pass, which otherwise applies it mirrored.
    landmark_shift: np.ndarray | None = None
    # Crops per network call when ``predict`` gets no ``batch_size``; None: ``default_crops_per_call``.
    crops_per_call: int | None = None
    # The multi-crop grid's crops of a face share one area reduction (geometry.warp_shifted_crops); False
    # reduces once per crop, bit for bit the crops of data.transforms.make_crop, at a higher cost.
    shared_crop_reduction: bool = True
    # A second pass on patches around the last pass's points (dense models; tcdcn.inference.local_stage), run when
    # ``use_local_stage`` is set: a shipped model's card ships it and switches it on.
    local_stage: LocalStage | None = None
    use_local_stage: bool = False

    def crops(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box]) -> tuple[np.ndarray, np.ndarray]:
        """(N, 1, S, S) float32 crops and (N, 2, 3) crop->image matrices (as LandmarkModel.crops)."""
        if len(grey_images) != len(boxes):
            raise ValueError(f"{len(grey_images)} images for {len(boxes)} boxes")
        crops, matrices = make_jittered_crops(grey_images, boxes, self.input_size, (CropJitter(),))  # (N, 1, S, S)
        return crops.astype(np.float32), invert_affines(matrices[:, 0])

    def run_network(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def describe_backend(self) -> str:
        """What runs the network, as ``tcdcn predict`` and ``tcdcn evaluate`` log it."""
        return type(self).__name__

    def default_crops_per_call(self) -> int:
        """The torch backend's call size, by torch's thread count (the onnxruntime backend overrides it)."""
        torch = sys.modules.get("torch")  # loaded by the torch backend; never imported here
        threads = torch.get_num_threads() if torch is not None else 1
        return TORCH_ONE_THREAD_CROPS_PER_CALL if threads == 1 else TORCH_CROPS_PER_CALL

    def predict(self, grey_images: Sequence[np.ndarray], boxes: Sequence[Box],
                batch_size: int | None = None) -> Prediction:
        """Landmarks in image pixels and attribute probabilities for one box per image.

        With ``box_refinements`` K > 0, the box alone is predicted K times (one crop, not mirrored), each
        time re-framed on the box the face-box convention derives from the previous answer's points,
        before the last pass (which runs ``multi_crop`` when set, and the mirror images when set); with
        ``use_local_stage`` and a ``local_stage``, its patches then refine the last pass's points. With
        ``multi_crop`` set, each face is cropped once per ``CropJitter`` of its box and the landmarks (mapped
        back to image pixels) and attribute logits averaged over the crops. With ``mirror_average`` set,
        each crop of the last pass is also run mirrored and the two answers averaged (mirrored points put
        back through the scheme's flip pairs, left/right tasks swapped back). ``grey_images[i]`` holds face
        ``i``; faces of one image may share one array (it is never copied). The crops of all faces go
        through the network in calls of at most ``batch_size`` crops, mirror images included (None:
        ``crops_per_call``, else the backend's ``default_crops_per_call``).
        """
        if len(grey_images) != len(boxes):
            raise ValueError(f"{len(grey_images)} images for {len(boxes)} boxes")
        if len(boxes) == 0:
            return Prediction(np.zeros((0, self.scheme.num_points, 2)), np.zeros((0, len(self.task_names))))
        per_call = batch_size or self.crops_per_call or self.default_crops_per_call()
        box_rows = box_array(boxes)  # (F, 3)
        jitters = self.multi_crop or (CropJitter(),)
        if len(boxes) == 1 and self._one_face_path_applies(jitters, per_call):
            result = self._predict_one_face(grey_images[0], box_rows[0].tolist(), jitters)
        else:
            for _ in range(self.box_refinements):
                previous = self._predict_crops(grey_images, box_rows, (CropJitter(),), per_call, mirror=False)
                box_rows = self._refined_boxes(previous.landmarks, box_rows)
            result = self._predict_crops(grey_images, box_rows, jitters, per_call, mirror=self.mirror_average)
        if self.use_local_stage and self.local_stage is not None:
            block = FACES_PER_BLOCK  # bounded memory, as the crops
            refined = [self.local_stage.refine(grey_images[i:i + block], result.landmarks[i:i + block])
                       for i in range(0, len(boxes), block)]
            result = Prediction(np.concatenate(refined), result.attribute_probabilities)
        return result

    def _one_face_path_applies(self, jitters: tuple[CropJitter, ...], per_call: int) -> bool:
        """Whether ``_predict_one_face`` computes what ``_predict_crops`` would: one shared reduction per pass
        (the jitters share one scale) and every pass in one network call."""
        return (self.shared_crop_reduction and all(j.scale == jitters[0].scale for j in jitters)
                and len(jitters) * (2 if self.mirror_average else 1) <= per_call)

    def _predict_one_face(self, image: np.ndarray, box: list[float], jitters: tuple[CropJitter, ...]) -> Prediction:
        """``predict`` of one face, box (cx, cy, side): the same passes and the same arithmetic as the batched
        path (``_predict_crops``, ``_refined_boxes``), its matrices on Python floats and without the checks and
        array bookkeeping that batches need: 1.461 to 1.401 ms per face for ``mtfl-5pt`` on float32 on an AVX2-only
        AMD EPYC (``bench/speed.py``), for a photo with one face, a video frame, the speed bench's rows."""
        size = self.input_size
        centre, half = (size - 1) / 2.0, size / 2.0

        def crops_of(rows: list[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
            scales = [size / side for _, _, side in rows]  # crop_matrices' arithmetic, box by box
            matrices = np.array([[[s, 0.0, centre - s * x], [0.0, s, centre - s * y]]
                                 for (x, y, _), s in zip(rows, scales)])  # (J, 2, 3) image -> crop
            crops = warp_shifted_crops_of_one_face(image, matrices, size, True)  # (J, S, S)
            return crops.reshape(len(rows), 1, size, size).astype(np.float32), matrices

        def to_image(matrices: np.ndarray, normalised: np.ndarray) -> np.ndarray:
            # normalised_to_image on axis-aligned matrices: (J, 2, 3), (J, P, 2) -> (J, P, 2)
            crop_px = normalised.astype(np.float64) * half + centre
            return (crop_px - matrices[:, None, :, 2]) / matrices[:, None, 0:1, 0]

        cx, cy, side = box
        for _ in range(self.box_refinements):
            crops, matrices = crops_of([(cx, cy, side)])
            normalised, _ = self.run_network(crops)  # (1, P, 2)
            cx, cy, side = self._refined_boxes(to_image(matrices, normalised), np.array([[cx, cy, side]]))[0].tolist()
        crops, matrices = crops_of([(cx + j.dx * side, cy + j.dy * side, side * j.scale) for j in jitters])
        normalised, logits = self._run_crops(crops, self.mirror_average)  # (J, P, 2), (J, T)
        n_jitters = len(jitters)
        landmarks = to_image(matrices, normalised).sum(axis=0) / n_jitters  # (P, 2)
        probabilities = 1.0 / (1.0 + np.exp(-logits.sum(axis=0) / n_jitters))  # (T,)
        return Prediction(landmarks[None], probabilities[None])

    def _refined_box(self, points: np.ndarray, box: Box) -> Box:
        """The convention's box of predicted ``points`` (P, 2); ``box`` if they are degenerate."""
        try:
            return box_from_landmarks(points, self.scheme)
        except ValueError:
            return box

    def _refined_boxes(self, points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``_refined_box`` of every face at once: points (F, P, 2), boxes (F, 3) -> (F, 3)."""
        five = self._five_point_matrix() @ np.asarray(points, dtype=np.float64)  # (F, 5, 2): scheme.five_points
        lo, hi = five.min(axis=1), five.max(axis=1)  # (F, 2)
        extent = (hi - lo).max(axis=1)  # (F,)
        refined = np.concatenate([(lo + hi) / 2.0, extent[:, None] * BOX_SCALE], axis=1)  # (F, 3)
        usable = np.isfinite(extent) & (extent > 0)
        return np.where(usable[:, None], refined, boxes)

    def _predict_crops(self, grey_images: Sequence[np.ndarray], boxes: np.ndarray,
                       jitters: tuple[CropJitter, ...], batch_size: int, mirror: bool) -> Prediction:
        """One pass over ``boxes`` (F, 3), each cropped once per jitter (and mirrored with ``mirror``), averaged."""
        size, n_jitters = self.input_size, len(jitters)
        per_call = max(1, batch_size // (2 if mirror else 1))  # crops before their mirror images
        out_landmarks, out_probabilities = [], []
        for start in range(0, len(boxes), FACES_PER_BLOCK):
            part = slice(start, start + FACES_PER_BLOCK)
            crops, matrices = make_jittered_crops(grey_images[part], boxes[part], size, jitters,
                                                  self.shared_crop_reduction)  # (b, J, S, S), (b, J, 2, 3)
            b = len(crops)
            flat = crops.reshape(b * n_jitters, 1, size, size).astype(np.float32)  # (b*J, 1, S, S), face-major
            if len(flat) <= per_call:  # one call (per-face inference): no lists to join
                normalised, logits = self._run_crops(flat, mirror)
            else:
                outputs = [self._run_crops(flat[i:i + per_call], mirror) for i in range(0, len(flat), per_call)]
                normalised = np.concatenate([o[0] for o in outputs])
                logits = np.concatenate([o[1] for o in outputs])
            image_px = normalised_to_image(matrices, normalised.reshape(b, n_jitters, -1, 2), size)  # (b, J, P, 2)
            logits = logits.reshape(b, n_jitters, -1)  # (b, J, T)
            # Sums over the crop axis then one division: np.mean's overhead shows on one face's tiny arrays.
            out_landmarks.append(image_px.sum(axis=1) / n_jitters)  # (b, P, 2)
            out_probabilities.append(1.0 / (1.0 + np.exp(-logits.sum(axis=1) / n_jitters)))  # (b, T)
        if len(out_landmarks) == 1:
            return Prediction(out_landmarks[0], out_probabilities[0])
        return Prediction(np.concatenate(out_landmarks), np.concatenate(out_probabilities))

    def _run_crops(self, crops: np.ndarray, mirror: bool) -> tuple[np.ndarray, np.ndarray]:
        """(N,1,S,S) crops -> normalised landmarks (N,P,2) and logits (N,T), mirror-averaged with ``mirror``."""
        if not mirror:
            return self.run_network(crops)
        # One network call on the crops and their mirror images (cheaper than two calls).
        both, both_logits = self.run_network(with_mirror_images(crops))  # (2N, P, 2)
        normalised, mirrored = both[:len(crops)], both[len(crops):]
        logits, mirrored_logits = both_logits[:len(crops)], both_logits[len(crops):]
        flip_index, shift_correction = self._mirror_terms()
        unmirrored = mirrored[:, flip_index] * MIRROR_X
        if shift_correction is not None:
            unmirrored = unmirrored + shift_correction
        return (normalised + unmirrored) / 2, (logits + mirrored_logits[:, self._task_flip_index()]) / 2

    def _mirror_terms(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The scheme's flip index and the correction the landmark shift needs on a mirrored pass, cached
        with what they were made from (per-face inference asks on every call)."""
        shift = self.landmark_shift
        cached = self.__dict__.get("_mirror_cache")
        if cached is None or cached[0] is not self.scheme or cached[1] is not shift:
            flip_index = self.scheme.flip_index
            correction = None
            if shift is not None:
                # The mirrored pass carries shift b of the mirror partner, reflected: (-b_f.x, b_f.y);
                # replace it with b so both passes estimate the same calibrated points.
                correction = shift + shift[flip_index] * np.array([1.0, -1.0])  # (P, 2)
            cached = self.__dict__["_mirror_cache"] = (self.scheme, shift, flip_index, correction)
        return cached[2], cached[3]

    def _task_flip_index(self) -> list[int]:
        # Cached with the names it was made from: per-face inference asks on every call.
        cached = self.__dict__.get("_task_flip_cache")
        if cached is None or cached[0] != self.task_names:
            tasks = tuple(ALL_TASKS.get(name) or AttributeTask(name, "other") for name in self.task_names)
            cached = self.__dict__["_task_flip_cache"] = (self.task_names, flip_permutation(tasks))
        return cached[1]

    def _five_point_matrix(self) -> np.ndarray:
        """(5, P) averaging matrix of ``scheme.five_points``, cached with the scheme it was made from."""
        cached = self.__dict__.get("_five_point_cache")
        if cached is None or cached[0] is not self.scheme:
            matrix = np.zeros((5, self.scheme.num_points))
            for row, group in enumerate(self.scheme.five_point_groups):
                matrix[row, list(group)] = 1.0 / len(group)
            cached = self.__dict__["_five_point_cache"] = (self.scheme, matrix)
        return cached[1]


# A mirrored crop's x coordinates, back in the unmirrored frame (normalised coordinates about the centre).
MIRROR_X = np.array([-1.0, 1.0], np.float32)


def with_mirror_images(crops: np.ndarray) -> np.ndarray:
    """(N, 1, S, S) crops -> (2N, 1, S, S): the crops, then their mirror images (one network batch)."""
    return np.concatenate([crops, crops[..., ::-1]])
