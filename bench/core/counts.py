"""The one rounding rule for "a fraction of a set": decimal half up."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def fraction_count(fraction: float, n: int) -> int:
    """``fraction · n`` rounded half up, computed on the fraction's decimal form.

    ``0.145 · 100`` is ``14.499999999999998`` in binary floating point; as written in a
    grid it means 14.5, which rounds to 15.
    """
    return int((Decimal(repr(float(fraction))) * n).to_integral_value(ROUND_HALF_UP))
