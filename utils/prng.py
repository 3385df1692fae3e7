"""The seven generators of the original: LCG, TLCG and the PCG family RS, RR, XSHRR, XSHRS, XSLRR.

Every generator runs the LCG state update s_{t+1} = (a*s_t + c) mod m and maps each state through an
output function. Element t of a generated sequence is the output of s_{t+1}: s0 itself is never
emitted. All arithmetic is exact int64 (m < 2^63), written with operators that numpy arrays and torch
tensors share, so the same code serves the tests' numpy path and the batch path on any torch device.
"""
from __future__ import annotations

import numpy as np
import torch

KINDS = ("LCG", "TLCG", "RS", "RR", "XSHRR", "XSHRS", "XSLRR")
MAX_MODULUS = 2**63 - 1  # states and products live in int64


def bit_length(m: int) -> int:
    """n = ceil(log2 m), computed exactly (the original used a float log2)."""
    return (int(m) - 1).bit_length()


def canonical_kind(kind: str) -> str:
    name = str(kind).strip().upper()
    if name not in KINDS:
        raise ValueError(f"unknown generator type {kind!r}; valid types: {', '.join(KINDS)}")
    return name


def effective_bits(kind: str, m: int, bits_to_keep: int | None) -> int:
    """Number of output bits k the generator uses (n for LCG, n//2 for XSLRR, else bits_to_keep or n)."""
    kind, n = canonical_kind(kind), bit_length(m)
    if kind == "LCG":
        return n
    if kind == "XSLRR":
        return n // 2
    return n if bits_to_keep is None else int(bits_to_keep)


def max_output(kind: str, m: int, bits_to_keep: int | None = None) -> int:
    """Largest value the generator can emit."""
    if canonical_kind(kind) == "LCG":
        return int(m) - 1
    return 2 ** effective_bits(kind, m, bits_to_keep) - 1


def validate(kind: str, m: int, control_bits: int = 0, bits_to_keep: int | None = None) -> None:
    """Raise ValueError naming the rule and the values if (kind, m, cb, k) would misbehave.

    The rules keep every shift count non-negative, every read bit inside the n-bit state, and every
    output bit non-constant.
    """
    kind = canonical_kind(kind)
    m, cb = int(m), int(control_bits)
    if not 2 <= m <= MAX_MODULUS:
        raise ValueError(f"{kind}: modulus m={m} must satisfy 2 <= m < 2^63")
    if cb < 0:
        raise ValueError(f"{kind}: control_bits={cb} must be >= 0")
    n = bit_length(m)
    if kind in ("LCG", "TLCG"):
        if cb != 0:
            raise ValueError(f"{kind}: control_bits={cb} must be 0 (this generator has no control bits)")
    if kind == "LCG":
        return
    if kind == "XSLRR":
        if n < 2:
            raise ValueError(f"XSLRR: needs n >= 2 output half-width bits, got m={m} (n={n})")
        if cb > n // 2:
            raise ValueError(f"XSLRR: needs cb <= n//2, got cb={cb}, n={n} (m={m})")
        return
    k = n if bits_to_keep is None else int(bits_to_keep)
    if not 1 <= k <= n:
        raise ValueError(f"{kind}: needs 1 <= bits_to_keep <= n, got k={k}, n={n} (m={m})")
    rules = {
        "TLCG": [],
        "RS": [(n >= k + cb + 2**cb - 1, "n >= k + cb + 2^cb - 1")],
        "RR": [(k >= 2**cb, "k >= 2^cb"), (n >= cb + k, "n >= cb + k")],
        "XSHRR": [(k > cb, "k > cb"), (n > cb + k, "n > cb + k"), (n >= 2 * k - cb, "n >= 2k - cb"),
                  # xorshift by (k+cb)//2 = 0 would XOR the state with itself: constant 0 output
                  (k + cb >= 2, "k + cb >= 2")],
        "XSHRS": [(k - cb - 2**cb + 1 >= 1, "k - cb - 2^cb + 1 >= 1"), (n >= 2 * k - cb, "n >= 2k - cb")],
    }[kind]
    for ok, rule in rules:
        if not ok:
            raise ValueError(f"{kind}: needs {rule}, got n={n}, k={k}, cb={cb} (m={m})")


# --------------------------------------------------------------------------------------------------
# Exact modular arithmetic on int64 arrays/tensors with 0 <= x, y < m < 2^63.

def addmod(x, y, m: int):
    """(x + y) mod m without overflowing int64 (x + y may exceed 2^63 when m > 2^62)."""
    gap = m - y  # in (0, m]
    return x - gap + (x < gap) * m


def mulmod(x, y, m: int):
    """(x * y) mod m, exact for any m < 2^63."""
    n = bit_length(m)
    if m & (m - 1) == 0:
        return (x * y) & (m - 1)  # int64 multiply wraps mod 2^64; the low n bits stay exact
    if 2 * n <= 63:
        return (x * y) % m
    acc = x * 0
    r = 63 - n
    if r == 0:  # m > 2^62: double-and-add one bit at a time, every sum through addmod
        for shift in range(n - 1, -1, -1):
            acc = addmod(addmod(acc, acc, m), x * ((y >> shift) & 1), m)
        return acc
    # Horner over r-bit chunks of y: (acc << r) and x*chunk both stay below 2^63.
    for shift in range(((n + r - 1) // r - 1) * r, -1, -r):
        chunk = (y >> shift) & ((1 << r) - 1)
        acc = addmod((acc << r) % m, (x * chunk) % m, m)
    return acc


def jump_tables(a, m: int, length: int):
    """A[t] = a^(t+1) mod m and S[t] = (1 + a + ... + a^t) mod m for t < length, shape a.shape + (length,).

    With them s_{t+1} = A[t]*s0 + c*S[t] (mod m), so a whole batch of states is one gather and one
    multiply-add instead of a sequential loop.
    """
    one = a * 0 + 1  # m >= 2, so 1 is already reduced
    powers, sums = [a % m], [one]
    for _ in range(length - 1):
        powers.append(mulmod(powers[-1], a, m))
        sums.append(addmod(mulmod(sums[-1], a, m), one, m))
    stack = np.stack if isinstance(a, np.ndarray) else torch.stack
    return stack(powers, -1), stack(sums, -1)


def states_from_tables(A, S, s0, c, m: int):
    """States s_1..s_T for rows (A, S) of jump_tables, start states s0 and increments c, shape (B, T)."""
    n = bit_length(m)
    if m & (m - 1) == 0:
        return (A * s0[..., None] + S * c[..., None]) & (m - 1)  # wrapping int64 keeps the low n bits
    if 2 * n + 1 <= 63:
        return (A * s0[..., None] + S * c[..., None]) % m  # the sum of two products fits in int64
    return addmod(mulmod(A, s0[..., None], m), mulmod(S, c[..., None], m), m)


# --------------------------------------------------------------------------------------------------
# Output functions, the original's formulas. `s` holds states in [0, m), int64.

def _rotr(v, r, w: int, r_max: int):
    if r_max >= w:
        r = r % w
    return ((v >> r) | (v << (w - r))) & ((1 << w) - 1)


def output(kind: str, s, m: int, control_bits: int = 0, bits_to_keep: int | None = None):
    """Map states to generator outputs. Assumes validate(kind, m, control_bits, bits_to_keep) passed."""
    kind = canonical_kind(kind)
    n, cb = bit_length(m), int(control_bits)
    k = effective_bits(kind, m, bits_to_keep)
    mask = (1 << k) - 1
    if kind == "LCG":
        return s
    if kind == "TLCG":
        return (s >> (n - k)) & mask
    r = s >> (n - cb)  # the top cb bits choose the shift or rotation
    if kind == "RS":
        return (s >> (n - k - cb - r)) & mask
    if kind == "RR":
        return _rotr((s >> (n - cb - k)) & mask, r, k, 2**cb - 1)
    if kind == "XSHRR":
        return _rotr(((s ^ (s >> ((k + cb) // 2))) >> (k - cb)) & mask, r, k, 2**cb - 1)
    if kind == "XSHRS":
        cs = k - cb - 2**cb + 1
        return ((s ^ (s >> cs)) >> (cs + r)) & mask
    return _rotr((s ^ (s >> k)) & mask, r, k, 2**cb - 1)  # XSLRR, k = n//2


# --------------------------------------------------------------------------------------------------

def _as_int64(values, name: str, m: int, device):
    arr = np.asarray(values)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
        if arr.dtype != object:
            raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
        arr = np.array([int(v) for v in arr.ravel()], dtype=np.int64).reshape(arr.shape)
    if arr.size and (arr.min() < 0 or arr.max() >= m):
        raise ValueError(f"{name} must satisfy 0 <= {name} < m={m}, got range [{arr.min()}, {arr.max()}]")
    arr = arr.astype(np.int64)
    return arr if device is None else torch.as_tensor(arr, device=device)


def generate(kind, m, a, c, s0, length, *, control_bits=0, bits_to_keep=None, device=None):
    """Outputs of `length` steps of the generator started at s0 (first output is that of s1).

    a, c, s0 are ints or 1-D integer arrays of one length B. Returns int64 of shape (length,) for
    scalars, (B, length) for arrays: a numpy array, or a torch tensor on `device` when given.
    """
    m = int(m)
    validate(kind, m, control_bits, bits_to_keep)
    if int(length) < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    scalar = all(np.ndim(v) == 0 for v in (a, c, s0))
    a, c, s0 = (_as_int64(np.atleast_1d(v), name, m, device) for v, name in ((a, "a"), (c, "c"), (s0, "s0")))
    if not (a.shape == c.shape == s0.shape and a.ndim == 1):
        raise ValueError(f"a, c, s0 must be scalars or 1-D arrays of one length, got shapes "
                         f"{tuple(a.shape)}, {tuple(c.shape)}, {tuple(s0.shape)}")
    A, S = jump_tables(a, m, int(length))
    out = output(kind, states_from_tables(A, S, s0, c, m), m, control_bits, bits_to_keep)
    return out[0] if scalar else out
