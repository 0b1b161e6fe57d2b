"""A second stage on local patches for the 68-point model, measured on the validation split.

    python bench/local_refinement.py --config configs/300w-68pt-heldout-mtfl.yaml \
        --model runs/heldout-mtfl/last.pt --out runs/local-refinement [--steps 3000] [--threads 1]
    python bench/local_refinement.py ... --evaluate-only --split heldout   # once, at the end

The first stage (``--model``, with the shipped default inference: mirror-averaged, multi-crop, one box
refinement) frames the whole face at 80x80, where the outer eye corners are about 34 pixels apart. This stage
re-frames the face on the first stage's points (eye line levelled, ``CANONICAL_SIZE`` pixels per face-box
side, 1.6x the first stage's resolution), cuts one patch around each group of points (``POINT_GROUPS``:
each brow with its eye, nose, mouth, the two jaw sides and the chin), and one small network (a convolutional
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

from tcdcn.config import load_config
from tcdcn.data.dataset import read_path_list, split_faces
from tcdcn.data.formats import read_annotations
from tcdcn.evaluation.metrics import failure_rate, nme, normalised_face_errors, per_region_error, point_errors
from tcdcn.geometry import Box, box_from_landmarks, crop_matrix, invert_affine, warp_crop
from tcdcn.inference.loading import load_landmark_model
from tcdcn.io.images import load_image, to_grey
from tcdcn.schemes import LandmarkScheme

# Groups of ibug-68 points, one patch each; mirror pairs map onto mirror groups (jaw 0-5 <-> 11-16, brow and
# eye of one side <-> the other's), so a mirrored face keeps every point in its group.
POINT_GROUPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("jaw_left", tuple(range(0, 6))),
    ("chin", tuple(range(6, 11))),
    ("jaw_right", tuple(range(11, 17))),
    ("brow_eye_left", tuple(range(17, 22)) + tuple(range(36, 42))),
    ("brow_eye_right", tuple(range(22, 27)) + tuple(range(42, 48))),
    ("nose", tuple(range(27, 36))),
    ("mouth", tuple(range(48, 68))),
)
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


def eye_angle(points: np.ndarray, scheme: LandmarkScheme) -> float:
    """Degrees of the line from the image-left to the image-right eye centre (image y down)."""
    left, right = scheme.eye_centres(points[None])
    d = right[0] - left[0]
    return float(np.degrees(np.arctan2(d[1], d[0])))


def canonical_matrix(points: np.ndarray, scheme: LandmarkScheme) -> np.ndarray:
    """Image -> re-framed face (2x3): the convention's box of ``points``, eye line levelled."""
    return crop_matrix(box_from_landmarks(points, scheme), CANONICAL_SIZE, rotation_deg=eye_angle(points, scheme))


def patch_sides(faces: list[Any], scheme: LandmarkScheme) -> np.ndarray:
    """(G,) patch side per group in re-framed pixels: the 95th percentile of the group's extent plus a margin."""
    extents = []
    for face in faces:
        points = face.landmarks.astype(np.float64)
        m = canonical_matrix(points, scheme)
        canon = points @ m[:, :2].T + m[:, 2]  # (P, 2)
        extents.append([np.ptp(canon[list(group)], axis=0).max() for _, group in POINT_GROUPS])
    extent = np.percentile(np.asarray(extents), 95, axis=0)  # (G,)
    return extent + PATCH_MARGIN * CANONICAL_SIZE


def cut_patches(canonical: np.ndarray, initial: np.ndarray, sides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patches around each group's mean initial point: (G, S, S) float32, standardised per patch, and the
    initial points in patch units (P, 2) (0 at the patch centre, 1 = one patch side)."""
    patches = np.empty((len(POINT_GROUPS), PATCH_SIZE, PATCH_SIZE), np.float32)
    relative = np.empty_like(initial)
    c = (PATCH_SIZE - 1) / 2.0
    for g, (_, group) in enumerate(POINT_GROUPS):
        idx = list(group)
        centre = initial[idx].mean(axis=0)
        s = PATCH_SIZE / sides[g]
        m = np.array([[s, 0.0, c - s * centre[0]], [0.0, s, c - s * centre[1]]])
        patch = cv2.warpAffine(canonical, m, (PATCH_SIZE, PATCH_SIZE), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        patches[g] = (patch - patch.mean()) / (patch.std() + 1e-3)
        relative[idx] = (initial[idx] - centre) / sides[g]
    return patches, relative


def build_network(sides: np.ndarray) -> Any:
    import torch
    from torch import nn

    class PatchRefiner(nn.Module):
        """Shared trunk over (B*G, 1, S, S) patches; per group, fc on [features, initial points] -> residuals."""

        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Sequential(
                nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # 44 -> 22
                nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),  # 20 -> 10
                nn.Conv2d(32, 48, 3), nn.ReLU(), nn.MaxPool2d(2),  # 8 -> 4
                nn.Flatten(),
            )
            features = 48 * 4 * 4
            self.heads = nn.ModuleList(
                nn.Sequential(nn.Linear(features + 2 * len(group), 128), nn.ReLU(), nn.Linear(128, 2 * len(group)))
                for _, group in POINT_GROUPS)
            for head in self.heads:
                nn.init.zeros_(head[-1].weight)  # start as the identity refinement
                nn.init.zeros_(head[-1].bias)

        def forward(self, patches: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
            b, g = patches.shape[:2]  # (B, G, S, S)
            feats = self.trunk(patches.reshape(b * g, 1, PATCH_SIZE, PATCH_SIZE)).reshape(b, g, -1)  # (B, G, F)
            out = relative.new_zeros(relative.shape)  # (B, P, 2) residuals in patch units
            for k, (_, group) in enumerate(POINT_GROUPS):
                idx = list(group)
                x = torch.cat([feats[:, k], relative[:, idx].reshape(b, -1)], dim=1)  # (B, F + 2n)
                out[:, idx] = self.heads[k](x).reshape(b, len(idx), 2)
            return out

    torch.manual_seed(0)
    return PatchRefiner()


def group_sides_per_point(sides: np.ndarray, num_points: int) -> np.ndarray:
    per_point = np.zeros(num_points)
    for g, (_, group) in enumerate(POINT_GROUPS):
        per_point[list(group)] = sides[g]
    return per_point  # (P,)


def refine(network: Any, grey: np.ndarray, initial: np.ndarray, scheme: LandmarkScheme, sides: np.ndarray,
           mirror_average: bool = True) -> np.ndarray:
    """Image-pixel points (P, 2) after one pass of the stage from ``initial`` (P, 2) image points."""
    import torch

    m = canonical_matrix(initial, scheme)
    canonical = warp_crop(grey, m, CANONICAL_SIZE)
    q = initial @ m[:, :2].T + m[:, 2]  # (P, 2) re-framed pixels
    per_point = group_sides_per_point(sides, len(q))[:, None]
    views = [(canonical, q)]
    if mirror_average:
        flipped = q.copy()
        flipped[:, 0] = CANONICAL_SIZE - 1 - flipped[:, 0]
        views.append((np.ascontiguousarray(canonical[:, ::-1]), flipped[scheme.flip_index]))
    patches, relative = zip(*(cut_patches(c, p, sides) for c, p in views))
    with torch.no_grad():
        residual = network(torch.from_numpy(np.stack(patches)), torch.from_numpy(np.stack(relative)).float()).numpy()
    answers = [views[0][1] + residual[0] * per_point]
    if mirror_average:
        back = (views[1][1] + residual[1] * per_point)[scheme.flip_index]
        back[:, 0] = CANONICAL_SIZE - 1 - back[:, 0]
        answers.append(back)
    refined = np.mean(answers, axis=0)
    inverse = invert_affine(m)
    return refined @ inverse[:, :2].T + inverse[:, 2]


def scores(pred: np.ndarray, faces: list[Any], scheme: LandmarkScheme) -> dict[str, Any]:
    targets = np.stack([f.landmarks for f in faces]).astype(np.float64)
    io = scheme.interocular_distance(targets)
    errors = normalised_face_errors(pred, targets, io)
    ip_errors = normalised_face_errors(pred, targets, scheme.interpupil_distance(targets))
    return {"nme_interocular": nme(errors), "nme_interpupil": nme(ip_errors), "failure_rate": failure_rate(errors),
            "per_region": per_region_error(point_errors(pred, targets, io), scheme.regions), "faces": len(faces)}


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
    for name, value in asdict(RefinerOptions()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = p.parse_args(argv)
    import torch

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
    model.mirror_average, model.box_refinements = True, 1
    from tcdcn.inference.test_time import set_test_time_options

    set_test_time_options(model, multi_crop=True)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "refiner.pt"

    eval_greys = [to_grey(load_image(f.image_path)) for f in eval_faces]
    eval_boxes = [box_from_landmarks(f.landmarks, scheme) for f in eval_faces]
    eval_initial = first_stage(model, eval_greys, eval_boxes)  # (N, P, 2)

    def evaluate(network: Any, sides: np.ndarray) -> dict[str, Any]:
        network.eval()
        current = eval_initial
        for _ in range(args.iterations):
            current = np.stack([refine(network, g, q, scheme, sides) for g, q in zip(eval_greys, current)])
        network.train()
        return scores(current, eval_faces, scheme)

    if args.evaluate_only:
        state = torch.load(weights, weights_only=False)
        network = build_network(np.asarray(state["sides"]))
        network.load_state_dict(state["network"])
        sides = np.asarray(state["sides"])
        result = {"split": args.split, "first_stage": scores(eval_initial, eval_faces, scheme),
                  "refined": evaluate(network, sides), "iterations": args.iterations, "model": args.model,
                  "config": args.config, "refiner": str(weights), "options": state["options"]}
        (args.out / f"result-{args.split}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: result[k] for k in ("first_stage", "refined")}))
        return 0

    rng = np.random.default_rng(options.seed)
    sides = patch_sides(train_faces, scheme)
    print(f"patch sides (re-framed px): {dict(zip([n for n, _ in POINT_GROUPS], np.round(sides, 1)))}", file=sys.stderr)
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
    train_scores = scores(answers[:, 0], train_faces, scheme)
    print(f"first-stage answers for {len(train_faces)} training faces x {options.initial_answers} boxes in "
          f"{time.time() - started:.0f} s; inter-ocular {train_scores['nme_interocular']:.4f}", file=sys.stderr)

    network = build_network(sides)
    optimiser = torch.optim.AdamW(network.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, options.steps, eta_min=options.learning_rate / 100)
    per_point = group_sides_per_point(sides, scheme.num_points)  # (P,)
    group_of = np.zeros(scheme.num_points, dtype=np.int64)
    for g, (_, group) in enumerate(POINT_GROUPS):
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
                     + rng.normal(0, options.group_noise, (len(POINT_GROUPS), 2))[group_of]) * side
            initial = answers[i, rng.integers(options.initial_answers)] + noise
            m = canonical_matrix(initial, scheme)
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
            q = initial @ m[:, :2].T + m[:, 2]
            t = truth @ m[:, :2].T + m[:, 2]
            if rng.random() < 0.5:
                canonical = np.ascontiguousarray(canonical[:, ::-1])
                q, t = q[scheme.flip_index], t[scheme.flip_index]
                q[:, 0], t[:, 0] = CANONICAL_SIZE - 1 - q[:, 0], CANONICAL_SIZE - 1 - t[:, 0]
            cut, rel = cut_patches(canonical, q, sides)
            patches.append(cut)
            relative.append(rel)
            targets.append((t - q) / per_point[:, None])
        pred = network(torch.from_numpy(np.stack(patches)), torch.from_numpy(np.stack(relative)).float())
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
            result = evaluate(network, sides)
            record = {"step": step, "train_loss": float(np.mean(running)), "seconds": round(time.time() - started, 1),
                      "val_nme_interocular": result["nme_interocular"], "val_nme_interpupil": result["nme_interpupil"],
                      "val_per_region": result["per_region"]}
            running = []
            history.write(json.dumps(record) + "\n")
            history.flush()
            print(json.dumps(record), file=sys.stderr)
            torch.save({"network": network.state_dict(), "sides": sides.tolist(), "options": asdict(options),
                        "step": step, "groups": POINT_GROUPS, "model": args.model, "config": args.config}, weights)
            if best is None or result["nme_interocular"] < best[1]:
                best = (step, result["nme_interocular"])
    print(f"first stage on validation: {scores(eval_initial, eval_faces, scheme)['nme_interocular']:.4f}; "
          f"best refined {best[1]:.4f} at step {best[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
