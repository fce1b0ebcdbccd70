"""SSBA (Li et al., ICCV 2021): an invisible, sample-specific trigger from a steganography encoder.

A StegaStamp-style encoder (Tancik et al., CVPR 2020) hides a fixed bit string in each
image as an image-dependent residual; the poisoned image is the encoder's output:
``x' = clamp(x + eps · tanh(U(x, S(b))), 0, 1)`` with ``b`` the bits of ``secret``
(8 per ASCII character, most significant first), ``S`` the secret path (dense layer →
``H/2`` map → nearest upsampling) and ``U`` a small U-Net (``attacks._stego``).

``prepare`` trains the encoder, the secret path and a bit decoder together on the
training images, from ``ctx.generator`` (StegaStamp's recipe, reduced): every sample
gets fresh random bits (so the encoder must really embed them, not a constant); the loss
is the sigmoid cross-entropy of the decoded bits plus ``image_weight`` times the mean
squared residual. As in StegaStamp, the image loss and the distortion are off at first:
after the first ``image_start`` of the steps the stego image is rounded to 8 bits
(straight-through) before decoding, and the image weight ramps up linearly from 0 to
``image_weight`` at the last step. Adam, ``epochs`` passes over the training set in
batches of ``batch_size``. After training, the test-time state is the encoder and the
secret map of ``secret`` (``state_dict``); the decoder is dropped
(``decoder_bit_accuracy`` records how many bits of ``secret`` it read back from the
8-bit poisoned training images).

BackdoorBench uses precomputed poisoned images (``resource/ssba``: the authors' encoder,
trained on each dataset, with the string "Stega!!" BCH-encoded into 100 bits) and has no
attack parameters besides the target and pratio. Deviations, all because nothing may be
downloaded and the encoder is trained here, in about half a minute on a CPU for digits:

- no BCH code (the string's raw bits, 56 for "Stega!!");
- no LPIPS or critic losses (LPIPS needs a pretrained network) and none of StegaStamp's
  physical distortions (perspective warp, blur, colour, JPEG) besides 8-bit rounding;
  with the classifier's random crop in the loop as well, the decoder did not get off
  its chance plateau within this budget;
- a smaller U-Net, and the learning rate 3e-3 (StegaStamp: 1e-4 over 140k steps);
- the residual is bounded by ``eps`` (StegaStamp's is unbounded, kept small by the L2
  loss alone), which keeps it small and the output ordered (a black image never comes
  out brighter than a white one).

At the defaults on digits, the decoder reads about two thirds of the bits back, and
the poisoned images are about 33 dB PSNR from the clean ones (StegaStamp reports
27–30 dB on its images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from attacks._generators import apply_float, build, child_generator, load_networks_state, networks_state
from attacks._stego import BitDecoder, SecretMap, StegoEncoder, ramp, round_straight_through, train_networks
from attacks.base import Attack, AttackContext
from bench.core.data import DatasetSpec, LoadedDataset, to_float
from bench.core.params import AuthorsCode, BenchOwn, ParamError, Params, Range
from bench.core.registry import ATTACKS
from bench.core.seeding import make_generator

SECRET_CHANNELS = 3  # channels of the secret map (StegaStamp: 3)


_REDUCED = "reduced from StegaStamp's recipe to train here, about half a minute on a CPU for digits (module docstring)"


@dataclass(frozen=True)
class SSBAParams(Params):
    smoke = {"epochs": 2, "batch_size": 8}

    secret: Annotated[str, AuthorsCode("tancik/StegaStamp encode_image.py: --secret (no BCH code here)")] = "Stega!!"
    """the string hidden in every poisoned image (ASCII; 8 bits a character)"""
    eps: Annotated[float, Range("(0, 0.5]"), BenchOwn("StegaStamp's residual is unbounded; bounded here")] = 0.1
    """L∞ bound of the residual, in [0, 1] pixel units"""
    image_weight: Annotated[float, Range(">= 0"), BenchOwn(_REDUCED)] = 10.0
    """weight of the mean squared residual at the end of training"""
    image_start: Annotated[float, Range("[0, 1)"), BenchOwn(_REDUCED)] = 0.3
    """fraction of the training steps before the image loss and 8-bit rounding start"""
    epochs: Annotated[int, Range(">= 0"), BenchOwn(_REDUCED)] = 15
    """passes of the encoder's training over the training set"""
    batch_size: Annotated[int, Range(">= 1"), BenchOwn(_REDUCED)] = 64
    """images per step of the encoder's training"""
    lr: Annotated[float, Range("> 0"), BenchOwn(f"StegaStamp: 1e-4 over 140k steps; {_REDUCED}")] = 3e-3
    """Adam learning rate of the encoder, secret map and decoder"""

    def check(self) -> None:
        if not self.secret or not self.secret.isascii():
            raise ParamError("secret", f"secret must be a non-empty ASCII string, got {self.secret!r}")


def secret_bits(secret: str) -> Tensor:
    """The bits of an ASCII string, float32 ``[8 · len]`` in {0, 1}, most significant bit of each character first."""
    return torch.tensor([(ord(c) >> (7 - i)) & 1 for c in secret for i in range(8)], dtype=torch.float32)


@ATTACKS.register("ssba")
class SSBA(Attack):
    Params = SSBAParams

    def __init__(self, params: SSBAParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        self.bits = secret_bits(params.secret)  # [n_bits]
        gen = make_generator("ssba-init")  # an untrained, deterministic encoder until ``prepare`` or ``load_state_dict``
        self.encoder, secret_map = self._networks(gen)[:2]
        with torch.no_grad():
            self.code = secret_map(self.bits[None])  # [1, S, H, W]: the secret map of ``secret``
        self.encoder.eval().requires_grad_(False)
        self.decoder_bit_accuracy: float | None = None  # after ``prepare``: on the training images, rounded to 8 bits

    def _networks(self, gen: torch.Generator) -> tuple[StegoEncoder, SecretMap, BitDecoder]:
        c, size, n = self.spec.channels, self.spec.size, len(self.bits)
        encoder = build(lambda: StegoEncoder(c, SECRET_CHANNELS, size, self.params.eps), gen)
        secret_map = build(lambda: SecretMap(n, SECRET_CHANNELS, size), gen)
        decoder = build(lambda: BitDecoder(c, size, n), gen)
        return encoder, secret_map, decoder

    def embed(self, x: Tensor) -> Tensor:
        """The float trigger: ``[N, C, H, W]`` in [0, 1] → the encoder's output with ``secret`` hidden."""
        return self.encoder(x, self.code.to(x.device).expand(len(x), -1, -1, -1))

    def apply(self, x: Tensor) -> Tensor:
        return apply_float(self.embed, x, self.code.device)

    def prepare(self, data: LoadedDataset, ctx: AttackContext) -> None:
        """Train encoder and decoder on ``data.train`` from ``ctx.generator`` (see the module docstring)."""
        gen = child_generator(ctx.generator)
        encoder, secret_map, decoder = (m.to(ctx.device) for m in self._networks(gen))
        p = self.params

        def step_loss(x: Tensor, step: int, total: int) -> Tensor:
            bits = torch.randint(0, 2, (len(x), len(self.bits)), generator=gen).float().to(x.device)
            stego = encoder(x, secret_map(bits))
            weight = ramp(step, total, p.image_start)
            logits = decoder(round_straight_through(stego) if step >= p.image_start * total else stego)
            image = F.mse_loss(stego, x)
            return F.binary_cross_entropy_with_logits(logits, bits) + p.image_weight * weight * image

        train_networks([encoder, secret_map, decoder], data.train.x.to(ctx.device), step_loss, p.epochs, p.batch_size, p.lr, gen)
        self.encoder = encoder
        with torch.no_grad():
            self.code = secret_map(self.bits[None].to(ctx.device))
            x = to_float(data.train.x[:512].to(ctx.device))
            decoded = decoder(self.embed(x).mul(255).round().div(255)) > 0
            self.decoder_bit_accuracy = (decoded == self.bits.to(ctx.device).bool()).float().mean().item()

    def state_dict(self) -> dict[str, Tensor]:
        return networks_state({"encoder": self.encoder}) | {"code": self.code.detach().clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "code" not in state:
            raise ValueError(f"ssba: expected encoder.* and code, got {sorted(state)}")
        load_networks_state("ssba", {"encoder": self.encoder}, state, extra=("code",))
        self.code = state["code"].clone()
