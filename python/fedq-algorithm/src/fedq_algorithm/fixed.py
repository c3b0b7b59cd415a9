"""Reals as the integers modulo 2^64 that secure aggregation sums (``docs/algorithm-api.md``,
"Reals"): ``x`` is ``round(x · 2^f)`` in two's complement, with ``f`` fractional bits (0 for
counts), rounded half away from zero as the Rust SDK does."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction

MODULUS = 1 << 64


def _scaled(value: float | int, frac_bits: int) -> int:
    """``round(value · 2^f)`` exactly, half away from zero; integers are shifted, never rounded."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value << frac_bits
    x = float(value)
    if not math.isfinite(x):
        raise OverflowError(f"{x} cannot be summed")
    return int(math.copysign(math.floor(math.ldexp(abs(x), frac_bits) + 0.5), x))


def encode(values: Iterable[float | int], frac_bits: int, participants: int) -> list[int]:
    """``values`` encoded with ``frac_bits`` fractional bits; raises :class:`OverflowError` for
    a value that a sum over ``participants`` contributions like it could overflow (``|x| · 2^f ·
    n`` must stay below 2^63)."""
    encoded = []
    for value in values:
        scaled = _scaled(value, frac_bits)
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


#: Fractional bits of the wide encoding the analyses use.
WIDE_FRAC_BITS = 40
_LIMB = 1 << 48


def encode_wide(values: Iterable[float | int], participants: int, frac_bits: int = WIDE_FRAC_BITS) -> list[int]:
    """``values`` as two words each, for sums that a single word would overflow or round too
    coarsely: ``v = round(x · 2^f)`` split as ``v = hi · 2^48 + lo`` with ``0 ≤ lo < 2^48`` and
    ``hi`` signed. The low words of up to 65,535 participants sum without wrapping; the high
    words are summed as signed integers. Exact while ``|x| · 2^f < 2^111 / n``; each value is off
    by at most ``2^-(f+1)``."""
    if not 0 < participants < 1 << 16:
        raise OverflowError(f"the wide encoding sums over 1 to 65,535 participants, not {participants}")
    words = []
    for value in values:
        v = _scaled(value, frac_bits)
        lo, hi = v % _LIMB, v // _LIMB
        if abs(hi) * participants >= 1 << 63:
            raise OverflowError(f"{value} is too large for a sum over {participants} participants")
        words.extend((lo, hi % MODULUS))
    return words


def decode_wide(total: Sequence[int], frac_bits: int = WIDE_FRAC_BITS, exact: bool = False) -> list:
    """A sum of values encoded by :func:`encode_wide`, as reals (as exact fractions with
    ``exact``: the sum of the rounded values, with no further rounding)."""
    out = []
    for lo, hi in zip(total[0::2], total[1::2]):
        signed_hi = hi - MODULUS if hi >= 1 << 63 else hi
        whole = signed_hi * _LIMB + lo
        out.append(Fraction(whole, 1 << frac_bits) if exact else whole / (1 << frac_bits))
    return out
