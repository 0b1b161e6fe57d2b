"""Measure the detector-box -> face-box-convention correction on MTFL *training* faces.

For every training face (80x80 images; the detector upsamples them x2.5 and pads them with a replicated
border itself), run the raw detector, match its squares to the ground-truth convention box
(``geometry.box_from_landmarks``) and print, per calibration source (``opencv-frontal``,
``opencv-profile``, ``dlib``, ``mtcnn``, ``blazeface``), the medians of ``side_gt / side_raw`` and
``(centre_gt - centre_raw) / side_raw``. Offsets are measured in the frame the detector ran in (the mirror
image for the mirrored profile pass), which is how ``BoxCalibration`` applies them.

Matching is done twice: first loosely (raw centre within 0.35 x gt side of the gt centre, ratio
side_gt/side_raw in [0.8, 5]), then, around the first medians, tightly (the corrected centre within
0.2 x gt side and the corrected side within a factor 1.3), so that stray detections do not bias the
result. The test set is never read.

    PYTHONPATH=src python bench/calibrate_detector.py --backend blazeface
    PYTHONPATH=src python bench/calibrate_detector.py --backend mtcnn
    PYTHONPATH=src python bench/calibrate_detector.py --backend opencv
    PYTHONPATH=src python bench/calibrate_detector.py --backend dlib
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tcdcn.data.formats import read_mtfl
from tcdcn.geometry import Box, box_from_landmarks
from tcdcn.inference.detectors import BoxCalibration, FaceDetector, RawDetection
from tcdcn.io.images import load_image

DEFAULT_LIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mtfl" / "training.txt"


def _in_run_frame(gt: Box, raw: RawDetection) -> Box:
    """The gt box expressed in the frame the detector ran in (mirrored for a mirrored pass)."""
    if raw.mirrored:
        return Box(raw.image_width - 1 - gt.cx, gt.cy, gt.side)
    return gt


def _measure(raw: RawDetection, gt: Box) -> tuple[float, float, float]:
    g = _in_run_frame(gt, raw)
    s = raw.box.side
    return g.side / s, (g.cx - raw.box.cx) / s, (g.cy - raw.box.cy) / s


def _best_match(
    raws: list[RawDetection], gt: Box, calib: BoxCalibration | None
) -> tuple[float, float, float] | None:
    best: tuple[float, tuple[float, float, float]] | None = None
    for raw in raws:
        ratio, dx, dy = _measure(raw, gt)
        if calib is None:
            g = _in_run_frame(gt, raw)
            dist = np.hypot(g.cx - raw.box.cx, g.cy - raw.box.cy) / gt.side
            if dist > 0.35 or not 0.8 <= ratio <= 5.0:
                continue
        else:
            mapped = calib.apply(raw.box)
            g = _in_run_frame(gt, raw)
            dist = np.hypot(g.cx - mapped.cx, g.cy - mapped.cy) / gt.side
            side_ratio = mapped.side / gt.side
            if dist > 0.2 or not 1 / 1.3 <= side_ratio <= 1.3:
                continue
        if best is None or dist < best[0]:
            best = (dist, (ratio, dx, dy))
    return None if best is None else best[1]


def _median_calibration(rows: list[tuple[float, float, float]]) -> BoxCalibration:
    a = np.asarray(rows)
    return BoxCalibration(float(np.median(a[:, 0])), float(np.median(a[:, 1])), float(np.median(a[:, 2])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", type=Path, default=DEFAULT_LIST, help="MTFL training list (training.txt)")
    parser.add_argument("--backend", default="blazeface", choices=("blazeface", "mtcnn", "opencv", "dlib"))
    parser.add_argument("--limit", type=int, default=0, help="use every k-th face so that at most this "
                        "many are run (0 = all)")
    args = parser.parse_args(argv)
    if "testing" in args.list.name:
        parser.error("calibration must use training faces, not the test list")

    faces = read_mtfl(args.list)
    if args.limit and len(faces) > args.limit:
        step = len(faces) / args.limit
        faces = [faces[int(i * step)] for i in range(args.limit)]
    detector = FaceDetector(args.backend)
    per_face: list[tuple[Box, list[RawDetection]]] = []
    start = time.perf_counter()
    for face in faces:
        image = load_image(face.image_path)
        gt = box_from_landmarks(face.landmarks, face.scheme)
        per_face.append((gt, detector.raw_detections(image)))
    elapsed = time.perf_counter() - start

    results: dict[str, BoxCalibration] = {}
    sources = sorted({r.source for _, raws in per_face for r in raws})
    print(f"backend {args.backend}: {len(faces)} training faces from {args.list}, "
          f"{1000 * elapsed / max(1, len(faces)):.1f} ms/face\n")
    print("| source | matched faces | scale (side_gt/side_raw) | dx/side_raw | dy/side_raw | "
          "IQR scale | IQR dx | IQR dy |")
    print("|---|---|---|---|---|---|---|---|")
    for source in sources:
        loose = []
        for gt, raws in per_face:
            m = _best_match([r for r in raws if r.source == source], gt, None)
            if m is not None:
                loose.append(m)
        if not loose:
            continue
        first = _median_calibration(loose)
        tight = []
        for gt, raws in per_face:
            m = _best_match([r for r in raws if r.source == source], gt, first)
            if m is not None:
                tight.append(m)
        rows = tight or loose
        calib = _median_calibration(rows)
        results[source] = calib
        a = np.asarray(rows)
        q = np.percentile(a, [25, 75], axis=0)
        iqr = q[1] - q[0]
        print(f"| {source} | {len(rows)} | {calib.scale:.4f} | {calib.dx:+.4f} | {calib.dy:+.4f} | "
              f"{iqr[0]:.3f} | {iqr[1]:.3f} | {iqr[2]:.3f} |")
    print()
    for source, c in results.items():
        print(f'    "{source}": BoxCalibration(scale={c.scale:.4f}, dx={c.dx:.4f}, dy={c.dy:.4f}),')
    return 0


if __name__ == "__main__":
    sys.exit(main())
