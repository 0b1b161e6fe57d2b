"""Copy a trained checkpoint into the package as a shipped model: slim weights, ONNX twin and model card.

    python scripts/ship_model.py runs/mtfl-5pt/best.pt mtfl-5pt [--mirror-calibration configs/mtfl-5pt.yaml]
    python scripts/ship_model.py RUN/best.pt candidate --mirror-calibration configs/mtfl-5pt.yaml --to runs/candidate.pt

Writes ``src/tcdcn/models/weights/NAME.pt`` (model, config, scheme, tasks and the learned task covariance and
coefficients; no optimiser or RNG state), ``NAME.onnx`` (and with ``--int8-calibration`` ``NAME.int8.onnx``) and
the model card ``NAME.json`` (``tcdcn.models.registry``): file names and sha256 sums, scheme, crop size,
preprocessing and box convention from the checkpoint, and the calibration folded in. What the script cannot
know it keeps from the previous card (training data, test-time defaults), or for a new model writes the
package's defaults (mirror-averaging, one box refinement, the standard multi-crop grid). The figures of a card
describe its weights: shipping other weights drops them, and the new ones are added to the card by hand, each
with the command that measures it (docs/results.md).

``--mirror-calibration CONFIG`` first folds the horizontal offset that mirror augmentation leaves (see
``tcdcn.evaluation.calibration``) into the landmark head, fitted on the validation split CONFIG carves from its
training data; the shipped file records the offsets and prints the validation error before and after
(2-fold cross-fitted). Use it only where that validation split is not also the reporting split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import onnx

from tcdcn.config import config_from_dict, load_config
from tcdcn.data.dataset import split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.evaluation.calibration import (
    cross_fitted_error,
    fold_landmark_offset,
    horizontal_offsets,
    prediction_offsets,
)
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.inference.export import DEFAULT_CALIBRATION_FACES, calibration_crops, export_onnx, quantize_int8
from tcdcn.io.atomic import atomic_write_text
from tcdcn.models.checkpoint import atomic_save, read_checkpoint
from tcdcn.models.denormals import flush_state_dict, onnx_denormal_count, zero_fraction
from tcdcn.models.registry import (
    AUTO_BACKENDS,
    BOX_CONVENTION,
    CARD_FORMAT,
    CARD_FORMAT_VERSION,
    STANDARD_GRID_SHIFT,
    apply_options_record,
    describe_preprocessing,
    read_card,
    sha256_of,
)

# What a shipped file keeps from a training checkpoint.
# (best_val_nme is left out: a last-epoch file would carry another epoch's figure; the model card records the
# figures.)
SHIPPED_KEYS = ("model", "config", "scheme", "tasks", "task_covariance", "task_coefficients", "mirror_calibration")
WEIGHTS_DIR = Path("src/tcdcn/models/weights")  # run from the repository root (the ONNX metadata keeps this path)
# What a new card says the figures ran with: the test-time defaults it gets.
FIGURES_INFERENCE = ("default inference (one box refinement, then the 3x3 multi-crop grid, every crop "
                     "mirror-averaged) unless a figure says otherwise")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a training checkpoint (RUN/best.pt or RUN/last.pt)")
    p.add_argument("name", help="shipped model name, e.g. mtfl-5pt")
    p.add_argument("--mirror-calibration", metavar="CONFIG", default="",
                   help="fold the mirror-axis offset fitted on CONFIG's validation split into the landmark head")
    p.add_argument("--int8-calibration", metavar="ANNOTATIONS", default="",
                   help="also ship NAME.int8.onnx, calibrated on these TRAINING faces (the model's own training "
                        "list; e.g. ../shared/data/mtfl/training.txt)")
    p.add_argument("--auto-backend", choices=AUTO_BACKENDS, default=None,
                   help="the graph backend 'auto' runs the model on (int8 only where the int8 graph scored as the "
                        "float one on the validation split: python bench/validation.py --backend int8); default: "
                        "the previous card's for the same weights, else onnx")
    p.add_argument("--to", metavar="FILE", default="",
                   help="write the slim (calibrated) checkpoint to FILE instead of shipping it: for comparing "
                        "candidates before one is shipped")
    args = p.parse_args(argv)
    if not args.to and not WEIGHTS_DIR.is_dir():
        p.error(f"{WEIGHTS_DIR}: not found; run from the repository root")
    state = read_checkpoint(args.checkpoint)
    slim = {k: state[k] for k in SHIPPED_KEYS if k in state}
    if args.mirror_calibration:
        slim = mirror_calibrated(slim, args.checkpoint, args.mirror_calibration)
    # Denormal weights change no output and cost some x86 CPUs many times the time (tcdcn.models.denormals).
    slim["model"], flushed = flush_state_dict(slim["model"])
    zeros, total = zero_fraction(slim["model"])
    print(f"weights: {flushed} denormal values flushed to zero; {zeros} of {total} ({zeros / total:.1%}) are zero")
    if args.to:
        atomic_save(slim, Path(args.to))
        print(f"{args.to}: written (not shipped)")
        return 0
    pt_file = WEIGHTS_DIR / f"{args.name}.pt"
    atomic_save(slim, pt_file)
    torch_model = LandmarkModel.load(pt_file)
    # The .onnx twin carries the card's test-time defaults, so the file run by its path runs as the shipped name.
    apply_options_record(torch_model, card_test_time_defaults(args.name), f"{args.name} card")
    onnx_file = export_onnx(torch_model, WEIGHTS_DIR / f"{args.name}.onnx")
    left = onnx_denormal_count(onnx.load(str(onnx_file)))
    if left:
        raise SystemExit(f"{onnx_file}: {left} denormal values left after export; not shipped")
    print(f"{pt_file}: sha256={sha256_of(pt_file)}")
    print(f"{onnx_file}: onnx_sha256={sha256_of(onnx_file)}")
    int8_file = None
    if args.int8_calibration:
        model = LandmarkModel.load(pt_file)
        crops = calibration_crops(args.int8_calibration, DEFAULT_CALIBRATION_FACES, model.input_size)
        int8_file = quantize_int8(onnx_file, WEIGHTS_DIR / f"{args.name}.int8.onnx", crops)
        print(f"{int8_file}: int8_onnx_sha256={sha256_of(int8_file)} ({len(crops)} calibration faces)")
    card = write_card(args.name, slim, pt_file, onnx_file, int8_file, args.mirror_calibration, args.auto_backend)
    print(f"{card}: model card written")
    return 0


def write_card(name: str, slim: dict[str, Any], pt_file: Path, onnx_file: Path, int8_file: Path | None,
               mirror_calibration: str, auto_backend: str | None = None) -> Path:
    """Write or update ``NAME.json`` beside the shipped files (see the module notes); returns its path."""
    path = WEIGHTS_DIR / f"{name}.json"
    previous: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    same_weights = previous.get("files", {}).get("torch", {}).get("sha256") == sha256_of(pt_file)
    cfg = config_from_dict(slim["config"])
    files = {"torch": _file_entry(pt_file), "onnx": _file_entry(onnx_file)}
    stale_int8 = WEIGHTS_DIR / f"{name}.int8.onnx"
    if int8_file is not None:
        files["int8_onnx"] = _file_entry(int8_file)
    elif same_weights and "int8_onnx" in previous.get("files", {}):
        files["int8_onnx"] = previous["files"]["int8_onnx"]
    elif stale_int8.is_file():  # quantised from other weights: it would run them under this name
        stale_int8.unlink()
        print(f"{stale_int8}: removed (made from the previous weights; ship with --int8-calibration for a new one)")
    calibration = ""
    record = slim.get("mirror_calibration")
    if mirror_calibration and record:
        calibration = (f"mirror-axis x offsets (tcdcn.evaluation.calibration) fitted on the "
                       f"{record['validation_faces']:,} validation faces and folded into the landmark head "
                       f"(scripts/ship_model.py --mirror-calibration {mirror_calibration})")
    elif same_weights:
        calibration = previous.get("calibration", "")
    if auto_backend is None:  # an int8 graph of other weights was never checked on validation
        auto_backend = previous.get("auto_backend", "onnx") if same_weights else "onnx"
    if auto_backend == "int8" and "int8_onnx" not in files:
        raise SystemExit(f"{path}: --auto-backend int8 needs an int8 graph (--int8-calibration)")
    figures = previous.get("figures", []) if same_weights else []
    if previous.get("figures") and not same_weights:
        print(f"{path}: the {len(previous['figures'])} figures of the previous weights are dropped; measure the new "
              "weights and add their figures, each with its command")
    card = {
        "format": CARD_FORMAT,
        "format_version": CARD_FORMAT_VERSION,
        "name": name,
        "files": files,
        "scheme": str(slim.get("scheme", cfg.data.scheme)),
        "input_size": cfg.model.input_size,
        "preprocessing": describe_preprocessing(cfg.model.input_size),
        "box_convention": BOX_CONVENTION,
        "training_data": previous.get("training_data", f"{cfg.data.train} (config stored in {name}.pt)"),
        "calibration": calibration,
        "auto_backend": auto_backend,
        "test_time_defaults": card_test_time_defaults(name),
        "figures_inference": previous.get("figures_inference", FIGURES_INFERENCE),
        "figures": figures,
    }
    atomic_write_text(path, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    read_card(path)  # the package must be able to read what was written
    return path


def card_test_time_defaults(name: str) -> dict[str, Any]:
    """The card's test-time defaults: the previous card's, else mirror-averaging, one box refinement and the
    standard multi-crop grid."""
    path = WEIGHTS_DIR / f"{name}.json"
    previous: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return previous.get("test_time_defaults", {
        "mirror_average": True, "box_refinements": 1, "multi_crop": {"grid_shift": STANDARD_GRID_SHIFT}})


def _file_entry(path: Path) -> dict[str, str]:
    return {"file": path.name, "sha256": sha256_of(path)}


def mirror_calibrated(slim: dict[str, Any], checkpoint: str, config_path: str) -> dict[str, Any]:
    """``slim`` with the validation-fitted horizontal offsets folded into its landmark head."""
    cfg = load_config(config_path)
    _, val_faces = split_faces(read_annotations(cfg.data.train), cfg.data)
    model = LandmarkModel.load(checkpoint)
    offsets = prediction_offsets(model, val_faces)  # (N, P, 2)
    fitted = horizontal_offsets(offsets)  # (P, 2)
    before, after = cross_fitted_error(offsets, val_faces)
    fold_landmark_offset(model.network, fitted)
    record = {"offset_x": [round(float(v), 6) for v in fitted[:, 0]], "fitted_on": config_path,
              "validation_faces": len(val_faces), "validation_nme_before": round(before, 5),
              "validation_nme_after_cross_fitted": round(after, 5)}
    print("mirror calibration:", json.dumps(record))
    return {**slim, "model": model.network.state_dict(), "mirror_calibration": record}


if __name__ == "__main__":
    raise SystemExit(main())
