"""One dataset class for every format: annotated faces in memory, cropped on demand.

Images are decoded once and kept as grey uint8 arrays (MTFL's 13k faces take ~80 MB), so an epoch
costs only the crops; no worker processes are needed on small machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePath

import numpy as np
import torch

from ..attributes import AttributeTask, flip_permutation
from ..config import AugmentConfig, DataConfig
from ..errors import AnnotationError, ImageError
from ..geometry import Box, box_from_landmarks
from ..io.images import load_image, to_grey
from .annotation import FaceAnnotation
from .transforms import IDENTITY, CropParams, draw_params, make_crop

BOX_MODES = ("gt", "image")


class FaceDataset:
    """Faces of one landmark scheme with their attribute labels for the given tasks.

    ``box_mode``: "gt" derives the face box from the ground-truth landmarks (the documented convention);
    "image" takes the whole image as the box (the MTFL/AFLW test protocol).
    """

    def __init__(
        self,
        faces: Sequence[FaceAnnotation],
        tasks: Sequence[AttributeTask] = (),
        input_size: int = 60,
        box_mode: str = "gt",
        random_labels_seed: int = 1234,
    ) -> None:
        if box_mode not in BOX_MODES:
            raise ValueError(f"box_mode must be one of {BOX_MODES}, got {box_mode!r}")
        if not faces:
            raise ValueError("no faces")
        schemes = {f.scheme.name for f in faces}
        if len(schemes) != 1:
            raise ValueError(f"faces mix landmark schemes {sorted(schemes)}")
        self.faces = list(faces)
        self.scheme = self.faces[0].scheme
        self.tasks = tuple(tasks)
        self.input_size = input_size
        self.box_mode = box_mode
        self._images: list[np.ndarray | None] = [None] * len(self.faces)
        self.landmarks = np.stack([f.landmarks for f in self.faces]).astype(np.float32)  # (N, P, 2)
        self.visible = np.stack(
            [f.visible if f.visible is not None else np.ones(len(f.landmarks), bool) for f in self.faces]
        )  # (N, P)
        rng = np.random.default_rng(random_labels_seed)
        random_labels = rng.integers(0, 2, len(self.faces))
        labels = np.zeros((len(self.faces), len(self.tasks)), np.float32)  # (N, T)
        for j, task in enumerate(self.tasks):
            if task.name == "random":
                labels[:, j] = random_labels
                continue
            missing = [f.source for f in self.faces if task.name not in f.attributes]
            if missing:
                raise ValueError(f"{missing[0]}: no label for attribute task {task.name!r}")
            labels[:, j] = [f.attributes[task.name] for f in self.faces]
        self.labels = labels
        self._task_flip = flip_permutation(self.tasks)

    def __len__(self) -> int:
        return len(self.faces)

    def image(self, i: int) -> np.ndarray:
        img = self._images[i]
        if img is None:
            try:
                img = to_grey(load_image(self.faces[i].image_path))
            except ImageError as exc:
                raise ImageError(exc.path, f"{exc.reason} (annotated at {self.faces[i].source})") from None
            self._images[i] = img
        return img

    def preload(self) -> None:
        for i in range(len(self)):
            self.image(i)

    def box(self, i: int) -> Box:
        if self.box_mode == "image":
            h, w = self.image(i).shape[:2]
            return Box.whole_image(w, h)
        return box_from_landmarks(self.landmarks[i], self.scheme)

    def sample(self, i: int, params: CropParams = IDENTITY) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        crop, norm, _ = make_crop(self.image(i), self.box(i), self.input_size, params, self.landmarks[i], self.scheme)
        labels, visible = self.labels[i], self.visible[i]
        if params.mirror:
            labels = labels[self._task_flip]
            visible = visible[self.scheme.flip_index]
        assert norm is not None
        return crop, norm, labels, visible

    def batch(
        self, indices: Sequence[int], augment: AugmentConfig | None = None, rng: np.random.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Stack crops into tensors: images (B,1,S,S), landmarks (B,P,2), labels (B,T), visible (B,P)."""
        params = [draw_params(augment, rng) if augment is not None and rng is not None else IDENTITY
                  for _ in indices]
        return self.stack(indices, params)

    def stack(self, indices: Sequence[int], params: Sequence[CropParams]) -> dict[str, torch.Tensor]:
        """The faces ``indices``, face ``k`` cropped with ``params[k]``, as tensors: images (B,1,S,S),
        landmarks (B,P,2), labels (B,T), visible (B,P), and interocular (B,): the scheme's inter-ocular
        distance of each crop's landmarks, what normalised errors divide by."""
        if len(indices) != len(params):
            raise ValueError(f"{len(indices)} faces but {len(params)} crop parameters")
        if not len(indices):
            size = self.input_size
            return {"images": torch.zeros(0, 1, size, size), "landmarks": torch.zeros(0, self.scheme.num_points, 2),
                    "labels": torch.zeros(0, len(self.tasks)),
                    "visible": torch.zeros(0, self.scheme.num_points, dtype=torch.bool),
                    "interocular": torch.zeros(0)}
        crops, norms, labels, visible = zip(*(self.sample(int(i), p) for i, p in zip(indices, params)))
        landmarks = np.stack(norms)  # (B, P, 2)
        return {
            "images": torch.from_numpy(np.stack(crops)[:, None]),  # (B, 1, S, S)
            "landmarks": torch.from_numpy(landmarks),  # (B, P, 2)
            "labels": torch.from_numpy(np.stack(labels)),  # (B, T)
            "visible": torch.from_numpy(np.stack(visible)),  # (B, P)
            "interocular": torch.from_numpy(self.scheme.interocular_distance(landmarks).astype(np.float32)),  # (B,)
        }


def split_indices(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-seed split of range(n) into (train, validation) index arrays."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * validation_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def split_faces(faces: Sequence[FaceAnnotation], data: DataConfig) -> tuple[list[FaceAnnotation], list[FaceAnnotation]]:
    """(training, validation) faces as ``data.validation_fraction`` and ``data.split_seed`` carve them,
    after the faces ``data.exclude`` lists are taken out."""
    if data.exclude:
        faces = excluding_listed(faces, data.exclude, data.train)
    train_idx, val_idx = split_indices(len(faces), data.validation_fraction, data.split_seed)
    return [faces[i] for i in train_idx], [faces[i] for i in val_idx]


def split_auxiliary_faces(faces: Sequence[FaceAnnotation],
                          data: DataConfig) -> tuple[list[FaceAnnotation], list[FaceAnnotation]]:
    """(training, validation) auxiliary faces (``data.auxiliary_train``'s) as
    ``data.auxiliary_validation_fraction`` and ``data.split_seed`` carve them: the validation part is
    never trained on."""
    train_idx, val_idx = split_indices(len(faces), data.auxiliary_validation_fraction, data.split_seed)
    return [faces[i] for i in train_idx], [faces[i] for i in val_idx]


def read_path_list(list_file: str | Path) -> set[str]:
    """The paths a split list names (one per line, '#' comments), as POSIX strings."""
    path = Path(list_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AnnotationError(path, f"cannot read the path list ({exc.strerror or exc})") from None
    return {PurePath(line.strip()).as_posix() for line in lines if line.strip() and not line.lstrip().startswith("#")}


def excluding_listed(faces: Sequence[FaceAnnotation], list_file: str | Path,
                     data_root: str | Path) -> list[FaceAnnotation]:
    """``faces`` without those whose image path, relative to ``data_root`` (a folder, or a list file's
    folder), is in ``list_file``. Every listed path must be among the faces: a list that names faces
    the data does not hold is the wrong list."""
    listed = read_path_list(list_file)
    root = Path(data_root)
    root = root if root.is_dir() else root.parent
    kept, found = [], set()
    for face in faces:
        try:
            relative = Path(face.image_path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            relative = Path(face.image_path).as_posix()
        if relative in listed:
            found.add(relative)
        else:
            kept.append(face)
    missing = sorted(listed - found)
    if missing:
        raise AnnotationError(list_file, f"{len(missing)} listed path(s) are not faces of {data_root} "
                                         f"(first: {missing[0]})")
    return kept

