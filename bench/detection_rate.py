"""Face detection rate and box quality on annotated test sets, as a markdown table.

For each face, the ground-truth box is the package's face-box convention
(``geometry.box_from_landmarks``). A detection *hits* when its centre is within 0.25 x the gt side of
the gt centre and its side is within a factor 1.5 of the gt side. Reported per data set and backend:
detection rate (faces with a hit), mean IoU of the best hit against the gt box (over hit faces), mean
IoU of the best-overlapping detection with misses counted as 0 (over all faces), detections per image
that hit nothing, and time per image.

    PYTHONPATH=src python bench/detection_rate.py                       # blazeface, both data sets
    PYTHONPATH=src python bench/detection_rate.py --backend blazeface mtcnn opencv dlib
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tcdcn.data.annotation import FaceAnnotation
from tcdcn.data.formats import read_annotations
from tcdcn.geometry import Box, box_from_landmarks
from tcdcn.inference.detectors import Detection, FaceDetector, box_iou
from tcdcn.io.images import load_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_SETS = [DATA / "mtfl" / "testing.txt", DATA / "300w"]


def is_hit(det: Box, gt: Box) -> bool:
    dist = float(np.hypot(det.cx - gt.cx, det.cy - gt.cy))
    ratio = det.side / gt.side
    return dist <= 0.25 * gt.side and 1 / 1.5 <= ratio <= 1.5


def evaluate(faces: list[FaceAnnotation], detector: FaceDetector) -> dict[str, float]:
    hits, hit_ious, best_ious, false_dets = 0, [], [], 0
    start = time.perf_counter()
    for face in faces:
        gt = box_from_landmarks(face.landmarks, face.scheme)
        dets: list[Detection] = detector(load_image(face.image_path))
        hit_dets = [d for d in dets if is_hit(d.box, gt)]
        false_dets += len(dets) - len(hit_dets)
        best_ious.append(max((box_iou(d.box, gt) for d in dets), default=0.0))
        if hit_dets:
            hits += 1
            hit_ious.append(max(box_iou(d.box, gt) for d in hit_dets))
    elapsed = time.perf_counter() - start
    n = max(1, len(faces))
    return {
        "faces": len(faces),
        "rate": hits / n,
        "iou_hits": float(np.mean(hit_ious)) if hit_ious else float("nan"),
        "iou_all": float(np.mean(best_ious)) if best_ious else float("nan"),
        "false_per_image": false_dets / n,
        "ms": 1000 * elapsed / n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="*", type=Path, default=DEFAULT_SETS,
                        help="MTFL list files or folders of .pts files")
    parser.add_argument("--backend", nargs="+", default=["blazeface"], choices=("blazeface", "mtcnn", "opencv", "dlib"))
    parser.add_argument("--limit", type=int, default=0, help="every k-th face, at most this many (0 = all)")
    args = parser.parse_args(argv)

    print("| data set | backend | faces | detection rate | mean IoU (hits) | mean IoU (all, miss=0) "
          "| false dets / image | ms / image |")
    print("|---|---|---|---|---|---|---|---|")
    for data_set in args.sets:
        faces = read_annotations(data_set)
        if args.limit and len(faces) > args.limit:
            step = len(faces) / args.limit
            faces = [faces[int(i * step)] for i in range(args.limit)]
        for backend in args.backend:
            r = evaluate(faces, FaceDetector(backend))
            print(f"| {data_set.name} | {backend} | {r['faces']} | {100 * r['rate']:.1f}% | "
                  f"{r['iou_hits']:.3f} | {r['iou_all']:.3f} | {r['false_per_image']:.3f} | {r['ms']:.0f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
