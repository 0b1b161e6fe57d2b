"""Auxiliary attribute tasks: each a binary label the network predicts beside the landmarks.

The MTFL head-pose attribute (5 classes) becomes one binary task per class, as in the paper.
Mirroring swaps the left and right pose tasks; ``flip_partner`` says with which.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AttributeTask:
    name: str
    group: str  # the paper's attribute groups: eyes, mouth, global, pose, random, ...
    flip_partner: str | None = None


MTFL_TASKS: tuple[AttributeTask, ...] = (
    AttributeTask("male", "global"),
    AttributeTask("smiling", "mouth"),
    AttributeTask("glasses", "eyes"),
    AttributeTask("pose_left_profile", "pose", "pose_right_profile"),
    AttributeTask("pose_left", "pose", "pose_right"),
    AttributeTask("pose_frontal", "pose"),
    AttributeTask("pose_right", "pose", "pose_left"),
    AttributeTask("pose_right_profile", "pose", "pose_left_profile"),
)

# CelebA / MAFL: the paper's 22 MAFL attributes as far as CelebA's 40 give them,
# each (CelebA column, task name, group). None is left/right-sided.
CELEBA_ATTRIBUTE_TASKS: tuple[tuple[str, str, str], ...] = (
    ("Male", "male", "global"),
    ("Smiling", "smiling", "mouth"),
    ("Eyeglasses", "glasses", "eyes"),
    ("Wearing_Hat", "wearing_hat", "hair"),
    ("Bangs", "bangs", "hair"),
    ("Big_Lips", "big_lips", "mouth"),
    ("Big_Nose", "big_nose", "nose"),
    ("Attractive", "attractive", "global"),
    ("Heavy_Makeup", "heavy_makeup", "global"),
    ("High_Cheekbones", "high_cheekbones", "global"),
    ("Mouth_Slightly_Open", "mouth_slightly_open", "mouth"),
    ("Narrow_Eyes", "narrow_eyes", "eyes"),
    ("Oval_Face", "oval_face", "global"),
    ("Pointy_Nose", "pointy_nose", "nose"),
    ("Receding_Hairline", "receding_hairline", "hair"),
    ("Young", "young", "global"),
    ("No_Beard", "no_beard", "global"),
    ("Double_Chin", "double_chin", "global"),
    ("Chubby", "chubby", "global"),
    ("Blurry", "blurry", "global"),
    ("Bushy_Eyebrows", "bushy_eyebrows", "eyes"),
    ("Arched_Eyebrows", "arched_eyebrows", "eyes"),
)
CELEBA_TASK_NAMES: tuple[str, ...] = tuple(t for _, t, _ in CELEBA_ATTRIBUTE_TASKS)

CELEBA_TASKS: tuple[AttributeTask, ...] = tuple(
    AttributeTask(task, group)
    for _, task, group in CELEBA_ATTRIBUTE_TASKS
    if task not in ("male", "smiling", "glasses")
)

# A synthetic task with random labels (the paper's "FLD + random" control).
RANDOM_TASK = AttributeTask("random", "random")

ALL_TASKS: dict[str, AttributeTask] = {t.name: t for t in (*MTFL_TASKS, *CELEBA_TASKS, RANDOM_TASK)}
POSE_TASKS: tuple[str, ...] = tuple(t.name for t in MTFL_TASKS if t.group == "pose")


def tasks_by_name(names: tuple[str, ...] | list[str]) -> tuple[AttributeTask, ...]:
    unknown = [n for n in names if n not in ALL_TASKS]
    if unknown:
        raise KeyError(f"unknown attribute task(s) {unknown}; known: {sorted(ALL_TASKS)}")
    return tuple(ALL_TASKS[n] for n in names)


def tasks_in_groups(groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Task names of the given groups, in the canonical order (e.g. ("pose",) -> the 5 pose tasks)."""
    known = {t.group for t in ALL_TASKS.values()}
    bad = [g for g in groups if g not in known]
    if bad:
        raise KeyError(f"unknown attribute group(s) {bad}; known: {sorted(known)}")
    return tuple(t.name for t in ALL_TASKS.values() if t.group in groups)


def flip_permutation(tasks: tuple[AttributeTask, ...]) -> list[int]:
    """Index permutation of the task vector for a mirrored face."""
    index = {t.name: i for i, t in enumerate(tasks)}
    return [index.get(t.flip_partner, i) if t.flip_partner else i for i, t in enumerate(tasks)]
