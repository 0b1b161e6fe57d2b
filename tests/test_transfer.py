"""Transfer from the 5-point model to 68 points (paper Sec. 3.4) and the shipped 300-W 68-point model.

A tiny 5-point TCDCN is trained for two steps on real 300-W faces reduced to the five points (eye
centres, nose tip, mouth corners) with one attribute task; its checkpoint is the transfer source.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tcdcn.config import Config, DataConfig, ModelConfig, MultitaskConfig, TrainConfig, config_to_dict, load_config
from tcdcn.data.annotation import FaceAnnotation
from tcdcn.data.formats import read_annotations
from tcdcn.errors import CheckpointError
from tcdcn.evaluation.protocol import evaluate
from tcdcn.geometry import box_from_landmarks
from tcdcn.inference.backends.torch import LandmarkModel
from tcdcn.io.images import load_image, to_grey
from tcdcn.models.checkpoint import atomic_save, read_checkpoint
from tcdcn.models.network import standardise
from tcdcn.schemes import IBUG_68, MTFL_5
from tcdcn.training.trainer import Trainer

REPO_ROOT = Path(__file__).resolve().parents[1]
W300_DIR = REPO_ROOT.parent / "shared" / "data" / "300w"
TRANSFER_CONFIG = REPO_ROOT / "configs" / "300w-68pt-transfer.yaml"
SCRATCH_CONFIG = REPO_ROOT / "configs" / "300w-68pt-scratch.yaml"
SHIPPED_68PT = REPO_ROOT / "src" / "tcdcn" / "models" / "weights" / "300w-68pt.pt"
FACES_USED = 24  # 20 to train on, 4 to validate on
TRAIN_FACES = 20
BATCH_SIZE = 10  # two SGD steps per epoch


@pytest.fixture(scope="module")
def faces_68() -> list[FaceAnnotation]:
    folder = W300_DIR / "afw"
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder} (expected ../shared/data beside the repository)")
    return read_annotations(folder)[:FACES_USED]


def five_point_faces(faces: list[FaceAnnotation]) -> list[FaceAnnotation]:
    """The same images annotated with the five MTFL points and a random-label attribute task."""
    return [
        FaceAnnotation(f.image_path, IBUG_68.five_points(f.landmarks.astype(np.float64)).astype(np.float32),
                       MTFL_5, {}, None, f.source)
        for f in faces
    ]


def small_config(num_points: int, scheme: str, tasks: tuple[str, ...], init_from: str = "") -> Config:
    return Config(
        data=DataConfig(scheme=scheme, tasks=tasks),
        model=ModelConfig(num_points=num_points),
        multitask=MultitaskConfig(coefficients="fixed", covariance_interval=1),
        train=TrainConfig(epochs=1, batch_size=BATCH_SIZE, warmup_epochs=0, init_from=init_from),
    )


@pytest.fixture(scope="module")
def source_checkpoint(faces_68: list[FaceAnnotation], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-point model with one attribute task, trained for two steps, saved as a weights file."""
    faces = five_point_faces(faces_68)
    out = tmp_path_factory.mktemp("source")
    trainer = Trainer(small_config(5, "mtfl-5", ("random",)), out,
                      faces=(faces[:TRAIN_FACES], faces[TRAIN_FACES:]))
    trainer.fit()
    path = out / "five-point.pt"
    atomic_save(trainer.weights(), path)
    return path


def transfer_trainer(faces_68: list[FaceAnnotation], out: Path, init_from: Path, init_layers: str = "all",
                     **model: int) -> Trainer:
    cfg = small_config(68, "ibug-68", (), str(init_from))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_layers=init_layers))
    if model:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model))
    return Trainer(cfg, out, faces=(faces_68[:TRAIN_FACES], faces_68[TRAIN_FACES:]))


def test_transfer_keeps_shared_layers_and_swaps_heads(
    faces_68: list[FaceAnnotation], source_checkpoint: Path, tmp_path: Path
) -> None:
    source = read_checkpoint(source_checkpoint)["model"]
    trainer = transfer_trainer(faces_68, tmp_path, source_checkpoint)
    state = trainer.model.state_dict()
    shared = [k for k in source if k.startswith(("features.", "fc."))]
    assert len(shared) == 10  # four conv layers and the fc layer, weight and bias each
    for key in shared:
        assert torch.equal(state[key], source[key]), key
    assert trainer.model.landmark_head.out_features == 2 * 68
    assert trainer.model.num_points == 68
    assert trainer.model.attribute_head.out_features == 0  # no attribute tasks while fine-tuning
    assert source["attribute_head.weight"].shape[0] == 1

    before = {k: v.clone() for k, v in state.items()}
    trainer.fit()
    assert trainer.step == 2
    after = trainer.model.state_dict()
    assert not torch.equal(after["features.0.weight"], before["features.0.weight"])
    assert not torch.equal(after["landmark_head.weight"], before["landmark_head.weight"])
    assert np.isfinite(trainer.history[-1]["val_nme"])

    fine_tuned = LandmarkModel.load(tmp_path / "best.pt")
    assert fine_tuned.scheme.name == "ibug-68"
    assert fine_tuned.task_names == ()
    report = evaluate(fine_tuned, faces_68[TRAIN_FACES:], box="gt")
    assert len(report.per_landmark) == 68
    assert np.all(np.isfinite(report.face_errors))


def test_five_point_model_scored_on_68_point_faces_at_their_five_points(
    faces_68: list[FaceAnnotation], source_checkpoint: Path
) -> None:
    model = LandmarkModel.load(source_checkpoint)
    faces = faces_68[TRAIN_FACES:]
    report = evaluate(model, faces, box="gt")
    summary = report.summary()
    assert summary["n"] == len(faces)
    assert list(summary["per_landmark"]) == list(MTFL_5.point_names)

    # The same figure by hand: predictions against the 68-point faces' five points, over eye-centre distance.
    greys = [to_grey(load_image(f.image_path)) for f in faces]
    boxes = [box_from_landmarks(f.landmarks, IBUG_68) for f in faces]
    predicted = model.predict(greys, boxes).landmarks
    five = np.stack([IBUG_68.five_points(f.landmarks.astype(np.float64)) for f in faces])
    eye_distance = np.linalg.norm(five[:, 0] - five[:, 1], axis=-1)
    expected = (np.linalg.norm(predicted - five, axis=-1).mean(axis=1) / eye_distance)
    np.testing.assert_allclose(report.face_errors, expected, rtol=1e-6)
    # With eye centres the only normalising points, inter-ocular and inter-pupil figures coincide.
    assert summary["nme_interpupil"] == pytest.approx(summary["nme_interocular"])


@pytest.mark.parametrize("mismatch", [{"channels": (20, 48, 64, 96)}, {"feature_dim": 128}, {"input_size": 64}])
def test_init_from_a_different_architecture_is_rejected(
    faces_68: list[FaceAnnotation], source_checkpoint: Path, tmp_path: Path, mismatch: dict
) -> None:
    with pytest.raises(CheckpointError, match=next(iter(mismatch))):
        transfer_trainer(faces_68, tmp_path, source_checkpoint, **mismatch)


def test_features_only_transfer_to_a_larger_crop(
    faces_68: list[FaceAnnotation], source_checkpoint: Path, tmp_path: Path
) -> None:
    # init_layers: features copies the conv filters (crop-size independent) and starts fc and heads
    # fresh, so the crop size and representation width may change; "all" refuses the same change.
    source = read_checkpoint(source_checkpoint)["model"]
    trainer = transfer_trainer(faces_68, tmp_path, source_checkpoint, "features", input_size=72, feature_dim=128)
    state = trainer.model.state_dict()
    conv = [k for k in source if k.startswith("features.")]
    assert len(conv) == 8
    for key in conv:
        assert torch.equal(state[key], source[key]), key
    assert state["fc.weight"].shape != source["fc.weight"].shape
    assert trainer.model.config.input_size == 72 and trainer.model.num_points == 68
    trainer.fit()
    assert np.isfinite(trainer.history[-1]["val_nme"])
    assert LandmarkModel.load(tmp_path / "best.pt").input_size == 72
    with pytest.raises(CheckpointError, match="init_layers"):
        transfer_trainer(faces_68, tmp_path / "all", source_checkpoint, "all", input_size=72)
    with pytest.raises(CheckpointError, match="channels"):
        transfer_trainer(faces_68, tmp_path / "ch", source_checkpoint, "features", channels=(20, 40, 64, 80))
    with pytest.raises(CheckpointError, match="kernels"):
        transfer_trainer(faces_68, tmp_path / "k", source_checkpoint, "features", kernels=(5, 5, 3, 5))


def test_features_transfer_into_a_wider_network_keeps_the_source_features(
    faces_68: list[FaceAnnotation], source_checkpoint: Path, tmp_path: Path
) -> None:
    # Wider layers: the source's filters fill the leading channels and read only the source's channels
    # below, so at the start those channels of every layer compute the source's features exactly.
    source = LandmarkModel.load(source_checkpoint).network
    wider = (24, 52, 70, 90)
    trainer = transfer_trainer(faces_68, tmp_path, source_checkpoint, "features", input_size=72, channels=wider)
    network = trainer.model
    assert [m.out_channels for m in network.features if isinstance(m, torch.nn.Conv2d)] == list(wider)
    crops = torch.rand(3, 1, 72, 72) * 255
    x_source, x_wide = standardise(crops), standardise(crops)
    with torch.no_grad():
        for src_module, module in zip(source.features, network.features):
            x_source, x_wide = src_module(x_source), module(x_wide)
            torch.testing.assert_close(x_wide[:, :x_source.shape[1]], x_source, rtol=0, atol=1e-5)
            if isinstance(module, torch.nn.Conv2d):  # the added filters start fresh, not as copies
                assert x_wide.shape[1] > x_source.shape[1]
                assert not torch.equal(module.weight[x_source.shape[1]:].abs().sum(), torch.tensor(0.0))
    trainer.fit()
    assert np.isfinite(trainer.history[-1]["val_nme"])


def test_init_from_a_missing_file_is_rejected(faces_68: list[FaceAnnotation], tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="neither a shipped model"):
        transfer_trainer(faces_68, tmp_path, tmp_path / "no-such.pt")


def test_transfer_and_scratch_configs_differ_only_in_init_from() -> None:
    transfer = config_to_dict(load_config(TRANSFER_CONFIG))
    scratch = config_to_dict(load_config(SCRATCH_CONFIG))
    assert transfer["train"].pop("init_from")
    assert scratch["train"].pop("init_from") == ""
    assert transfer == scratch
    assert transfer["model"]["num_points"] == 68
    assert transfer["data"]["scheme"] == "ibug-68"
    assert transfer["data"]["tasks"] == []
    five_point = config_to_dict(load_config(REPO_ROOT / "configs" / "mtfl-5pt.yaml"))["model"]
    # The conv filters always transfer; the crop size and fc width may differ only when just the filters do.
    assert transfer["model"]["channels"] == five_point["channels"]
    assert transfer["model"]["kernels"] == five_point["kernels"]
    if (transfer["model"]["input_size"], transfer["model"]["feature_dim"]) != (
            five_point["input_size"], five_point["feature_dim"]):
        assert transfer["train"]["init_layers"] == "features"


def test_shipped_68_point_weights_load_as_a_small_68_point_model() -> None:
    if not SHIPPED_68PT.is_file():
        pytest.skip(f"{SHIPPED_68PT} not shipped yet")
    assert SHIPPED_68PT.stat().st_size < 4 * 1024 * 1024  # model weights only, no optimiser state
    state = read_checkpoint(SHIPPED_68PT)
    assert "optimizer" not in state
    model = LandmarkModel.load(SHIPPED_68PT)
    assert model.scheme.name == "ibug-68"
    assert model.network.num_points == 68
    assert model.task_names == ()
