"""Test-time inference modes compared on held-out faces, with ground-truth boxes and with the face
detector's boxes (the deployment condition): mirror-averaging, multi-crop, box refinement.

    python bench/inference_modes.py --out bench/results/inference_modes.jsonl

Sets: the MTFL validation split the config carves from the training faces, and the 300-W faces (an
out-of-domain check); never a test set. One JSON line per (mode, set, box): NME over found faces and
failure rate (misses count as failures) in percent. Detections are computed once per image and reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from tcdcn.config import load_config
from tcdcn.data.dataset import split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.evaluation.protocol import evaluate
from tcdcn.geometry import Box
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.inference.test_time import set_test_time_options

# name -> (mirror_average, multi_crop, box_refinements)
MODES: dict[str, tuple[bool, bool, int]] = {
    "one pass": (False, False, 0),
    "mirror": (True, False, 0),
    "mirror + multi-crop": (True, True, 0),
    "mirror + refine 1": (True, False, 1),
    "mirror + refine 2": (True, False, 2),
    "mirror + refine 1 + multi-crop": (True, True, 1),
}


def held_out_sets(config: str, check: str) -> dict[str, list[Any]]:
    """The validation split ``config`` carves from its training faces, and the ``check`` set when given."""
    cfg = load_config(config)
    _, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    return {"validation": val_faces, **({"check": read_annotations(check)} if check else {})}


def write_lines(path: str | None, lines: list[str]) -> None:
    """Write the JSON lines to ``path`` (nothing when None)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("\n".join(lines) + "\n")


class CachedDetector:
    """The package's face detector, each image's boxes computed once (keyed by the pixels)."""

    def __init__(self) -> None:
        from tcdcn.inference.detectors import FaceDetector

        self.detector = FaceDetector()
        self.cache: dict[str, list[Box]] = {}

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        key = hashlib.sha1(rgb.tobytes()).hexdigest() + str(rgb.shape)
        if key not in self.cache:
            self.cache[key] = [d.box for d in self.detector(rgb)]
        return self.cache[key]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtfl-5pt")
    p.add_argument("--config", default="configs/mtfl-5pt.yaml", help="its data section carves the validation split")
    p.add_argument("--check", default="../shared/data/300w", help="out-of-domain check set ('' to skip)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated names of MODES")
    p.add_argument("--boxes", default="gt,detect")
    p.add_argument("--out", help="also write the JSON lines to this file")
    args = p.parse_args(argv)

    sets = held_out_sets(args.config, args.check)
    model = LandmarkModel.load(args.model)
    detector = CachedDetector()
    lines: list[str] = []
    for mode in args.modes.split(","):
        set_test_time_options(model, *MODES[mode])
        for set_name, faces in sets.items():
            for box in args.boxes.split(","):
                summary: dict[str, Any] = evaluate(model, faces, box, detector if box == "detect" else None).summary()
                row = {"mode": mode, "set": set_name, "box": box, "n": summary["n"], "found": summary["detected"],
                       "nme": round(100 * summary["nme"], 3), "failure_rate": round(100 * summary["failure_rate"], 2)}
                lines.append(json.dumps(row))
                print(lines[-1], flush=True)
    write_lines(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
