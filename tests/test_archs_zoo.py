"""The torchvision-based architectures are the real networks, adapted to small images as documented.

Shape and structure checks build on the meta device (shapes only: no memory, no
arithmetic), so they cost little even for ViT-B/16 or VGG-19. The same
properties on real CPU kernels, and forward/backward for the heavy networks, are ``slow``.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from bench.core.archs import build_model
from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS

# arch → (torchvision builder, prefix of the builder's names in ours,
#         state-dict entries whose shape differs at 3 channels, parameters in millions at K = 10)
ZOO = {
    "resnet18": ("resnet18", "", {"conv1.weight"}, 11.17),
    "vgg19_bn": ("vgg19_bn", "", set(), 139.62),
    "mobilenet_v3_large": ("mobilenet_v3_large", "", set(), 4.21),
    "efficientnet_b3": ("efficientnet_b3", "", set(), 10.71),
    "densenet161": ("densenet161", "", {"features.conv0.weight"}, 26.48),
    "convnext_tiny": ("convnext_tiny", "", {"features.0.0.weight"}, 27.83),
    "vit_b_16": ("vit_b_16", "1.", set(), 85.81),
}

# Side of the deepest conv's output map for a 32×32 input. 4: the stem's ×4 downsampling is
# removed (total stride 8, as the CIFAR ResNets); VGG keeps torchvision's five pools; the ViT
# sees a 224×224 resize cut into 16×16 patches.
DEEPEST_CONV_SIDE_AT_32 = {
    "resnet18": 4,
    "vgg19_bn": 2,
    "mobilenet_v3_large": 4,
    "efficientnet_b3": 4,
    "densenet161": 4,
    "convnext_tiny": 4,
    "vit_b_16": 14,
}

# Too slow on a CPU for the generic tests of tests/test_archs.py, which leave them to the slow tests here.
from tests.test_archs import HEAVY  # noqa: E402

# (dataset, channels, side, classes) of the datasets the project uses.
DATASETS = [
    ("digits", 1, 16, 10),
    ("mnist", 1, 28, 10),
    ("cifar10", 3, 32, 10),
    ("gtsrb", 3, 32, 43),
    ("tiny", 3, 64, 200),
]


@functools.cache
def _on_meta(arch: str, spec: DatasetSpec) -> nn.Module:
    """``build_model(arch, spec)`` in eval mode with every tensor on the meta device; shared, so left as it is."""
    with torch.device("meta"):
        return build_model(arch, spec).eval()


@functools.cache
def _torchvision_on_meta(builder: str, num_classes: int) -> nn.Module:
    with torch.device("meta"):
        return getattr(models, builder)(weights=None, num_classes=num_classes)


def _conv_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Conv2d, torch.Tensor]]:
    """Every Conv2d call of one forward pass, in call order, with its output."""
    calls, handles = [], []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(lambda m, args, out: calls.append((m, out))))
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


@pytest.mark.parametrize(("dataset", "channels", "size", "classes"), DATASETS, ids=[d[0] for d in DATASETS])
@pytest.mark.parametrize("arch", ARCHS.names())
def test_logits_for_each_dataset_shape(arch, dataset, channels, size, classes, make_spec):
    model = _on_meta(arch, make_spec(channels=channels, size=size, num_classes=classes))
    assert model(torch.empty(2, channels, size, size, device="meta")).shape == (2, classes)


@pytest.mark.parametrize("arch", ARCHS.names())
def test_grayscale_spec_builds_a_first_layer_with_one_input_channel(arch, make_spec):
    model = _on_meta(arch, make_spec(channels=1, size=16, num_classes=10))
    first, _ = _conv_calls(model, torch.empty(2, 1, 16, 16, device="meta"))[0]
    assert first.in_channels == 1


@pytest.mark.parametrize("arch", list(ZOO))
def test_same_state_dict_as_torchvision_except_the_stem(arch, make_spec):
    """Names and shapes of every parameter and buffer are the torchvision builder's, but for the documented stem."""
    builder, prefix, changed, _ = ZOO[arch]
    ours = _on_meta(arch, make_spec(channels=3, size=32, num_classes=10)).net.state_dict()
    ours = {name.removeprefix(prefix): tensor.shape for name, tensor in ours.items()}
    theirs = {name: tensor.shape for name, tensor in _torchvision_on_meta(builder, 10).state_dict().items()}
    assert ours.keys() == theirs.keys()
    assert {name for name in ours if ours[name] != theirs[name]} == changed


@pytest.mark.parametrize("arch", list(ZOO))
def test_parameter_count_is_the_torchvision_networks(arch, make_spec):
    builder, _, _, millions = ZOO[arch]
    ours = sum(p.numel() for p in _on_meta(arch, make_spec(channels=3, size=32, num_classes=10)).parameters())
    theirs = sum(p.numel() for p in _torchvision_on_meta(builder, 10).parameters())
    assert ours / 1e6 == pytest.approx(millions, abs=0.01)
    assert ours == pytest.approx(theirs, rel=1e-3)  # only a stem conv's kernel may differ


@pytest.mark.parametrize("arch", list(DEEPEST_CONV_SIDE_AT_32))
def test_deepest_conv_map_at_32px(arch, make_spec):
    model = _on_meta(arch, make_spec(channels=3, size=32, num_classes=10))
    _, out = _conv_calls(model, torch.empty(2, 3, 32, 32, device="meta"))[-1]
    assert out.shape[-2:] == (DEEPEST_CONV_SIDE_AT_32[arch],) * 2


def test_vit_parameters_do_not_depend_on_the_image_side(make_spec):
    """The resize to 224 keeps one ViT-B/16 (197 position embeddings) for every dataset."""
    shapes = []
    for size in (16, 32, 64):
        state = _on_meta("vit_b_16", make_spec(channels=3, size=size, num_classes=10)).state_dict()
        shapes.append({name: tensor.shape for name, tensor in state.items()})
    assert shapes[0] == shapes[1] == shapes[2]
    assert shapes[0]["net.1.encoder.pos_embedding"] == (1, 197, 768)


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "channels", "size", "classes"), DATASETS, ids=[d[0] for d in DATASETS])
@pytest.mark.parametrize("arch", list(ZOO))
def test_real_logits_for_each_dataset_shape(arch, dataset, channels, size, classes, make_spec):
    model = build_model(arch, make_spec(channels=channels, size=size, num_classes=classes)).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0)))
    assert logits.shape == (2, classes)
    assert torch.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("arch", HEAVY)
def test_heavy_forward_and_backward(arch, make_spec):
    """tests/test_archs.py's forward/backward check, for the networks it leaves out."""
    model = build_model(arch, make_spec(channels=3, size=16, num_classes=10))
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    logits = model(x)
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 3, 7, 9])).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
    assert any(param.grad.abs().sum() > 0 for param in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("arch", HEAVY)
def test_heavy_state_dict_round_trips_between_builds(arch, make_spec):
    """tests/test_archs.py's round trip, for the networks it leaves out.

    The weights move by zero-mean noise: a constant shift of every weight (+0.01) makes
    DenseNet-161's eval-mode outputs overflow to NaN, with or without the CIFAR stem.
    """
    spec = make_spec(channels=3, size=8)
    trained, fresh = build_model(arch, spec).eval(), build_model(arch, spec).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in trained.parameters():
            param.add_(0.01 * torch.randn(param.shape, generator=gen))
    fresh.load_state_dict(trained.state_dict(), strict=True)
    x = torch.rand(2, 3, 8, 8, generator=gen)
    out = trained(x)
    assert torch.isfinite(out).all()
    assert torch.equal(fresh(x), out)
