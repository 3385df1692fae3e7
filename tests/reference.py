"""A plain-Python reference for the generators and tokens, written from the formulas (the generators'
docstrings in utils/prng.py; tokens: base-b digits, least significant first).

Python ints only and one sequence at a time: slow, but obviously the formulas. The tests compare the
vectorized code against it, and bench.bench_data uses it as the "per-sequence loop" baseline.
"""
from __future__ import annotations


def _rotr(v: int, r: int, w: int) -> int:
    """rotr_w(v, r): rotate the w-bit value v right by r mod w."""
    r %= w
    mask = (1 << w) - 1
    return ((v >> r) & mask) | ((v << (w - r)) & mask)


def reference_output(kind: str, s: int, m: int, control_bits: int = 0, bits_to_keep: int | None = None) -> int:
    """The original's output function applied to one state s in [0, m)."""
    kind = kind.upper()
    n, cb = (m - 1).bit_length(), control_bits  # n = ceil(log2 m), exactly
    k = n if bits_to_keep is None else bits_to_keep
    r = s >> (n - cb)  # the top cb bits
    if kind == "LCG":
        return s
    if kind == "TLCG":
        return (s >> (n - k)) & ((1 << k) - 1)
    if kind == "RS":
        return (s >> (n - k - cb - r)) & ((1 << k) - 1)
    if kind == "RR":
        return _rotr((s >> (n - cb - k)) & ((1 << k) - 1), r, k)
    if kind == "XSHRR":
        xs, sh = (k + cb) // 2, k - cb
        return _rotr(((s ^ (s >> xs)) >> sh) & ((1 << k) - 1), r, k)
    if kind == "XSHRS":
        cs = k - cb - 2**cb + 1
        return ((s ^ (s >> cs)) >> (cs + r)) & ((1 << k) - 1)
    if kind == "XSLRR":
        h = n // 2  # bits_to_keep is ignored
        return _rotr((s ^ (s >> h)) & ((1 << h) - 1), r, h)
    raise ValueError(f"unknown kind {kind!r}")


def reference_sequence(kind: str, m: int, a: int, c: int, s0: int, length: int,
                       control_bits: int = 0, bits_to_keep: int | None = None) -> list[int]:
    """Outputs of s_1 .. s_length, with s_{t+1} = (a*s_t + c) mod m."""
    m, a, c, s = int(m), int(a), int(c), int(s0)
    out = []
    for _ in range(length):
        s = (a * s + c) % m
        out.append(reference_output(kind, s, m, control_bits, bits_to_keep))
    return out


def reference_tokens(values, base: int, digits: int) -> list[int]:
    """Each value as `digits` base-`base` digits, least-significant first, laid out consecutively."""
    return [(int(v) // base**i) % base for v in values for i in range(digits)]
