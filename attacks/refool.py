"""Refool (Liu et al., ECCV 2020, "Reflection Backdoor"): a reflection blended into the image, clean-label.

The image ``t`` (the transmission layer, in [0, 1]) and a reflection image ``R`` are mixed
in linear light (gamma 2.2), with the paper's reflection models as coded by its authors
(``blend_images``, kept by BackdoorBench):

- ``ghost`` (ghost effect, two shifted copies): ``G = resize(a · r[o:, o':] + (1 − a) ·
  r[:−o, :−o'])`` with ``r = R^2.2``, offset ``(o, o')`` and attenuation ``a``;
  ``x' = (alpha_t · t^2.2 + (1 − alpha_t) · G)^(1/2.2)``;
- ``focus`` (out-of-focus reflection): ``B = gaussian_blur(r, sigma) · V · (1 − alpha_t / 2)``
  with ``V`` a Gaussian vignette (peak 1 at the centre, 3 σ at the edges);
  ``x' = (alpha_t · t^2.2 + B)^(1/2.2)``;

clamped to [0, 1] and rounded to uint8. ``kind`` chooses the model (default ``ghost``;
the paper's third model, a sharp reflection at the same depth of field, is in neither
the authors' code nor BackdoorBench's). The reflection layer does not depend on the
image, so it is built once (float64 on the CPU).

Reflection images: the paper selects real photographs (its ``R_adv``), which
BackdoorBench downloads. Here ``R`` is synthesised from ``reflection_seed`` with no
download: a smooth random field (random phases, amplitude ∝ 1/f^1.5: the power law
of natural images, 1/f, a little steeper so that it looks like a reflection rather than
texture), coloured between two random colours, with 2–4 soft-edged rectangles of random
colour and opacity on top (object edges). The offset (3–8 pixels at 32×32), the
attenuation ``a`` (``|round(u) − U(0.15, 0.5)|``) and ``sigma`` (U(1, 5) at 32×32) are
drawn from the same seed in the code's ranges, offset and ``sigma`` scaled with the
image side (offset at least 1 pixel and at most half the side, ``sigma`` at least 0.5).

BackdoorBench defaults (``config/attack/refool/default.yaml``, ``attack/refool.py``):
ghost_rate 0.49, alpha_t 0.4 (fixed: its notes say a random alpha_t made the ASR
unstable), offset/sigma/ghost_alpha random per image, pratio 0.1, and
``clean_label: False``: BackdoorBench turned Refool into a dirty-label attack because
clean-label poisoning of half the target class did not reach a high ASR on CIFAR-10.
Deviations:

- Clean-label, as the paper (``clean_label``; only all2one): poisoned samples come from
  the target class and keep their labels.
- One fixed reflection (image, model and parameters) per ``reflection_seed``, at training
  and test time. BackdoorBench draws a reflection image, a model (ghost with probability
  ``ghost_rate``) and the model's parameters at random for every poisoned image, test
  images included, so its test-time trigger is random; here the trigger is a
  deterministic function of the image, and the grid picks the model with ``kind``.
- BackdoorBench's out-of-focus code also lowers the blurred reflection by
  ``att · (mean overexposure − 1)`` per image and channel (from the reflection-removal
  data synthesis it was copied from). That makes a brighter image come out darker at
  some pixels; it is dropped, the final clamp keeps the range.
- Rounded to nearest; BackdoorBench truncates (``np.uint8``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from attacks._generators import apply_float
from attacks.base import CleanLabelAttack
from bench.core.data import DatasetSpec
from bench.core.params import BackdoorBench, BenchOwn, Params, Range
from bench.core.registry import ATTACKS
from bench.core.seeding import make_generator

GAMMA = 2.2
SPECTRAL_SLOPE = 1.5  # amplitude ∝ 1/f^1.5: between natural images (1/f) and a smoother, out-of-focus look


@dataclass(frozen=True)
class RefoolParams(Params):
    kind: Annotated[Literal["ghost", "focus"], BenchOwn("one model a run; BackdoorBench: ghost at rate 0.49")] = "ghost"
    """reflection model: ghost effect or out-of-focus blur"""
    alpha_t: Annotated[float, Range("(0, 1)"), BackdoorBench("config/attack/refool/default.yaml: alpha_t")] = 0.4
    """weight of the image in linear light; the reflection gets the rest"""
    reflection_seed: Annotated[int, Range("any"), BenchOwn("a synthetic reflection, not BackdoorBench's photographs")] = 0
    """seed of the reflection image and of the model's parameters"""

def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def reflection_image(channels: int, size: int, gen: torch.Generator) -> Tensor:
    """A smooth, structured synthetic image float64 ``[channels, size, size]`` in [0, 1], drawn from ``gen``."""
    fy = torch.fft.fftfreq(size, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.rfftfreq(size, dtype=torch.float64).view(1, -1)
    amplitude = torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / size).pow(-SPECTRAL_SLOPE)
    amplitude[0, 0] = 0.0
    noise = torch.randn(2, size, size // 2 + 1, generator=gen, dtype=torch.float64)
    field = torch.fft.irfft2(torch.complex(noise[0], noise[1]) * amplitude, s=(size, size))
    field = (field - field.mean()) / field.std().clamp_min(1e-12)
    low, high = torch.rand(2, channels, 1, 1, generator=gen, dtype=torch.float64)
    image = low + (high - low) * torch.sigmoid(field)
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    rows, cols = coords.view(-1, 1), coords.view(1, -1)
    for _ in range(int(torch.randint(2, 5, (), generator=gen))):
        centre = torch.rand(2, generator=gen, dtype=torch.float64)
        half = 0.1 + 0.3 * torch.rand(2, generator=gen, dtype=torch.float64)
        colour = torch.rand(channels, 1, 1, generator=gen, dtype=torch.float64)
        opacity = _uniform(gen, 0.5, 1.0)
        inside = torch.minimum(half[0] - (rows - centre[0]).abs(), half[1] - (cols - centre[1]).abs())
        mask = opacity * torch.sigmoid(inside * size)  # edges about one pixel wide
        image = image * (1 - mask) + colour * mask
    return image.clamp(0.0, 1.0)


def ghost_layer(r: Tensor, offset: tuple[int, int], attenuation: float) -> Tensor:
    """Ghost effect of a linear-light reflection ``r`` ``[C, H, W]``: two copies ``offset`` apart, resized back to ``H×W``."""
    (dy, dx), (h, w) = offset, r.shape[-2:]
    ghost = attenuation * r[:, dy:, dx:] + (1 - attenuation) * r[:, : h - dy, : w - dx]
    return F.interpolate(ghost[None], size=(h, w), mode="bilinear", align_corners=False)[0]


def gaussian_blur(r: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[C, H, W]``, kernel side ``2⌈2σ⌉ + 1`` (as the reference), mirrored borders."""
    half = min(math.ceil(2 * sigma), r.shape[-1] - 1, r.shape[-2] - 1)
    taps = torch.arange(-half, half + 1, dtype=r.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = r.shape[0]
    out = F.pad(r[None], (half, half, half, half), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def vignette(size: int, nsig: float = 3.0) -> Tensor:
    """The reference's ``gen_kernel(size, 3)``: √(outer product) of a binned normal density over ±3σ, peak 1. ``[size, size]``."""
    interval = (2 * nsig + 1.0) / size
    edges = torch.linspace(-nsig - interval / 2, nsig + interval / 2, size + 1, dtype=torch.float64)
    density = torch.diff(torch.special.ndtr(edges))
    kernel = torch.sqrt(torch.outer(density, density))
    return kernel / kernel.max()


def reflection_layer(kind: str, channels: int, size: int, alpha_t: float, seed: int) -> Tensor:
    """What the reflection adds in linear light, float64 ``[channels, size, size]``, for the model ``kind``."""
    gen = make_generator("refool-reflection", seed)
    r = reflection_image(channels, size, gen).pow(GAMMA)
    scale = size / 32
    offset = tuple(min(size // 2, max(1, round(int(torch.randint(3, 9, (), generator=gen)) * scale))) for _ in range(2))
    attenuation = abs(round(_uniform(gen, 0.0, 1.0)) - _uniform(gen, 0.15, 0.5))
    sigma = max(0.5, _uniform(gen, 1.0, 5.0) * scale)
    if kind == "ghost":
        return ghost_layer(r, offset, attenuation) * (1 - alpha_t)
    return gaussian_blur(r, sigma) * vignette(size) * (1 - alpha_t / 2)


@ATTACKS.register("refool")
class Refool(CleanLabelAttack):
    Params = RefoolParams

    def __init__(self, params: RefoolParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        layer = reflection_layer(params.kind, spec.channels, spec.size, params.alpha_t, params.reflection_seed)
        self.layer = layer.float()[None]  # [1, C, H, W], linear light

    def blend(self, x: Tensor) -> Tensor:
        """The trigger on float images in [0, 1]: ``(alpha_t · x^2.2 + layer)^(1/2.2)`` clamped to [0, 1]."""
        linear = self.params.alpha_t * x.pow(GAMMA) + self.layer.to(x.device)
        return linear.clamp(0.0, 1.0).pow(1 / GAMMA)

    def apply(self, x: Tensor) -> Tensor:
        return apply_float(self.blend, x)
