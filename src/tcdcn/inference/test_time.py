"""Test-time options of a loaded model: mirror-averaging, multi-crop and box refinement.

Each model starts with its own defaults: a shipped model's card's (``models.registry.apply_test_time_defaults``),
an exported ``.onnx`` file's ``test_time`` metadata (the defaults of the model it was exported from), a
checkpoint's ``config.inference`` (one pass on the box alone unless the training config says otherwise).
``set_test_time_options`` overrides them for one run, as the command-line switches
(``cli.arguments.add_test_time_arguments``) and ``LandmarkDetector`` do; ``describe_test_time`` is the line
``tcdcn predict`` and ``tcdcn evaluate`` log, so that options other than the model's own are never silent.
"""

from __future__ import annotations

from typing import Any

from ..models.registry import STANDARD_MULTI_CROP
from .pipeline import CropLandmarkModel

MAX_BOX_REFINEMENTS = 10  # each is a full pass; answers stop moving after one or two


def set_test_time_options(model: CropLandmarkModel, mirror_average: bool | None = None,
                          multi_crop: bool | str | None = None, box_refinements: int | None = None,
                          local_stage: bool | None = None) -> None:
    """Override a model's test-time defaults (None keeps them). ``multi_crop=True`` keeps the model's
    crops, or gives it the standard grid (``models.registry.STANDARD_MULTI_CROP``) when it has none;
    ``"grid"`` gives it the standard grid whatever its own crops; False runs the box alone.
    ``local_stage`` switches the model's local stage (ValueError when True for a model without one)."""
    if local_stage and model.local_stage is None:
        raise ValueError("this model has no local stage (the shipped 300w-68pt has one)")
    if local_stage is not None:
        model.use_local_stage = local_stage
    if box_refinements is not None:
        if box_refinements < 0:
            raise ValueError(f"box_refinements must be >= 0, got {box_refinements}")
        model.box_refinements = box_refinements
    if mirror_average is not None:
        model.mirror_average = mirror_average
    if multi_crop == "grid":
        model.multi_crop = STANDARD_MULTI_CROP
    elif isinstance(multi_crop, str):
        raise ValueError(f"multi_crop must be a bool, None or 'grid', got {multi_crop!r}")
    elif multi_crop is not None:
        model.multi_crop = (model.multi_crop or STANDARD_MULTI_CROP) if multi_crop else ()


def test_time_summary(model: CropLandmarkModel) -> dict[str, Any]:
    """The test-time options a model ran with, as reports record them."""
    return {"flip": model.mirror_average, "crops_per_face": max(1, len(model.multi_crop)),
            "box_refinements": model.box_refinements,
            "local_stage": bool(model.use_local_stage and model.local_stage is not None)}


def describe_test_time(model: CropLandmarkModel, defaults: dict[str, Any] | None = None) -> str:
    """One line naming the test-time options a model runs, and ``defaults`` (a ``test_time_summary`` taken
    before any override) when they differ from them."""

    def text(summary: dict[str, Any]) -> str:
        refinements = summary["box_refinements"]
        return (f"flip {'on' if summary['flip'] else 'off'}, {summary['crops_per_face']} crop(s) per face, "
                f"{refinements} box refinement{'' if refinements == 1 else 's'}"
                f"{', local stage' if summary.get('local_stage') else ''}")

    current = test_time_summary(model)
    if defaults is None or defaults == current:
        return f"test-time options: {text(current)} (the model's defaults)"
    return f"test-time options: {text(current)} (the model's defaults: {text(defaults)})"
