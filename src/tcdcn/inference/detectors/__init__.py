"""Face detection: ``FaceDetector`` (``face_detector``) over one backend module each (``blazeface``, ``mtcnn``,
``opencv``, ``dlib``), sharing detections, box calibration, NMS and the working-image frame (``common``).

A new backend is one module with a class called as ``(working image, WorkFrame, input width) ->
list[RawDetection]`` (``common.RawDetectorRun``), its name in ``face_detector.BACKENDS`` and
``DEFAULT_SCORE_THRESHOLDS``, a branch in ``face_detector._backend``, and its ``BoxCalibration`` in
``common.CALIBRATIONS``, measured with ``bench/calibrate_detector.py``.
"""

from .common import ASSETS, CALIBRATIONS, BoxCalibration, Detection, RawDetection, box_iou, non_max_suppression
from .face_detector import BACKENDS, DEFAULT_BACKEND, DEFAULT_SCORE_THRESHOLDS, FaceDetector, detect_faces

__all__ = [
    "ASSETS",
    "BACKENDS",
    "CALIBRATIONS",
    "DEFAULT_BACKEND",
    "DEFAULT_SCORE_THRESHOLDS",
    "BoxCalibration",
    "Detection",
    "FaceDetector",
    "RawDetection",
    "box_iou",
    "detect_faces",
    "non_max_suppression",
]
