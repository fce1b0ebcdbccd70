"""Optional metrics: membership-inference advantage and sharpness, against hand computation."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from bench.cells import expand
from bench.core.extra_metrics import Probe, draw_probe, mia_advantage, threshold_advantage, top_hessian_eigenvalue
from bench.grid import GridError, load_grid
from bench.core.data import ImageSet
from tests.test_grid import VALID


@pytest.mark.parametrize(
    "members, non_members, expected",
    [
        ([0.1, 0.2, 0.3], [0.25, 0.4, 0.5], 2 / 3),  # τ = 0.2: TPR 2/3, FPR 0
        ([0.1, 0.2], [0.3, 0.4], 1.0),  # separable
        ([0.3, 0.4], [0.1, 0.2], 0.0),  # members have the larger losses: no advantage
        ([0.2, 0.2, 0.2], [0.2, 0.2, 0.2], 0.0),  # ties give no threshold between them
        ([0.1, 0.5], [0.3, 0.3], 0.5),  # τ = 0.1: TPR 1/2, FPR 0
    ],
)
def test_threshold_advantage_by_hand(members, non_members, expected):
    assert threshold_advantage(torch.tensor(members), torch.tensor(non_members)) == pytest.approx(expected)


class Linear2x2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def tiny_set(n: int, seed: int) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 1, 2, 2), generator=gen, dtype=torch.uint8), torch.randint(0, 3, (n,), generator=gen))


def test_sharpness_is_the_top_hessian_eigenvalue():
    torch.manual_seed(0)
    model = Linear2x2()
    batch = tiny_set(16, 1)
    probe = Probe(batch, batch, batch)
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    flat = torch.cat([p.detach().flatten() for p in params])

    def loss_of(vector):
        weight, bias = vector[:12].view(shapes[0]), vector[12:].view(shapes[1])
        logits = (batch.x.float() / 255).flatten(1) @ weight.T + bias
        return nn.functional.cross_entropy(logits, batch.y)

    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))
    expected = eigenvalues[eigenvalues.abs().argmax()].item()
    assert top_hessian_eigenvalue(model, probe, iterations=200) == pytest.approx(expected, rel=1e-3)


def test_mia_advantage_sees_memorisation():
    """A model that memorised its members beats chance; the probe draws equal counts."""
    members, non_members = tiny_set(40, 2), tiny_set(40, 3)
    model = Linear2x2()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(members.x.float() / 255), members.y).backward()
        optimizer.step()
    probe = draw_probe(members, non_members, torch.Generator().manual_seed(0), size=30, batch=8)
    assert len(probe.members) == len(probe.non_members) == 30
    assert mia_advantage(model, probe) > 0.2
    assert mia_advantage(Linear2x2(), Probe(members, members, members)) == 0.0  # same images: no advantage


def test_grid_metrics_are_validated_and_change_cell_ids(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(VALID)
    plain = expand(load_grid(path))
    path.write_text(VALID + "metrics: [mia, sharpness]\n")
    measured = expand(load_grid(path))
    assert [c.attack_key for c in plain] == [c.attack_key for c in measured]  # models are reused
    assert {c.cell_id for c in plain}.isdisjoint({c.cell_id for c in measured})
    assert measured[0].defense_stage.extra_metrics == ("mia", "sharpness")
    path.write_text(VALID + "metrics: [mai]\n")
    with pytest.raises(GridError, match=r"metrics\[0\]: unknown metric 'mai'; did you mean 'mia'"):
        load_grid(path)
