"""Reals as the integers modulo 2^64 that secure aggregation sums (``docs/algorithm-api.md``,
"Reals"): ``x`` is ``round(x · 2^f)`` in two's complement, with ``f`` fractional bits (0 for
counts), rounded half away from zero as the Rust SDK does."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

MODULUS = 1 << 64


def encode(values: Iterable[float | int], frac_bits: int, participants: int) -> list[int]:
    """``values`` encoded with ``frac_bits`` fractional bits; raises :class:`OverflowError` for
    a value that a sum over ``participants`` contributions like it could overflow (``|x| · 2^f ·
    n`` must stay below 2^63)."""
    encoded = []
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            scaled = value << frac_bits
        else:
            x = float(value)
            if not math.isfinite(x):
                raise OverflowError(f"{x} cannot be summed")
            scaled = int(math.copysign(math.floor(abs(x) * 2.0**frac_bits + 0.5), x))
        if abs(scaled) * max(1, participants) >= 1 << 63:
            raise OverflowError(
                f"{value} with {frac_bits} fractional bits over {participants} participants may "
                "overflow the sum (|x| · 2^f · n must stay below 2^63): use fewer fractional bits "
                "or scale the values down"
            )
        encoded.append(scaled % MODULUS)
    return encoded


def decode(total: Sequence[int], frac_bits: int) -> list[int] | list[float]:
    """A sum of values encoded with ``frac_bits`` fractional bits: integers for 0, reals
    otherwise."""
    signed = [t - MODULUS if t >= 1 << 63 else t for t in total]
    if frac_bits == 0:
        return signed
    return [s / (1 << frac_bits) for s in signed]
