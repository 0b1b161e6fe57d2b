"""Shipped models, read from their model cards: ``weights/NAME.json`` beside each model's files.

A card names the model's files with their sha256 sums (the torch checkpoint, its ONNX twin, its int8 graph), its
landmark scheme, crop size, preprocessing and face-box convention, what it was trained on, any calibration folded
into its weights, its test-time defaults, and the figures it reached, each with the command that measures it.
Files are loaded with their checksum verified. Nothing is downloaded: the files ship in the package.
``scripts/ship_model.py`` writes the files and updates the card.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..geometry import CropJitter, grid_jitters

CARD_FORMAT = "tcdcn-model-card"
CARD_FORMAT_VERSION = 1
# The model every command and the Python API use when none is named.
DEFAULT_MODEL = "mtfl-5pt"
# The multi-crop grid chosen on the MTFL validation split with ground-truth boxes (bench/multi_crop.py): the
# box and its 8 neighbours 0.04 box sides away. It helps only when the box is centred on the convention,
# so it runs after one box refinement (chosen with detector boxes, bench/inference_modes.py), which
# re-centres the box on the first answer's points. The shipped cards name a cheaper crop set; the grid is
# what ``--grid`` and ``--multi-crop`` on a model without crops run (bench/test_time_plans.py).
STANDARD_GRID_SHIFT = 0.04
STANDARD_MULTI_CROP = grid_jitters(STANDARD_GRID_SHIFT)
# What a card states about the face box; every model of the package is trained and run on this convention.
BOX_CONVENTION = "square box on the 5 points' bounding-box centre, side 2.8x its larger side (tcdcn.geometry)"


def describe_preprocessing(input_size: int) -> str:
    """How a model's input is made, as a card states it."""
    return (f"grey (ITU-R 601 luma), square face box cropped and resized to {input_size}x{input_size} "
            "(area-averaged when shrinking), per-image standardised")


@dataclass(frozen=True)
class Figure:
    """A figure a shipped model reached: ``value`` (a fraction for errors and rates), what it measures, and the
    command that measures it."""

    name: str
    value: float
    what: str
    command: str


@dataclass(frozen=True)
class ModelWeights:
    """A shipped model as its card describes it."""

    name: str
    file: str  # the torch checkpoint, inside tcdcn/models/weights/
    sha256: str
    scheme: str
    input_size: int
    box_convention: str
    preprocessing: str
    training_data: str
    figures: tuple[Figure, ...] = ()
    onnx_file: str = ""  # the .onnx twin beside the .pt (torch-free inference)
    onnx_sha256: str = ""
    int8_onnx_file: str = ""  # static int8 quantisation of the .onnx (backend "int8")
    int8_onnx_sha256: str = ""
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
    local_stage_file: str = ""  # the local stage's .onnx (tcdcn.inference.local_stage), for dense models
    local_stage_sha256: str = ""
    local_stage: bool = False  # whether the default inference runs it
    figures_inference: str = ""  # the test-time options the figures ran with unless a figure says otherwise
    # The backend "auto" runs the model on: "int8" (its int8 graph) where that graph scored as the float one on
    # the validation split, else "onnx" (float32).
    auto_backend: str = "onnx"
    card: Path = field(default=Path(), compare=False)

    @property
    def metrics(self) -> dict[str, float]:
        """The figures' values by name."""
        return {f.name: f.value for f in self.figures}

    def path(self, kind: str = "torch") -> Path:
        """A file of the model: "torch" (the .pt), "onnx" or "int8_onnx"."""
        names = {"torch": self.file, "onnx": self.onnx_file, "int8_onnx": self.int8_onnx_file,
                 "local_stage": self.local_stage_file}
        return weights_folder() / names[kind]


def weights_folder() -> Path:
    return Path(str(resources.files("tcdcn.models") / "weights"))


def _multi_crop(spec: Any, where: str) -> tuple[CropJitter, ...]:
    """A card's ``multi_crop``: null (the box alone), ``{"grid_shift": s}`` (the box and its 8 neighbours ``s``
    box sides away) or ``{"crops": [[dx, dy, scale], ...]}``."""
    if spec is None:
        return ()
    if isinstance(spec, dict) and set(spec) == {"grid_shift"}:
        return grid_jitters(float(spec["grid_shift"]))
    if isinstance(spec, dict) and set(spec) == {"crops"}:
        return tuple(CropJitter(float(dx), float(dy), float(scale)) for dx, dy, scale in spec["crops"])
    raise CheckpointError(f"{where}: test_time_defaults.multi_crop must be null, {{\"grid_shift\": s}} or "
                          f"{{\"crops\": [[dx, dy, scale], ...]}}, got {spec!r}")


AUTO_BACKENDS = ("onnx", "int8")


def read_card(path: str | Path) -> ModelWeights:
    """A model card, or ``CheckpointError`` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable model card ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CheckpointError(f"{path}: not a tcdcn model card (format is not {CARD_FORMAT!r})")
    if card.get("format_version") != CARD_FORMAT_VERSION:
        raise CheckpointError(f"{path}: model card format_version {card.get('format_version')!r}, this tcdcn reads "
                              f"{CARD_FORMAT_VERSION}")
    auto_backend = card.get("auto_backend", "onnx")
    if auto_backend not in AUTO_BACKENDS:
        raise CheckpointError(f"{path}: auto_backend must be one of {', '.join(AUTO_BACKENDS)}, got {auto_backend!r}")
    if auto_backend == "int8" and "int8_onnx" not in card.get("files", {}):
        raise CheckpointError(f"{path}: auto_backend is int8 but the card lists no int8_onnx file")
    try:
        files, defaults = card["files"], card.get("test_time_defaults", {})
        return ModelWeights(
            name=str(card["name"]),
            file=str(files["torch"]["file"]),
            sha256=str(files["torch"]["sha256"]),
            onnx_file=str(files.get("onnx", {}).get("file", "")),
            onnx_sha256=str(files.get("onnx", {}).get("sha256", "")),
            int8_onnx_file=str(files.get("int8_onnx", {}).get("file", "")),
            int8_onnx_sha256=str(files.get("int8_onnx", {}).get("sha256", "")),
            scheme=str(card["scheme"]),
            input_size=int(card["input_size"]),
            box_convention=str(card["box_convention"]),
            preprocessing=str(card["preprocessing"]),
            training_data=str(card["training_data"]),
            calibration=str(card.get("calibration", "")),
            mirror_average=bool(defaults.get("mirror_average", False)),
            box_refinements=int(defaults.get("box_refinements", 0)),
            local_stage_file=str(files.get("local_stage", {}).get("file", "")),
            local_stage_sha256=str(files.get("local_stage", {}).get("sha256", "")),
            local_stage=bool(defaults.get("local_stage", False)),
            multi_crop=_multi_crop(defaults.get("multi_crop"), str(path)),
            figures_inference=str(card.get("figures_inference", "")),
            auto_backend=str(auto_backend),
            figures=tuple(Figure(str(f["name"]), float(f["value"]), str(f["what"]), str(f["command"]))
                          for f in card.get("figures", [])),
            card=path,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed model card ({type(exc).__name__}: {exc})") from None


def read_cards(folder: Path) -> dict[str, ModelWeights]:
    """Every card in ``folder`` by model name, the default model first, then by name."""
    cards = [read_card(path) for path in sorted(folder.glob("*.json"))]
    return {w.name: w for w in sorted(cards, key=lambda w: (w.name != DEFAULT_MODEL, w.name))}


SHIPPED: dict[str, ModelWeights] = read_cards(weights_folder())


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def multi_crop_spec(jitters: tuple[CropJitter, ...]) -> dict[str, Any] | None:
    """A crop set as a card or an ONNX file's ``test_time`` record states it (the inverse of ``_multi_crop``):
    null, ``{"grid_shift": s}`` or ``{"crops": [[dx, dy, scale], ...]}``."""
    if not jitters:
        return None
    shift = abs(jitters[1].dx) if len(jitters) > 1 else 0.0
    if 0.0 < shift < 0.5 and tuple(jitters) == grid_jitters(shift):
        return {"grid_shift": round(shift, 8)}
    return {"crops": [[j.dx, j.dy, j.scale] for j in jitters]}


def options_record(model: Any) -> dict[str, Any]:
    """A model's test-time options as the ``test_time`` record of an exported ONNX file (the card's
    ``test_time_defaults`` format)."""
    return {"mirror_average": bool(model.mirror_average), "multi_crop": multi_crop_spec(tuple(model.multi_crop)),
            "box_refinements": int(model.box_refinements)}


def apply_options_record(model: Any, record: Any, where: str) -> None:
    """Set a model's test-time options from a ``test_time`` record (``options_record``), or
    ``CheckpointError`` naming ``where``."""
    if not isinstance(record, dict):
        raise CheckpointError(f"{where}: test_time must be a mapping, got {record!r}")
    try:
        refinements = int(record.get("box_refinements", 0))
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: test_time.box_refinements must be an integer, got "
                              f"{record.get('box_refinements')!r}") from None
    if refinements < 0:
        raise CheckpointError(f"{where}: test_time.box_refinements must be >= 0, got {refinements}")
    model.mirror_average = bool(record.get("mirror_average", False))
    model.multi_crop = _multi_crop(record.get("multi_crop"), where)
    model.box_refinements = refinements


def apply_test_time_defaults(model: Any, name_or_path: str | Path, config: Any = None) -> None:
    """Set a loaded model's test-time options (``mirror_average``, ``multi_crop``, ``box_refinements``): a shipped
    name's card's, else the checkpoint's ``config.inference`` (``tcdcn.config.InferenceConfig``: one pass on the
    box alone unless the training config says otherwise)."""
    record = SHIPPED.get(str(name_or_path))
    if record is not None:
        model.mirror_average = record.mirror_average
        model.multi_crop = record.multi_crop
        model.box_refinements = record.box_refinements
        model.use_local_stage = record.local_stage
        return
    inference = getattr(config, "inference", None)
    model.mirror_average = bool(inference and inference.mirror_average)
    shift = float(inference.multi_crop_grid_shift) if inference else 0.0
    model.multi_crop = grid_jitters(shift) if shift > 0 else ()
    model.box_refinements = int(inference.box_refinements) if inference else 0
    model.use_local_stage = False


def verify_sha256(path: Path, expected: str) -> Path:
    """``path`` when its sha256 is ``expected`` (or nothing is expected), else ``CheckpointError`` naming it."""
    if expected:
        actual = sha256_of(path)
        if actual != expected:
            raise CheckpointError(f"{path}: sha256 does not match the expected {expected[:12]}... (it is "
                                  f"{actual[:12]}...)")
    return path


def resolve_weights_file(name_or_path: str) -> Path:
    """A shipped model's name (checksum verified) or a checkpoint path -> the file to load."""
    if name_or_path in SHIPPED:
        w = SHIPPED[name_or_path]
        path = w.path()
        if not path.is_file():
            raise CheckpointError(f"{path}: shipped model {w.name!r} is missing from the installation")
        return verify_sha256(path, w.sha256)
    path = Path(name_or_path)
    if not path.exists():
        raise CheckpointError(f"{name_or_path}: neither a shipped model ({', '.join(SHIPPED)}) nor a file")
    return path
