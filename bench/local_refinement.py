"""A second stage on local patches for the 68-point model, measured on the validation split.

    python bench/local_refinement.py --config configs/300w-68pt-heldout-mtfl.yaml \
        --model runs/heldout-mtfl/last.pt --out runs/local-refinement [--steps 3000] [--threads 1]
    python bench/local_refinement.py ... --evaluate-only --split heldout   # once, at the end

The first stage (``--model``; by default one box refinement, then the model's own crops, or the 3x3 grid for
a checkpoint, which has none, mirror-averaged) frames the whole face at 80x80, where the outer eye corners are
about 34 pixels apart. This stage re-frames the face on the first stage's points (eye line levelled,
``CANONICAL_SIZE`` pixels per face-box side, 1.6x the first stage's resolution), cuts one patch around each
group of points (the scheme's ``patch_groups``: each brow with its eye, nose, mouth, the two jaw sides and the
chin), and one small network (a convolutional
trunk shared by every patch, one fully connected head per group, which also reads where the first stage put
the group's points in the patch) predicts each point's residual in patch units.

Training faces are the config's training split. The stage trains on first-stage answers for those faces:
``--initial-answers`` first-stage predictions per face from face boxes moved as training augmentation moves
them (training faces are fitted closer than new faces, so Gaussian noise of ``--point-noise`` and
``--group-noise`` box sides per point and per group is added on top), mirrored at random. The validation
split (never trained on) scores it every ``--evaluate-every`` steps and chooses the step count; the held-out
split (``data.exclude``'s list) is scored only with ``--evaluate-only --split heldout``.
Writes ``OUT/refiner.pt`` (weights, groups, patch sides, options), ``OUT/history.jsonl`` and
``OUT/result-SPLIT.json`` (first stage and first stage + this stage: inter-ocular and inter-pupil error,
failures, per region).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from dense_vs_dlib import scores  # the held-out comparison's figures, per region, CED

from tcdcn.config import load_config
from tcdcn.data.dataset import read_path_list, split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.data.patches import PatchGeometry
from tcdcn.geometry import Box, apply_affine, box_from_landmarks, crop_matrix, invert_affine, warp_crop
from tcdcn.inference.loading import load_landmark_model
from tcdcn.inference.local_stage import refine_points
from tcdcn.io.images import load_image, to_grey
from tcdcn.schemes import LandmarkScheme

CANONICAL_SIZE = 128  # pixels per face-box side in the re-framed face (the first stage: 80)
PATCH_SIZE = 48  # network input per patch
PATCH_MARGIN = 0.12  # box sides added to a group's 95th-percentile extent for its patch side
REFERENCE_SIDES = 2.0  # training faces are cached as a crop this many box sides wide around their annotation


@dataclass(frozen=True)
class RefinerOptions:
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 1e-3
    point_noise: float = 0.006  # box sides, per point and axis
    group_noise: float = 0.006  # box sides, per group and axis
    initial_answers: int = 4
    box_shift: float = 0.05  # box sides: first-stage boxes of training faces move this much at most
    box_scale: float = 0.1  # and scale by up to this fraction
    frame_rotation: float = 0.0  # degrees: training re-framings turn by up to this much (appearance augmentation)
    frame_scale: float = 0.0  # and scale by up to this fraction
    weight_decay: float = 0.0
    evaluate_every: int = 250
    seed: int = 0


def patch_geometry(faces: list[Any], scheme: LandmarkScheme) -> PatchGeometry:
    """Each group's patch side: the 95th percentile of its extent in the re-framed faces plus a margin."""
    probe = PatchGeometry(scheme, CANONICAL_SIZE, PATCH_SIZE, (1.0,) * len(scheme.patch_groups))
    extents = []
    for face in faces:
        points = face.landmarks.astype(np.float64)
        reframed = apply_affine(probe.reframing(points), points)  # (P, 2)
        extents.append([np.ptp(reframed[list(group)], axis=0).max() for _, group in scheme.patch_groups])
    sides = np.percentile(np.asarray(extents), 95, axis=0) + PATCH_MARGIN * CANONICAL_SIZE  # (G,)
    return PatchGeometry(scheme, CANONICAL_SIZE, PATCH_SIZE, tuple(float(x) for x in sides))


def refine_all(network: Any, geometry: PatchGeometry, greys: list[np.ndarray], initial: np.ndarray,
               mirror_average: bool) -> np.ndarray:
    """The stage on every face, as ``LocalStage.refine`` runs it, with the torch network."""
    import torch

    def run_network(patches: np.ndarray, relative: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network(torch.from_numpy(patches), torch.from_numpy(relative)).numpy()

    return np.concatenate([refine_points(geometry, run_network, greys[i:i + 32], initial[i:i + 32], mirror_average)
                           for i in range(0, len(greys), 32)])


def first_stage(model: Any, greys: list[np.ndarray], boxes: list[Box]) -> np.ndarray:
    return np.concatenate([model.predict(greys[i:i + 64], boxes[i:i + 64]).landmarks for i in range(0, len(greys), 64)])


def moved_box(box: Box, rng: np.random.Generator, options: RefinerOptions) -> Box:
    dx, dy = rng.uniform(-options.box_shift, options.box_shift, 2) * box.side
    return Box(box.cx + dx, box.cy + dy, box.side * (1 + rng.uniform(-options.box_scale, options.box_scale)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/300w-68pt-heldout-mtfl.yaml")
    p.add_argument("--model", default="runs/heldout-mtfl/last.pt")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--evaluate-only", action="store_true", help="score OUT/refiner.pt, no training")
    p.add_argument("--split", choices=("validation", "heldout"), default="validation")
    p.add_argument("--iterations", type=int, default=1, help="passes of the stage at evaluation")
    p.add_argument("--no-stage-mirror", action="store_true", help="evaluate the stage without mirror-averaging")
    p.add_argument("--first-stage", choices=("default", "no-refinement", "box"), default="default",
                   help="the first stage's inference at evaluation: a refinement pass, then the model's own crops (a "
                   "checkpoint: the 3x3 grid), mirrored; the same without the refinement pass; or the box alone "
                   "mirrored")
    for name, value in asdict(RefinerOptions()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = p.parse_args(argv)
    import torch

    from tcdcn.models.local_stage import LocalStageNetwork

    torch.set_num_threads(args.threads)
    options = RefinerOptions(**{k: getattr(args, k) for k in asdict(RefinerOptions())})
    cfg = load_config(args.config)
    all_faces = read_annotations(cfg.data.train)
    train_faces, val_faces = split_faces(all_faces, cfg.data)
    if args.split == "heldout":
        listed, root = read_path_list(cfg.data.exclude), Path(cfg.data.train)
        eval_faces = [f for f in all_faces if Path(f.image_path).relative_to(root).as_posix() in listed]
        if len(eval_faces) != len(listed):
            print(f"{cfg.data.exclude}: {len(listed)} faces listed, {len(eval_faces)} found", file=sys.stderr)
            return 2
    else:
        eval_faces = val_faces
    scheme = train_faces[0].scheme
    model = load_landmark_model(args.model)
    from tcdcn.inference.test_time import set_test_time_options

    set_test_time_options(model, mirror_average=True, multi_crop=args.first_stage != "box",
                          box_refinements=1 if args.first_stage == "default" else 0)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "refiner.pt"

    eval_greys = [to_grey(load_image(f.image_path)) for f in eval_faces]
    eval_boxes = [box_from_landmarks(f.landmarks, scheme) for f in eval_faces]
    eval_initial = first_stage(model, eval_greys, eval_boxes)  # (N, P, 2)

    def evaluate(network: Any, geometry: PatchGeometry) -> dict[str, Any]:
        network.eval()
        current = eval_initial
        for _ in range(args.iterations):
            current = refine_all(network, geometry, eval_greys, current, not args.no_stage_mirror)
        network.train()
        return scores(current, eval_faces)

    if args.evaluate_only:
        state = torch.load(weights, weights_only=False)
        geometry = PatchGeometry(scheme, CANONICAL_SIZE, PATCH_SIZE, tuple(state["sides"]))
        network = LocalStageNetwork(geometry)
        network.load_state_dict(state["network"])
        result = {"split": args.split, "first_stage": scores(eval_initial, eval_faces),
                  "refined": evaluate(network, geometry), "iterations": args.iterations, "model": args.model,
                  "config": args.config, "refiner": str(weights), "options": state["options"],
                  "first_stage_inference": args.first_stage, "stage_mirror": not args.no_stage_mirror}
        suffix = "" if args.first_stage == "default" and not args.no_stage_mirror else \
            f"-{args.first_stage}{'-no-stage-mirror' if args.no_stage_mirror else ''}"
        (args.out / f"result-{args.split}{suffix}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: result[k] for k in ("first_stage", "refined")}))
        return 0

    rng = np.random.default_rng(options.seed)
    geometry = patch_geometry(train_faces, scheme)
    group_names = [name for name, _ in scheme.patch_groups]
    print(f"patch sides (re-framed px): {dict(zip(group_names, np.round(geometry.sides, 1)))}", file=sys.stderr)
    # Training faces cached as a reference crop around their annotation (REFERENCE_SIDES box sides wide, at the
    # re-framed scale), so each step's re-framing is one small warp.
    references, to_reference, gt_boxes = [], [], []
    train_greys = []
    for face in train_faces:
        grey = to_grey(load_image(face.image_path))
        box = box_from_landmarks(face.landmarks, scheme)
        big = Box(box.cx, box.cy, box.side * REFERENCE_SIDES)
        m = crop_matrix(big, int(CANONICAL_SIZE * REFERENCE_SIDES))
        references.append(warp_crop(grey, m, int(CANONICAL_SIZE * REFERENCE_SIDES)))
        to_reference.append(m)
        gt_boxes.append(box)
        train_greys.append(grey)
    started = time.time()
    # The first stage's answers depend only on the model, the faces and the seeded box moves: cached in OUT.
    cache, key = args.out / "first-stage-answers.npy", args.out / "first-stage-answers.json"
    recipe = {"model": args.model, "config": args.config, "initial_answers": options.initial_answers,
              "box_shift": options.box_shift, "box_scale": options.box_scale, "seed": options.seed}
    if cache.is_file() and key.is_file() and json.loads(key.read_text()) == recipe:
        answers = np.load(cache)
    else:
        box_rng = np.random.default_rng([options.seed, 1])
        answers = np.stack([first_stage(model, train_greys, [moved_box(b, box_rng, options) for b in gt_boxes])
                            for _ in range(options.initial_answers)], axis=1)  # (N, K, P, 2)
        np.save(cache, answers)
        key.write_text(json.dumps(recipe))
    del train_greys
    train_scores = scores(answers[:, 0], train_faces)
    print(f"first-stage answers for {len(train_faces)} training faces x {options.initial_answers} boxes in "
          f"{time.time() - started:.0f} s; inter-ocular {train_scores['nme_interocular']:.4f}", file=sys.stderr)

    torch.manual_seed(options.seed)
    network = LocalStageNetwork(geometry)
    optimiser = torch.optim.AdamW(network.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, options.steps, eta_min=options.learning_rate / 100)
    per_point = geometry.point_sides  # (P,)
    group_of = np.zeros(scheme.num_points, dtype=np.int64)
    for g, (_, group) in enumerate(scheme.patch_groups):
        group_of[list(group)] = g
    history = open(args.out / "history.jsonl", "w")
    best, running = None, []
    for step in range(1, options.steps + 1):
        batch = rng.integers(0, len(train_faces), options.batch_size)
        patches, relative, targets = [], [], []
        for i in batch:
            truth = train_faces[i].landmarks.astype(np.float64)
            side = gt_boxes[i].side
            noise = (rng.normal(0, options.point_noise, (scheme.num_points, 2))
                     + rng.normal(0, options.group_noise, (len(group_names), 2))[group_of]) * side
            initial = answers[i, rng.integers(options.initial_answers)] + noise
            m = geometry.reframing(initial)
            if options.frame_rotation or options.frame_scale:
                turn = np.radians(rng.uniform(-options.frame_rotation, options.frame_rotation))
                zoom = 1 + rng.uniform(-options.frame_scale, options.frame_scale)
                c = (CANONICAL_SIZE - 1) / 2.0
                about_centre = cv2.getRotationMatrix2D((c, c), np.degrees(turn), zoom)  # re-framed -> re-framed
                m = np.vstack([about_centre, [0, 0, 1]])[:2] @ np.vstack([m, [0, 0, 1]])
            from_reference = m[:, :2] @ invert_affine(to_reference[i])  # reference -> re-framed
            from_reference[:, 2] += m[:, 2]
            canonical = cv2.warpAffine(references[i], from_reference, (CANONICAL_SIZE, CANONICAL_SIZE),
                                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            q, t = apply_affine(m, initial), apply_affine(m, truth)
            if rng.random() < 0.5:
                _, t = geometry.mirrored(canonical, t)
                canonical, q = geometry.mirrored(canonical, q)
            cut, rel = geometry.cut(canonical, q)
            patches.append(cut)
            relative.append(rel)
            targets.append((t - q) / per_point[:, None])
        pred = network(torch.from_numpy(np.stack(patches)), torch.from_numpy(np.stack(relative)))
        target = torch.from_numpy(np.stack(targets)).float()  # (B, P, 2) patch units
        # L1 in re-framed pixels (patch units x patch side): every point weighs by its distance.
        scale = torch.from_numpy(per_point / CANONICAL_SIZE).float()[None, :, None]
        loss = ((pred - target).abs() * scale).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running.append(loss.item())
        if step % options.evaluate_every == 0 or step == options.steps:
            result = evaluate(network, geometry)
            record = {"step": step, "train_loss": float(np.mean(running)), "seconds": round(time.time() - started, 1),
                      "val_nme_interocular": result["nme_interocular"], "val_nme_interpupil": result["nme_interpupil"],
                      "val_per_region": result["per_region"]}
            running = []
            history.write(json.dumps(record) + "\n")
            history.flush()
            print(json.dumps(record), file=sys.stderr)
            torch.save({"network": network.state_dict(), "sides": list(geometry.sides), "options": asdict(options),
                        "canonical_size": CANONICAL_SIZE, "patch_size": PATCH_SIZE,
                        "step": step, "groups": group_names, "model": args.model, "config": args.config}, weights)
            if best is None or result["nme_interocular"] < best[1]:
                best = (step, result["nme_interocular"])
    print(f"first stage on validation: {scores(eval_initial, eval_faces)['nme_interocular']:.4f}; "
          f"best refined {best[1]:.4f} at step {best[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
