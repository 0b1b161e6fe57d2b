"""The network (Fig. 2) and the objective of Eq. 9, term by term."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tcdcn.config import ModelConfig, ObjectiveConfig
from tcdcn.models.network import TCDCN, count_multiply_adds, count_parameters, standardise
from tcdcn.training.objective import (
    attribute_losses,
    covariance_penalty,
    filter_penalty,
    landmark_loss,
    tcdcn_objective,
    wing_loss,
)
from tcdcn.training.task_covariance import covariance_inverse, update_task_covariance

NUM_TASKS = 8

# The default network by hand, 60x60 input:
#   conv 5x5,  1 -> 20: 56x56, pool 28x28;  weights 20*1*25  = 500     + 20 biases
#   conv 5x5, 20 -> 48: 24x24, pool 12x12;  weights 48*20*25 = 24,000  + 48
#   conv 3x3, 48 -> 64: 10x10, pool 5x5;    weights 64*48*9  = 27,648  + 64
#   conv 3x3, 64 -> 80: 3x3 (no pool);      weights 80*64*9  = 46,080  + 80
#   fc 80*3*3 = 720 -> 256:                 weights 184,320 + 256
#   landmark head 256 -> 10: 2,560 + 10;    attribute head 256 -> 8: 2,048 + 8
DEFAULT_PARAMETERS = (500 + 20) + (24_000 + 48) + (27_648 + 64) + (46_080 + 80) + (184_320 + 256) \
    + (2_560 + 10) + (2_048 + 8)
# Multiply-adds: output pixels x output channels x input channels x kernel area, plus the linear maps.
DEFAULT_MULTIPLY_ADDS = (56 * 56 * 20 * 1 * 25) + (24 * 24 * 48 * 20 * 25) + (10 * 10 * 64 * 48 * 9) \
    + (3 * 3 * 80 * 64 * 9) + 184_320 + 2_560 + 2_048


@pytest.fixture()
def model() -> TCDCN:
    torch.manual_seed(0)
    return TCDCN(ModelConfig(), NUM_TASKS)


def _images(batch: int = 3, size: int = 60, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, size, size, generator=generator) * 255  # (B, 1, S, S) raw grey


# ---- the network ----------------------------------------------------------------------------------
def test_output_shapes(model: TCDCN) -> None:
    landmarks, logits = model(_images(3))
    assert landmarks.shape == (3, 5, 2)
    assert logits.shape == (3, NUM_TASKS)
    assert model.forward_features(_images(2)).shape == (2, 256)
    assert model.feature_map_size == 3
    assert model.head_weight().shape == (256, 2 * 5 + NUM_TASKS)
    assert (model.num_points, model.num_tasks) == (5, NUM_TASKS)


def test_default_parameter_count_and_multiply_adds(model: TCDCN) -> None:
    assert DEFAULT_PARAMETERS == 287_642
    assert DEFAULT_MULTIPLY_ADDS == 18_760_448
    assert count_parameters(model) == DEFAULT_PARAMETERS
    assert count_multiply_adds(model) == DEFAULT_MULTIPLY_ADDS


def test_landmark_head_starts_at_zero(model: TCDCN) -> None:
    # Zero-initialised head: the first prediction is the crop centre (the mean face position).
    landmarks, _ = model(_images(2))
    assert torch.count_nonzero(landmarks) == 0


def test_standardise_per_image() -> None:
    images = _images(4) * torch.tensor([0.1, 1.0, 2.0, 0.5]).view(-1, 1, 1, 1) + 7.0
    flat = standardise(images).flatten(1)
    torch.testing.assert_close(flat.mean(dim=1), torch.zeros(4), rtol=0, atol=1e-5)
    torch.testing.assert_close(flat.std(dim=1), torch.ones(4), rtol=0, atol=1e-3)


def test_prediction_ignores_brightness_and_contrast(model: TCDCN) -> None:
    model.eval()
    torch.nn.init.normal_(model.landmark_head.weight, std=0.1)
    images = _images(2)
    with torch.no_grad():
        a, _ = model(images)
        b, _ = model(images * 0.5 + 40.0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-3)


def test_reset_landmark_head_keeps_features_and_changes_output(model: TCDCN) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("landmark_head")}
    model.reset_landmark_head(68)
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert after["landmark_head.weight"].shape == (136, 256)
    landmarks, logits = model(_images(2))
    assert landmarks.shape == (2, 68, 2) and logits.shape == (2, NUM_TASKS)
    assert model.num_points == 68 and model.config.num_points == 68
    assert model.head_weight().shape == (256, 136 + NUM_TASKS)


def test_reset_attribute_head(model: TCDCN) -> None:
    model.reset_attribute_head(0)
    landmarks, logits = model(_images(2))
    assert landmarks.shape == (2, 5, 2) and logits.shape == (2, 0)


def test_filters_are_conv_and_fc_weights(model: TCDCN) -> None:
    filters = model.filters()
    assert [tuple(f.shape) for f in filters] == [(20, 1, 5, 5), (48, 20, 5, 5), (64, 48, 3, 3), (80, 64, 3, 3),
                                                 (256, 720)]
    expected = sum(float(f.detach().double().pow(2).sum()) for f in filters)
    assert float(filter_penalty(filters).detach()) == pytest.approx(expected, rel=1e-5)


# ---- the objective --------------------------------------------------------------------------------
def test_wing_loss_hand_values_continuity_and_gradient() -> None:
    w, eps = 2.0, 0.5
    joint = w - w * math.log(1 + w / eps)  # C = 2 - 2 ln 5
    target = torch.zeros(1, 2, 2)
    # Coordinates 0.5 and 1 (inside the log part) and 3 and -4 (linear part).
    pred = torch.tensor([[[0.5, -1.0], [3.0, -4.0]]], requires_grad=True)
    expected = w * math.log(2.0) + w * math.log(3.0) + (3.0 - joint) + (4.0 - joint)
    loss = wing_loss(pred, target, w, eps)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert pred.grad is not None
    # d/dx of w ln(1 + |x|/eps) = w / (eps + |x|) * sign(x); beyond w the slope is sign(x).
    torch.testing.assert_close(pred.grad[0], torch.tensor([[w / 1.0, -w / 1.5], [1.0, -1.0]]))
    # The two pieces meet at |x| = w, and the loss grows with the error on both.
    at = [float(wing_loss(torch.full((1, 1, 2), x), torch.zeros(1, 1, 2), w, eps)) for x in (w - 1e-4, w + 1e-4)]
    assert at[0] == pytest.approx(at[1], abs=1e-3)
    visible = torch.tensor([[True, False]])
    hidden_second = float(wing_loss(pred, target, w, eps, visible).detach())
    assert hidden_second == pytest.approx(w * (math.log(2.0) + math.log(3.0)))


def test_objective_uses_the_configured_landmark_loss(model: TCDCN) -> None:
    batch = _batch()
    cfg = replace(ObjectiveConfig(), landmark_loss="wing", wing_width=0.3, wing_curvature=0.05)
    terms = tcdcn_objective(model, batch, torch.ones(NUM_TASKS), None, cfg)
    with torch.no_grad():
        pred, _ = model(batch["images"])
    torch.testing.assert_close(terms["landmarks"].detach(), wing_loss(pred, batch["landmarks"], 0.3, 0.05))


def test_landmark_loss_hand_value_and_visibility() -> None:
    target = torch.zeros(2, 2, 2)
    # Face 0: errors (1,0) and (0,2) -> 1 + 4 = 5. Face 1: (3,4) and (0,0) -> 25.
    pred = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 4.0], [0.0, 0.0]]], requires_grad=True)
    assert float(landmark_loss(pred, target).detach()) == pytest.approx(15.0)
    visible = torch.tensor([[True, False], [True, True]])
    loss = landmark_loss(pred, target, visible)
    assert float(loss.detach()) == pytest.approx(13.0)  # face 0 scores only its first point: (1 + 25) / 2
    loss.backward()
    assert pred.grad is not None
    assert torch.equal(pred.grad[0, 1], torch.zeros(2))  # a hidden point gets no gradient
    torch.testing.assert_close(pred.grad[1, 0], torch.tensor([3.0, 4.0]))  # d/dp of (p-t)^2 / 2 faces


def test_attribute_losses_are_per_task_mean_cross_entropy() -> None:
    logits = torch.tensor([[0.0, 2.0], [0.0, -1.0]])
    labels = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    expected = torch.tensor([
        math.log(2.0),
        (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2,
    ])
    torch.testing.assert_close(attribute_losses(logits, labels), expected)
    assert attribute_losses(torch.zeros(4, 0), torch.zeros(4, 0)).shape == (0,)


def test_covariance_penalty_equals_explicit_trace() -> None:
    generator = torch.Generator().manual_seed(1)
    head = torch.randn(16, 6, generator=generator, dtype=torch.float64)
    inverse = covariance_inverse(update_task_covariance(torch.randn(16, 6, generator=generator)), 1e-4)
    explicit = torch.trace(head @ inverse @ head.t())
    torch.testing.assert_close(covariance_penalty(head, inverse), explicit)


def test_covariance_gradient_is_two_w_upsilon_inverse() -> None:
    generator = torch.Generator().manual_seed(2)
    head = torch.randn(16, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    inverse = covariance_inverse(update_task_covariance(torch.randn(16, 6, generator=generator)), 1e-4)
    covariance_penalty(head, inverse).backward()
    assert head.grad is not None
    torch.testing.assert_close(head.grad, 2 * head.detach() @ inverse)


def test_covariance_gradient_reaches_both_heads(model: TCDCN) -> None:
    torch.nn.init.normal_(model.landmark_head.weight, std=0.1)
    inverse = covariance_inverse(update_task_covariance(model.head_weight()), 1e-4).float()
    covariance_penalty(model.head_weight(), inverse).backward()
    expected = (2 * model.head_weight().detach() @ inverse).t()  # (M+T, D), rows as nn.Linear stores them
    torch.testing.assert_close(model.landmark_head.weight.grad, expected[:10], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.attribute_head.weight.grad, expected[10:], rtol=1e-4, atol=1e-6)


def _batch(batch: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        "images": _images(batch, seed=4),
        "landmarks": torch.rand(batch, 5, 2, generator=generator) * 2 - 1,
        "labels": (torch.rand(batch, NUM_TASKS, generator=generator) > 0.5).float(),
        "visible": torch.ones(batch, 5, dtype=torch.bool),
    }


def test_objective_total_is_the_weighted_sum_of_its_terms(model: TCDCN) -> None:
    torch.nn.init.normal_(model.landmark_head.weight, std=0.1)
    cfg = replace(ObjectiveConfig(), landmark_weight=3.0, covariance_weight=0.5, filter_decay=0.25)
    coefficients = torch.linspace(0.1, 1.0, NUM_TASKS)
    inverse = covariance_inverse(update_task_covariance(model.head_weight()), cfg.covariance_ridge).float()
    batch = _batch()
    terms = tcdcn_objective(model, batch, coefficients, inverse, cfg)
    with torch.no_grad():
        pred, logits = model(batch["images"])
    lm = ((pred - batch["landmarks"]) ** 2).sum(dim=(1, 2)).mean()
    ce = F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="none").mean(dim=0)  # (T,)
    filters = sum(float(f.detach().pow(2).sum()) for f in model.filters())
    head = model.head_weight().detach()  # (D, M+T)
    cov = float(torch.trace(head @ inverse @ head.t()))
    torch.testing.assert_close(terms["landmarks"].detach(), lm)
    torch.testing.assert_close(terms["task_losses"], ce)
    torch.testing.assert_close(terms["attributes"].detach(), (coefficients * ce).sum())
    expected_total = 3.0 * float(lm) + float((coefficients * ce).sum()) + 0.25 * filters + 0.5 * cov
    assert float(terms["total"].detach()) == pytest.approx(expected_total, rel=1e-5)
    assert terms["pred_landmarks"].shape == (4, 5, 2)


def test_objective_without_covariance_drops_the_term(model: TCDCN) -> None:
    cfg = replace(ObjectiveConfig(), use_covariance=False, covariance_weight=1e6)
    inverse = torch.eye(2 * 5 + NUM_TASKS)
    terms = tcdcn_objective(model, _batch(), torch.ones(NUM_TASKS), inverse, cfg)
    assert "covariance" not in terms
    expected = cfg.landmark_weight * terms["landmarks"] + terms["attributes"] + cfg.filter_decay * terms["filters"]
    torch.testing.assert_close(terms["total"], expected)


def test_zero_coefficient_removes_a_task_from_the_gradient(model: TCDCN) -> None:
    cfg = replace(ObjectiveConfig(), use_covariance=False, filter_decay=0.0, landmark_weight=0.0)
    coefficients = torch.ones(NUM_TASKS)
    coefficients[2] = 0.0
    tcdcn_objective(model, _batch(), coefficients, None, cfg)["total"].backward()
    grad = model.attribute_head.weight.grad
    assert grad is not None
    assert torch.count_nonzero(grad[2]) == 0
    assert torch.count_nonzero(grad[0]) > 0
