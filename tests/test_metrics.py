"""Accuracy, DER and evaluation against hand-computed values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.data import ImageSet
from bench.core.metrics import Metrics, accuracy, der, evaluate, logits, predict
from bench.core.poison import BackdoorTestSet


def test_accuracy_by_hand():
    assert accuracy(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 3])) == pytest.approx(0.75)
    assert accuracy(torch.tensor([5, 5, 5]), torch.tensor([1, 2, 3])) == 0.0
    assert accuracy(torch.tensor([4]), torch.tensor([4])) == 1.0


def test_accuracy_of_nothing_is_zero():
    assert accuracy(torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)) == 0.0


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ((0.90, 0.95), (0.85, 0.05), 0.925),  # (0.90 − 0.05 + 1) / 2
        ((0.90, 0.50), (0.90, 0.70), 0.5),  # ASR rises: ΔASR clamped at 0
        ((0.80, 0.90), (0.85, 0.10), 0.9),  # accuracy rises: ΔACC clamped at 0
        ((0.90, 0.90), (0.10, 0.90), 0.1),  # accuracy destroyed, ASR untouched
        ((0.90, 1.00), (0.90, 0.00), 1.0),  # the ideal defense
        ((1.00, 0.00), (0.00, 1.00), 0.0),  # the worst one
        ((0.90, 0.95), (0.90, 0.95), 0.5),  # nothing changes
    ],
)
def test_der_by_hand(before, after, expected):
    assert der(Metrics(before[0], before[1], 0.0), Metrics(after[0], after[1], 0.0)) == pytest.approx(expected)


def test_der_ignores_robust_accuracy():
    assert der(Metrics(0.9, 0.9, 0.0), Metrics(0.8, 0.1, 0.9)) == der(Metrics(0.9, 0.9, 0.5), Metrics(0.8, 0.1, 0.0))


class PixelOracle(nn.Module):
    """Predicts the class written in the top-left pixel of the first channel (as a uint8 value)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.unused = nn.Parameter(torch.zeros(1))  # predict() reads the device of the parameters
        self.seen_max = 0.0

    def forward(self, x):
        self.seen_max = max(self.seen_max, float(x.max()))
        cls = (x[:, 0, 0, 0] * 255).round().long()
        return F.one_hot(cls, self.num_classes).float() + 0 * self.unused


def images_predicting(classes: list[int]) -> torch.Tensor:
    x = torch.zeros(len(classes), 1, 4, 4, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.tensor(classes, dtype=torch.uint8)
    x[:, 0, 3, 3] = 255  # the model must see pixels in [0, 1]; 255 must arrive as 1.0
    return x


def test_predict_scales_pixels_to_0_1_and_batches():
    model = PixelOracle()
    classes = [3, 1, 4, 1, 5, 9, 2, 6]
    preds = predict(model, images_predicting(classes), batch_size=3)
    assert preds.tolist() == classes
    assert model.seen_max == pytest.approx(1.0)


def test_logits_are_the_model_outputs_on_unit_range_images_and_keep_the_training_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]))
    model.train()
    x = torch.tensor([[[[255, 0], [0, 51]]], [[[0, 0], [0, 255]]]], dtype=torch.uint8)  # [2, 1, 2, 2]
    assert torch.allclose(logits(model, x, batch_size=1), torch.tensor([[1.0, 0.4], [0.0, 2.0]]))
    assert model.training


def test_no_images_give_no_predictions():
    preds = predict(PixelOracle(), torch.zeros(0, 1, 4, 4, dtype=torch.uint8))
    assert preds.shape == (0,) and preds.dtype == torch.int64


def test_evaluate_by_hand():
    clean_true = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    clean_pred = [0, 1, 2, 3, 4, 5, 6, 7, 0, 0]  # 8 of 10 right
    test = ImageSet(images_predicting(clean_pred), torch.tensor(clean_true))
    bd_pred = [0, 0, 9, 4, 9]
    backdoor = BackdoorTestSet(
        x=images_predicting(bd_pred),
        y_target=torch.zeros(5, dtype=torch.int64),
        y_true=torch.tensor([1, 2, 3, 4, 9]),
    )
    model = PixelOracle()
    model.train()
    metrics = evaluate(model, test, backdoor)
    assert metrics.acc == pytest.approx(0.8)
    assert metrics.asr == pytest.approx(0.4)  # two of five go to the target 0
    assert metrics.ra == pytest.approx(0.4)  # 4 and 9 keep their true label
    assert model.training, "evaluate restores the training mode"


def test_evaluate_runs_the_model_in_eval_mode():
    class ModeReporter(PixelOracle):
        def forward(self, x):
            cls = 1 if self.training else 0
            return F.one_hot(torch.full((len(x),), cls), self.num_classes).float() + 0 * self.unused

    test = ImageSet(images_predicting([0, 0]), torch.tensor([0, 0]))
    backdoor = BackdoorTestSet(images_predicting([0]), torch.tensor([0]), torch.tensor([1]))
    model = ModeReporter().train()
    assert evaluate(model, test, backdoor) == Metrics(acc=1.0, asr=1.0, ra=0.0)
