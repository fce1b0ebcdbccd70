"""Randomness as an argument: generators derived from named parts, never global seeds."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (their ``str`` forms, in order)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def make_generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``parts``, e.g. ``(seed, key, "attack")``."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(*parts))
    return gen
