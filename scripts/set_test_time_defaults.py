"""Set a shipped model's test-time defaults and the graph ``auto`` runs it on, without touching its weights.

    python scripts/set_test_time_defaults.py mtfl-5pt --crop=0.02,0.02 --crop=-0.02,-0.02 --box-refinements 1 \\
        --mirror --auto-backend int8

Writes the new ``test_time`` record into the model's ``.onnx`` and ``.int8.onnx`` files (so that each file run
by its path runs as the shipped name does) and updates the model card ``NAME.json``: ``test_time_defaults``,
``auto_backend``, the two files' sha256 sums, ``figures_inference``. ``--local-stage RUN/refiner.pt`` (trained by
``bench/local_refinement.py`` on the model's own training split) exports a local stage to ``NAME.local.onnx`` and
switches it on; ``--no-local-stage`` switches a shipped one off; without either the card's choice stays (the
``.onnx`` files alone never run the stage). Figures kept for their own plan whose command does not say
``--local-stage`` or ``--no-local-stage`` get ``--no-local-stage`` when the stage comes on (they ran without it).
The figures that ran with the model's default inference are dropped (their names are printed): measure them
again with the new defaults and add them back, each with its command. Figures whose command names its own
test-time switches are kept. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tcdcn.geometry import CropJitter
from tcdcn.inference.export import set_test_time_metadata
from tcdcn.io.atomic import atomic_write_text
from tcdcn.models.registry import AUTO_BACKENDS, multi_crop_spec, read_card, sha256_of

WEIGHTS_DIR = Path("src/tcdcn/models/weights")
# A figure whose command sets all three switches did not run the default plan.
OWN_PLAN_SWITCHES = ("--box-refinements", "--no-multi-crop")


def crop_argument(text: str) -> CropJitter:
    try:
        dx, dy = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DX,DY (fractions of the box side), got {text!r}") from None
    if not (abs(dx) < 0.5 and abs(dy) < 0.5):
        raise argparse.ArgumentTypeError(f"a crop moves the box by less than half its side, got {text!r}")
    return CropJitter(dx, dy)


def describe(record: dict[str, Any]) -> str:
    """The card's ``figures_inference`` line for a ``test_time`` record."""
    crops = record["multi_crop"]
    if crops is None:
        last = "the box alone"
    elif "grid_shift" in crops:
        last = f"the 3x3 grid of crops {crops['grid_shift']} box sides apart"
    else:
        last = f"{len(crops['crops'])} crops moved by " + ", ".join(f"({dx:+g}, {dy:+g})" for dx, dy, _ in
                                                                    crops["crops"]) + " box sides"
    refinements = record["box_refinements"]
    mirror = ", each crop mirror-averaged" if record["mirror_average"] else ""
    stage = ", then the local stage on patches around the points" if record.get("local_stage") else ""
    return (f"default inference ({refinements} box refinement{'' if refinements == 1 else 's'} on the plain crop, "
            f"then {last}{mirror}{stage}) unless a figure says otherwise")


def export_stage(refiner: Path, name: str) -> dict[str, str]:
    """``bench/local_refinement.py``'s ``refiner.pt`` -> ``NAME.local.onnx`` in the package; its card entry."""
    import torch

    from tcdcn.data.patches import PatchGeometry
    from tcdcn.inference.local_stage import LocalStage
    from tcdcn.models.local_stage import LocalStageNetwork, export_local_stage
    from tcdcn.schemes import get_scheme

    state = torch.load(refiner, weights_only=False, map_location="cpu")
    scheme = get_scheme(read_card(WEIGHTS_DIR / f"{name}.json").scheme)
    geometry = PatchGeometry(scheme, int(state.get("canonical_size", 128)), int(state.get("patch_size", 48)),
                             tuple(float(s) for s in state["sides"]))
    network = LocalStageNetwork(geometry)
    network.load_state_dict(state["network"])
    path = export_local_stage(network, geometry, WEIGHTS_DIR / f"{name}.local.onnx")
    LocalStage(path)  # the package must be able to read what was written
    print(f"{path}: local stage from {refiner} (step {state.get('step')})")
    return {"file": path.name, "sha256": sha256_of(path)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="shipped model name, e.g. mtfl-5pt")
    p.add_argument("--crop", dest="crops", action="append", type=crop_argument, default=[], metavar="DX,DY",
                   help="one of the last pass's crops, repeatable (write --crop=-0.02,-0.02 for negative moves; "
                        "none: the box alone)")
    p.add_argument("--box-refinements", type=int, choices=range(0, 11), default=1, metavar="K")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=True,
                   help="mirror-average the last pass's crops")
    p.add_argument("--auto-backend", choices=AUTO_BACKENDS, required=True,
                   help="int8 only where the int8 graph scored as the float one on validation")
    stage = p.add_mutually_exclusive_group()
    stage.add_argument("--local-stage", type=Path, default=None, metavar="REFINER_PT",
                       help="export this local stage into the package and run it by default")
    stage.add_argument("--no-local-stage", action="store_true", help="do not run the shipped local stage by default")
    p.add_argument("--keep", nargs="*", default=[], metavar="FIGURE",
                   help="figures that did not run the default inference although their command sets no plan")
    args = p.parse_args(argv)
    card_path = WEIGHTS_DIR / f"{args.name}.json"
    if not card_path.is_file():
        p.error(f"{card_path}: no such model card; run from the repository root")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    record = {"mirror_average": bool(args.mirror), "multi_crop": multi_crop_spec(tuple(args.crops)),
              "box_refinements": int(args.box_refinements)}
    had_stage = bool(card.get("test_time_defaults", {}).get("local_stage", False))
    if args.local_stage is not None:
        card["files"]["local_stage"] = export_stage(args.local_stage, args.name)
    use_stage = "local_stage" in card["files"] and not args.no_local_stage
    for kind in ("onnx", "int8_onnx"):
        entry = card["files"].get(kind)
        if entry is None:
            continue
        path = set_test_time_metadata(WEIGHTS_DIR / entry["file"], record)
        entry["sha256"] = sha256_of(path)
        print(f"{path}: test_time {json.dumps(record)}; sha256 {entry['sha256']}")
    kept, dropped = [], []
    for figure in card.get("figures", []):
        own_plan = all(switch in figure["command"] for switch in OWN_PLAN_SWITCHES)
        if own_plan and use_stage and not had_stage and "local-stage" not in figure["command"]:
            figure["command"] += " --no-local-stage"
        (kept if own_plan or figure["name"] in args.keep else dropped).append(figure)
    record_with_stage = {**record, **({"local_stage": use_stage} if "local_stage" in card["files"] else {})}
    # A new stage file makes every default-inference figure stale, as a new plan does.
    changed_stage = args.local_stage is not None
    if record_with_stage != card.get("test_time_defaults") or changed_stage:
        card["figures"] = kept
        for figure in dropped:
            print(f"dropped (ran with the previous default inference; measure again): {figure['name']}")
    card["test_time_defaults"] = record_with_stage
    card["auto_backend"] = args.auto_backend
    card["figures_inference"] = describe(record_with_stage)
    atomic_write_text(card_path, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    read_card(card_path)  # the package must be able to read what was written
    print(f"{card_path}: written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
