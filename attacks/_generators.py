"""Shared pieces of the attacks that learn a trigger or control training.

- **Float ↔ uint8 plumbing.** Each of these attacks writes its trigger once, on float
  images in [0, 1] (the domain of the training loop's augmented batches), and derives
  the uint8 ``apply`` from it with ``apply_float`` (``bench.core.data``'s ``to_float`` →
  trigger → ``to_uint8``).
- **Batch roles.** ``split_roles`` assigns each row of a batch a role (clean, backdoor,
  cross/noise/negative) with per-batch counts ``fraction · B`` rounded stochastically
  (floor, plus one with probability equal to the remainder), so the expected count per
  batch is exactly ``fraction · B`` even when it is below one (BackdoorBench's
  ``generalize_to_lower_pratio`` does this only below one and truncates above).
- **Small conv generators** sized for the dataset: Input-aware's encoder-decoder and
  LIRA's autoencoder. They are built without touching the global RNG (on the ``meta``
  device, then initialised from an explicit ``torch.Generator`` with PyTorch's default
  initialisation rules).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bench.core.data import to_float, to_uint8
from bench.core.train import TrainingHooks

CLEAN, BACKDOOR, CROSS = 0, 1, 2  # row roles in a training batch; CROSS is WaNet's noise mode,
# Input-aware's cross trigger and BPP's negative samples: triggered-like rows that keep their label

FloatTrigger = Callable[[Tensor], Tensor]

# ---------------------------------------------------------------- float ↔ uint8


@torch.no_grad()
def apply_float(trigger: FloatTrigger, x: Tensor, device: torch.device | None = None, chunk: int = 1024) -> Tensor:
    """The uint8 version of a float trigger: uint8 ``x`` → uint8, on ``x``'s device.

    The trigger runs on ``device`` (default: ``x``'s), ``chunk`` images at a time; the input is not modified.
    """
    device = x.device if device is None else device
    parts = [to_uint8(trigger(to_float(x[i : i + chunk].to(device)))).to(x.device) for i in range(0, len(x), chunk)]
    return torch.cat(parts) if parts else x.clone()


# ---------------------------------------------------------------- batch roles


def stochastic_count(expected: float, gen: torch.Generator) -> int:
    """``floor(expected)``, plus one with probability ``expected − floor(expected)`` (draws one number from ``gen``)."""
    whole = math.floor(expected)
    return whole + int(torch.rand((), generator=gen).item() < expected - whole)


def split_roles(batch_size: int, fractions: tuple[float, ...], gen: torch.Generator) -> Tensor:
    """Roles int64 ``[batch_size]`` (CPU): ``fractions[i]`` of the rows get role ``i + 1``, the rest ``CLEAN``.

    Counts are ``stochastic_count(f · batch_size)``, each capped by the rows left; which
    rows get which role is a random permutation from ``gen``.
    """
    counts, left = [], batch_size
    for f in fractions:
        c = min(left, stochastic_count(f * batch_size, gen))
        counts.append(c)
        left -= c
    order = torch.randperm(batch_size, generator=gen)
    roles = torch.zeros(batch_size, dtype=torch.int64)
    start = 0
    for role, c in enumerate(counts, start=1):
        roles[order[start : start + c]] = role
        start += c
    return roles


def partners(rows: Tensor, batch_size: int, gen: torch.Generator) -> Tensor:
    """For each of ``rows`` (CPU int64), another row of the batch (uniform over the others); ``rows`` itself when B = 1."""
    if batch_size < 2:
        return rows.clone()
    shift = torch.randint(1, batch_size, (len(rows),), generator=gen)
    return (rows + shift) % batch_size


class PoisonedBatch(NamedTuple):
    """A training batch after the attack: images, labels the classifier learns, and each row's role."""

    x: Tensor
    y: Tensor
    role: Tensor  # int64 [B] on x's device: CLEAN, BACKDOOR or CROSS


def detached(batch: PoisonedBatch) -> PoisonedBatch:
    return PoisonedBatch(batch.x.detach(), batch.y, batch.role)


class PoisoningHooks(TrainingHooks):
    """Training hooks that rewrite each batch with ``poison`` before the classifier's update.

    ``last`` is the last batch handed on (detached), with its rows' roles: for inspection and tests.
    """

    def __init__(self, poison: Callable[[Tensor, Tensor], PoisonedBatch]) -> None:
        self.poison = poison
        self.last: PoisonedBatch | None = None

    def poison_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        batch = self.poison(x, y)
        self.last = detached(batch)
        return batch.x, batch.y


def networks_state(networks: dict[str, nn.Module]) -> dict[str, Tensor]:
    """``{"<name>.<key>": tensor}``: detached copies of the state of each named network (an attack's trigger state)."""
    return {f"{name}.{k}": v.detach().clone() for name, net in networks.items() for k, v in net.state_dict().items()}


def load_networks_state(
    owner: str, networks: dict[str, nn.Module], state: dict[str, Tensor], extra: tuple[str, ...] = ()
) -> None:
    """Load what ``networks_state`` gave into the named networks, left frozen in eval mode.

    A key of no network (and not in ``extra``, the owner's other state) raises, naming ``owner``.
    """
    unknown = sorted(k for k in state if k not in extra and k.split(".", 1)[0] not in networks)
    if unknown:
        raise ValueError(f"{owner}: unexpected state keys {unknown}")
    for name, net in networks.items():
        prefix = f"{name}."
        net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        net.eval().requires_grad_(False)


def child_generator(gen: torch.Generator) -> torch.Generator:
    """A new CPU generator seeded from one draw of ``gen`` (so a sub-task's randomness is its own)."""
    child = torch.Generator()
    child.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen).item()))
    return child


# ---------------------------------------------------------------- building generator nets


def initialise_(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """Re-initialise ``module`` in place with PyTorch's default rules, drawing only from ``gen``.

    Convolutions (plain and transposed) and linear layers: weight kaiming-uniform with
    a = √5, bias uniform ±1/√fan_in; BatchNorm: weight 1, bias 0, running stats reset.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
                if m.bias is not None:
                    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(m.bias, -bound, bound, generator=gen)
            elif isinstance(m, _BatchNorm):
                m.reset_parameters()
    return module


def build(factory: Callable[[], nn.Module], gen: torch.Generator) -> nn.Module:
    """``factory()`` built on the meta device (no global RNG draw), materialised on the CPU, initialised from ``gen``."""
    with torch.device("meta"):
        module = factory()
    return initialise_(module.to_empty(device="cpu"), gen)


def halvings(size: int, most: int) -> int:
    """How many times ``size`` can be halved exactly (at most ``most``)."""
    n = 0
    while n < most and size % 2 == 0 and size >= 4:
        size //= 2
        n += 1
    return n


def _conv_block(c_in: int, c_out: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out, momentum=0.05)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class EncoderDecoder(nn.Sequential):
    """Input-aware's generator (Nguyen & Tran 2020; BackdoorBench ``InputAwareGenerator``): float [0, 1] → [0, 1].

    ``steps`` down blocks (two 3×3 conv-BN-ReLU, 2×2 max-pool), a middle block, and
    ``steps`` up blocks (bilinear ×2, two conv blocks), channels doubling from
    ``width``; output ``tanh(·) / (2 + 1e-7) + 0.5``. BackdoorBench uses 3 steps from
    32 channels for 32×32 RGB and 2 steps from 16 for MNIST; ``for_dataset`` picks
    the same by image side (≥ 32 → 3 steps, else 2), fewer when the side does not halve
    (and resizes the output back to the input side when it does not halve at all).
    """

    def __init__(self, c_in: int, c_out: int, steps: int, width: int) -> None:
        layers: list[nn.Module] = []
        cur, nxt = c_in, width
        for step in range(steps):
            layers += _conv_block(cur, nxt) + _conv_block(nxt, nxt) + [nn.MaxPool2d(2)]
            if step < steps - 1:
                cur, nxt = nxt, nxt * 2
        layers += _conv_block(nxt, nxt)
        cur = nxt
        for step in range(steps):
            out = c_out if step == steps - 1 else cur // 2
            layers += [nn.Upsample(scale_factor=2, mode="bilinear")]
            layers += _conv_block(cur, cur) + _conv_block(cur, out, relu=step < steps - 1)
            cur = out
        super().__init__(*layers)

    @staticmethod
    def for_dataset(channels: int, size: int, c_out: int) -> Callable[[], "EncoderDecoder"]:
        steps = max(1, halvings(size, 3 if size >= 32 else 2))
        width = 32 if steps >= 3 else 16
        return lambda: EncoderDecoder(channels, c_out, steps, width)

    def forward(self, x: Tensor) -> Tensor:
        out = interpolate_to(super().forward(x), x.shape[-1])  # a no-op unless the side is odd somewhere
        return torch.tanh(out) / (2 + 1e-7) + 0.5


class Autoencoder(nn.Module):
    """LIRA's trigger generator (Doan et al. 2021; BackdoorBench ``Autoencoder``): float → [−1, 1].

    ``depth`` stride-2 4×4 conv-BN-ReLU layers (16, 32, 64, 128 channels), mirrored by
    transposed convolutions, tanh output. BackdoorBench uses depth 4 at 32×32;
    ``for_dataset`` uses 4, or fewer when the side does not halve that often.
    """

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        widths = [channels] + [16 * 2**i for i in range(depth)]
        enc: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
        dec: list[nn.Module] = []
        rev = widths[::-1]
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            dec += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)]
            dec += [nn.BatchNorm2d(b), nn.ReLU()] if i < depth - 1 else [nn.Tanh()]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    @staticmethod
    def for_dataset(channels: int, size: int) -> Callable[[], "Autoencoder"]:
        depth = max(1, halvings(size, 4))
        return lambda: Autoencoder(channels, depth)

    def forward(self, x: Tensor) -> Tensor:
        return interpolate_to(self.decoder(self.encoder(x)), x.shape[-1])  # a no-op unless the side is odd somewhere


def mean_distance(a: Tensor, b: Tensor) -> Tensor:
    """Per-row root-mean-square distance ``[N]`` (with a tiny floor, so its gradient stays finite at 0)."""
    return (a - b).pow(2).flatten(1).mean(1).add(1e-12).sqrt()


def diversity_loss(x1: Tensor, x2: Tensor, out1: Tensor, out2: Tensor) -> Tensor:
    """Input-aware's diversity term: mean over rows of ``‖x1 − x2‖ / (‖out1 − out2‖ + 1e-7)``."""
    return (mean_distance(x1, x2) / (mean_distance(out1, out2) + 1e-7)).mean()


def interpolate_to(x: Tensor, size: int) -> Tensor:
    """``x`` resized to ``size``×``size`` (bilinear) unless it already has that side."""
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
