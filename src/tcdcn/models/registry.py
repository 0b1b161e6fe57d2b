"""Shipped models: each described by a small record (file, sha256, scheme, preprocessing, the figures
it reached), loaded with its checksum verified. Nothing is downloaded: the files ship in the package.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..geometry import CropJitter, grid_jitters


@dataclass(frozen=True)
class ModelWeights:
    name: str
    file: str  # inside tcdcn/models/weights/
    sha256: str
    scheme: str
    input_size: int
    box_convention: str
    preprocessing: str
    training_data: str
    metrics: dict[str, float] = field(default_factory=dict)
    onnx_sha256: str = ""  # the .onnx twin beside the .pt (torch-free inference)
    int8_onnx_sha256: str = ""  # the .int8.onnx twin: static int8 quantisation of the .onnx (backend "int8")
    calibration: str = ""  # any post-training adjustment folded into the weights, and what it was fitted on
    # Test-time mirroring on by default: each face is also run mirrored and the answers averaged (one
    # network call on both crops). Chosen on the validation split; callers can switch it off.
    mirror_average: bool = False
    # Test-time crops (tcdcn.geometry.CropJitter) averaged by default; empty: the box alone. Chosen on
    # the validation split; callers can switch it off.
    multi_crop: tuple[CropJitter, ...] = ()
    # Re-framings of each face on the convention's box of the previous answer's points before the last
    # pass (tcdcn.inference.pipeline.CropLandmarkModel.predict). Chosen on validation with detector boxes.
    box_refinements: int = 0

    def path(self) -> Path:
        return Path(str(resources.files("tcdcn.models") / "weights" / self.file))


# The multi-crop grid chosen on the MTFL validation split with ground-truth boxes (bench/multi_crop.py): the
# box and its 8 neighbours 0.04 box sides away. It helps only when the box is centred on the convention,
# so the shipped models run it after one box refinement (chosen with detector boxes,
# bench/inference_modes.py), which re-centres the box on the first answer's points.
STANDARD_MULTI_CROP = grid_jitters(0.04)


def _preprocess(size: int) -> str:
    return (f"grey (ITU-R 601 luma), square face box cropped and resized to {size}x{size} (area-averaged when "
            "shrinking), per-image standardised")


_BOX = "square box on the 5 points' bounding-box centre, side 2.8x its larger side (tcdcn.geometry)"

SHIPPED: dict[str, ModelWeights] = {
    w.name: w
    for w in (
        ModelWeights(
            name="mtfl-5pt",
            file="mtfl-5pt.pt",
            sha256="72f748165f11873aa08d8ab978bb2326c14140eb5978f04fe242dba32f918823",
            onnx_sha256="103409d034f48f3411ecd72dadc7ca5c7fa373154c7144b5d2edfa7504eff534",
            int8_onnx_sha256="749d96b0436d5f8e13f1648b77a4dcf605b8cb102b383f642498d38b9cf110f3",
            scheme="mtfl-5",
            input_size=60,
            box_convention=_BOX,
            preprocessing=_preprocess(60),
            training_data="MTFL training set (9,000 faces; 1,000 held out for validation); configs/mtfl-5pt.yaml "
                          "(wing loss, 120 epochs), best validation epoch (118); then configs/mtfl-5pt-swa.yaml "
                          "(30 epochs at a flat 2e-4), the average of the epoch-end weights of epochs 3-30",
            # Default inference (box refinement + multi-crop + mirror-averaging) unless the key says otherwise.
            metrics={"val_nme": 0.0366, "val_nme_detector_boxes": 0.0432,
                     "val_nme_box_alone_mirror_averaged": 0.0377, "val_nme_detector_boxes_box_alone": 0.0482,
                     "val_nme_one_pass_calibrated_cross_fitted": 0.0397,
                     "aflw_nme_box_image": 0.0764, "aflw_failure_rate_box_image": 0.1185,
                     "aflw_nme_box_image_box_alone_mirror_averaged": 0.0770,
                     "aflw_nme_box_image_one_pass": 0.0786, "aflw_failure_rate_box_image_one_pass": 0.1476},
            mirror_average=True,
            box_refinements=1,
            multi_crop=STANDARD_MULTI_CROP,
            calibration="mirror-axis x offsets (tcdcn.evaluation.calibration) fitted on the 1,000 validation faces and "
                        "folded into the landmark head (scripts/ship_model.py --mirror-calibration "
                        "configs/mtfl-5pt.yaml)",
        ),
        ModelWeights(
            name="300w-68pt",
            file="300w-68pt.pt",
            sha256="2c0c83e3683c08ed2f696b7a6db60c87890d132f5e75c102f01959443a5d0afc",
            onnx_sha256="0814f764e07df7f90660a20ad1d8e2fac81e343727b162ae3ddc0d52875bd12e",
            int8_onnx_sha256="da4a1ede585a8a8885644c5cd2ac4f9da7f373cd2055de7f417b0e32704e18bb",
            scheme="ibug-68",
            input_size=80,
            box_convention=_BOX,
            preprocessing=_preprocess(80),
            training_data="300-W AFW + Helen-train part (1,207 faces; 181 held out for validation, split_seed 0); "
                          "conv filters from mtfl-5pt (paper Sec. 3.4), 80x80 crops; "
                          "configs/300w-68pt-transfer.yaml (wing loss, 300 epochs), last epoch",
            # Default inference (box refinement + multi-crop + mirror-averaging) unless the key says otherwise.
            metrics={"val_nme_interocular": 0.0407, "val_nme_interpupil": 0.0570, "val_failure_rate": 0.0,
                     "val_helen_nme_interpupil": 0.0539, "val_nme_interocular_detector_boxes": 0.0715,
                     "val_nme_interocular_box_alone_mirror_averaged": 0.0412,
                     "val_helen_nme_interpupil_box_alone_mirror_averaged": 0.0546,
                     "val_nme_interocular_one_pass": 0.0432, "val_nme_interpupil_one_pass": 0.0604,
                     "val_helen_nme_interpupil_one_pass": 0.0572},
            mirror_average=True,
            box_refinements=1,
            multi_crop=STANDARD_MULTI_CROP,
        ),
    )
}


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def apply_test_time_defaults(model: Any, name_or_path: str | Path) -> None:
    """Set a loaded model's test-time options (``mirror_average``, ``multi_crop``, ``box_refinements``)
    to its record's for a shipped name; any file runs one pass on the box alone."""
    record = SHIPPED.get(str(name_or_path))
    model.mirror_average = bool(record and record.mirror_average)
    model.multi_crop = record.multi_crop if record else ()
    model.box_refinements = record.box_refinements if record else 0


def resolve_weights_file(name_or_path: str) -> Path:
    """A shipped model's name (checksum verified) or a checkpoint path -> the file to load."""
    if name_or_path in SHIPPED:
        w = SHIPPED[name_or_path]
        path = w.path()
        if not path.is_file():
            raise CheckpointError(f"{path}: shipped model {w.name!r} is missing from the installation")
        actual = sha256_of(path)
        if actual != w.sha256:
            raise CheckpointError(f"{path}: sha256 {actual[:12]}... does not match the expected {w.sha256[:12]}...")
        return path
    path = Path(name_or_path)
    if not path.exists():
        raise CheckpointError(f"{name_or_path}: neither a shipped model ({', '.join(SHIPPED)}) nor a file")
    return path
