"""A synthetic 32×32 RGB dataset for the benchmarks: CIFAR-like difficulty, no download.

Not a registered dataset (``bench.core.datasets``): a benchmark-only stand-in where the
embedded digits cannot show an attack, e.g. the clean-label attacks, which need a
target class whose natural features are not trivially learnable.

Each of the ``num_classes`` classes (10 by default) owns a prototype: ``COMPONENTS``
coloured plane waves ``colour · cos(2π (ky · i + kx · j) / 32 + phase)`` with low integer
frequencies (``|ky|, |kx| ≤ MAX_FREQ``), so the class is a colour texture of given
orientations and scales. Every image is a random mixture: its class prototype at weight
``U(CLASS_WEIGHT)``, the prototypes of ``DISTRACTORS`` other classes at weights
``U(DISTRACTOR_WEIGHT)`` (a distractor may outweigh the class: the labels are not
separable, as on natural images), each prototype at its own random cyclic shift (a phase
shift of its waves), on a random smooth background (1/f² noise), with per-image contrast
and per-channel brightness jitter and Gaussian pixel noise. Classes are balanced (exactly
``n / num_classes`` images each, in random order). Everything is drawn from one
``torch.Generator`` seeded with ``seed``.

With ``benchmarks/attack_check.py``'s settings a clean small_cnn reaches about 85% test
accuracy (4,000 training images, 15 epochs). A clean-label rho of ``1 / num_classes`` (0.1
with 10 classes) poisons the whole target class.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bench.core.data import Augmentation, DatasetSpec, ImageSet, LoadedDataset

SIZE = 32
CHANNELS = 3
NUM_CLASSES = 10  # default class count
COMPONENTS = 3  # plane waves per class prototype
MAX_FREQ = 3  # largest |ky|, |kx| of a wave, in periods across the image
DISTRACTORS = 2  # other classes' prototypes mixed into every image
CLASS_WEIGHT = (0.35, 1.0)  # weight of the image's own prototype
DISTRACTOR_WEIGHT = (0.0, 0.6)  # weight of each distractor prototype
BACKGROUND_STD = 0.6  # of the smooth background, in units of a prototype's std
SCALE = 0.16  # pixel std (in [0, 1] units) of a unit-std mixture, before the contrast jitter
CONTRAST = (0.7, 1.3)
BRIGHTNESS = 0.08  # per-channel offset drawn from U(−BRIGHTNESS, BRIGHTNESS)
NOISE_STD = 0.02  # Gaussian pixel noise, in [0, 1] units


def _uniform(shape: tuple[int, ...], bounds: tuple[float, float], gen: torch.Generator) -> Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=gen)


def _prototype_waves(k: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` classes' waves: int64 frequencies ``[k, COMPONENTS, 2]`` (ky, kx), float32 colours ``[k, COMPONENTS, 3]``
    (unit norm; each prototype then has unit pixel std over the image) and phases ``[k, COMPONENTS]`` in [0, 2π)."""
    freq = torch.randint(-MAX_FREQ, MAX_FREQ + 1, (k, COMPONENTS, 2), generator=gen)
    zero = (freq == 0).all(-1)
    freq[..., 1] = torch.where(zero, 1, freq[..., 1])  # no constant wave: (0, 0) → (0, 1)
    colour = torch.randn(k, COMPONENTS, CHANNELS, generator=gen)
    colour = colour / colour.norm(dim=-1, keepdim=True) * math.sqrt(2 * CHANNELS / COMPONENTS)
    phase = 2 * math.pi * torch.rand(k, COMPONENTS, generator=gen)
    return freq, colour, phase


def _render(classes: Tensor, waves: tuple[Tensor, Tensor, Tensor], gen: torch.Generator) -> Tensor:
    """Prototypes of ``classes`` (int64 ``[N]``), each at a random cyclic shift: float32 ``[N, 3, 32, 32]``."""
    freq, colour, phase = waves
    n = len(classes)
    shift = torch.randint(0, SIZE, (n, 1, 2), generator=gen).float()  # (dy, dx) per image
    f = freq[classes].float()  # [N, COMPONENTS, 2]
    theta = phase[classes] + 2 * math.pi * (f * shift).sum(-1) / SIZE  # [N, COMPONENTS]
    grid = torch.arange(SIZE, dtype=torch.float32) * 2 * math.pi / SIZE
    arg = f[..., 0, None, None] * grid.view(1, 1, -1, 1) + f[..., 1, None, None] * grid.view(1, 1, 1, -1)
    waves_nk = torch.cos(arg + theta[..., None, None])  # [N, COMPONENTS, H, W]
    return torch.einsum("nkc,nkhw->nchw", colour[classes], waves_nk)


def _background(n: int, gen: torch.Generator) -> Tensor:
    """Smooth random fields, float32 ``[n, 3, 32, 32]``, unit std per image and channel (amplitude ∝ 1/f²)."""
    fy = torch.fft.fftfreq(SIZE).view(-1, 1)
    fx = torch.fft.rfftfreq(SIZE).view(1, -1)
    amplitude = torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / SIZE).pow(-2.0)
    amplitude[0, 0] = 0.0
    noise = torch.randn(2, n, CHANNELS, SIZE, SIZE // 2 + 1, generator=gen)
    field = torch.fft.irfft2(torch.complex(noise[0], noise[1]) * amplitude, s=(SIZE, SIZE))
    return (field - field.mean((-2, -1), keepdim=True)) / field.std((-2, -1), keepdim=True).clamp_min(1e-6)


def _distractors(y: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """``DISTRACTORS`` distinct classes of ``k`` per image, none equal to its label: int64 ``[N, DISTRACTORS]``."""
    scores = torch.rand(len(y), k, generator=gen)
    scores[torch.arange(len(y)), y] = 2.0  # never chosen: the smallest scores are
    return scores.argsort(dim=1)[:, :DISTRACTORS]


def _images(y: Tensor, waves: tuple[Tensor, Tensor, Tensor], noise_std: float, gen: torch.Generator) -> Tensor:
    """uint8 ``[N, 3, 32, 32]`` images of labels ``y`` (int64 ``[N]``), in [0, 255]; pixel noise of std ``noise_std``."""
    n = len(y)
    mix = _uniform((n, 1, 1, 1), CLASS_WEIGHT, gen) * _render(y, waves, gen)
    others = _distractors(y, len(waves[0]), gen)
    for d in range(DISTRACTORS):
        mix = mix + _uniform((n, 1, 1, 1), DISTRACTOR_WEIGHT, gen) * _render(others[:, d], waves, gen)
    mix = mix + BACKGROUND_STD * _background(n, gen)
    contrast = _uniform((n, 1, 1, 1), CONTRAST, gen)
    brightness = _uniform((n, CHANNELS, 1, 1), (-BRIGHTNESS, BRIGHTNESS), gen)
    noise = noise_std * torch.randn(n, CHANNELS, SIZE, SIZE, generator=gen)
    x = 0.5 + SCALE * contrast * mix + brightness + noise
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _balanced_labels(n: int, k: int, gen: torch.Generator) -> Tensor:
    """int64 ``[n]``: exactly ``n / k`` of each of ``k`` classes, in random order."""
    return (torch.arange(n) % k)[torch.randperm(n, generator=gen)]


def _channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``x`` ``[N, C, H, W]``, in [0, 1] units."""
    xf = x.double() / 255
    return tuple(xf.mean((0, 2, 3)).tolist()), tuple(xf.std((0, 2, 3)).tolist())


def synthetic32(
    seed: int = 0, n_train: int = 4000, n_test: int = 1000, num_classes: int = NUM_CLASSES, noise_std: float = NOISE_STD
) -> LoadedDataset:
    """The synthetic set: ``train``/``test`` uint8 ``[n, 3, 32, 32]`` in [0, 255], int64 labels in [0, num_classes).

    ``num_classes`` must exceed ``DISTRACTORS``; ``n_train`` and ``n_test`` must be multiples
    of it (balanced classes). ``noise_std`` (≥ 0, [0, 1] units) is the white pixel noise; at 0
    the images keep only the uint8 rounding, and, as natural photographs, carry almost no
    energy at the highest spatial frequencies. The same ``seed`` gives identical tensors;
    train and test share the class prototypes. The spec's mean/std are the training set's
    per-channel statistics.
    """
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    if num_classes <= DISTRACTORS:
        raise ValueError(f"num_classes must exceed DISTRACTORS ({DISTRACTORS}), got {num_classes}")
    if n_train % num_classes or n_test % num_classes or n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train and n_test must be positive multiples of {num_classes}, got {n_train}, {n_test}")
    gen = torch.Generator().manual_seed(seed)
    waves = _prototype_waves(num_classes, gen)
    y_train, y_test = _balanced_labels(n_train, num_classes, gen), _balanced_labels(n_test, num_classes, gen)
    train = ImageSet(_images(y_train, waves, noise_std, gen), y_train)
    test = ImageSet(_images(y_test, waves, noise_std, gen), y_test)
    mean, std = _channel_stats(train.x)
    spec = DatasetSpec(
        name="synthetic32",
        channels=CHANNELS,
        size=SIZE,
        num_classes=num_classes,
        mean=mean,
        std=std,
        augmentation=Augmentation(crop_padding=4, flip=True),
        train_class_counts=(n_train // num_classes,) * num_classes,
    )
    return LoadedDataset(spec, train, test)
