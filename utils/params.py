"""Choosing (a, c): Hull–Dobell multipliers, coprime increments, the train/test split, exclusions.

Multipliers a = k*L + 1 (L the product of m's distinct primes, times 2 more when 4 | m: a full period by
Hull–Dobell) and increments c >= 3 coprime to m, as the original chose them; the train/test split is
uniformly random given data_seed (the original's followed Python set order), and train and test share
no a and no c. Exclusion files of every layout the original or this project writes are loaded safely
(no code runs); a missing or unreadable one is an error.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from .results import load_foreign, load_npz

# Enumerate the coprime increments outright below this modulus; draw by rejection above it.
_ENUMERATE_LIMIT = 1 << 22


def _is_power_of_two(m: int) -> bool:
    return m > 1 and m & (m - 1) == 0


def prime_factors(m: int) -> list[int]:
    """m's distinct primes, smallest first. A power of two (every PCG modulus) needs no factoring; other
    moduli ask sympy, imported only then: it adds half a second to every script's start-up."""
    m = int(m)
    if _is_power_of_two(m):
        return [2]
    import sympy
    return [int(p) for p in sympy.primefactors(m)]


def totient(m: int) -> int:
    """Euler's phi(m), the count of 1 <= c <= m coprime to m: m times (p - 1)/p for each distinct prime p."""
    primes = prime_factors(m)
    return int(m) // math.prod(primes) * math.prod(p - 1 for p in primes)


def multiplier_step(m: int) -> int:
    """L = product of m's distinct primes, with 4 instead of 2 when 4 | m; a = kk*L + 1 (Hull–Dobell)."""
    primes = prime_factors(m)
    if m % 4 == 0:
        primes = [4 if p == 2 else p for p in primes]
    return math.prod(primes)


def multiplier_count(m: int) -> int:
    """Number of full-period multipliers a = kk*L + 1 with 1 <= kk < m // L (a != 1)."""
    return max(int(m) // multiplier_step(m) - 1, 0)


def increment_count(m: int) -> int:
    """Number of increments c in [3, m) coprime to m."""
    return totient(m) - sum(1 for c in (1, 2) if c < m and math.gcd(c, m) == 1)


def draw_multipliers(m: int, rng: np.random.Generator, num: int) -> np.ndarray:
    """`num` distinct Hull–Dobell multipliers in uniformly random order."""
    available = multiplier_count(m)
    if num > available:
        raise ValueError(f"m={m} has only {available} Hull-Dobell multipliers a = k*{multiplier_step(m)} + 1, "
                         f"but {num} were asked for")
    kk = rng.choice(available, size=num, replace=False) + 1
    return (kk.astype(np.int64) * multiplier_step(m) + 1).astype(np.int64)


def draw_increments(m: int, rng: np.random.Generator, num: int) -> np.ndarray:
    """`num` distinct increments c in [3, m) with gcd(c, m) = 1, in uniformly random order."""
    m = int(m)
    if _is_power_of_two(m):  # the odd numbers 3, 5, ..., m - 1
        available = max(m // 2 - 1, 0)
        if num > available:
            raise ValueError(f"m={m} has only {available} odd increments >= 3, but {num} were asked for")
        return (rng.choice(available, size=num, replace=False) * 2 + 3).astype(np.int64)
    if m <= _ENUMERATE_LIMIT:
        candidates = np.arange(3, m, dtype=np.int64)
        candidates = candidates[np.gcd(candidates, m) == 1]
        if num > len(candidates):
            raise ValueError(f"m={m} has only {len(candidates)} increments >= 3 coprime to m, "
                             f"but {num} were asked for")
        return rng.permutation(candidates)[:num]
    # Large m: rejection sampling of distinct coprime values, in draw order.
    chosen: dict[int, None] = {}
    for _ in range(64):
        for c in rng.integers(3, m, size=max(2 * (num - len(chosen)), 16)).tolist():
            if math.gcd(c, m) == 1:
                chosen.setdefault(c)
                if len(chosen) == num:
                    return np.array(list(chosen), dtype=np.int64)
    raise ValueError(f"could not find {num} increments coprime to m={m} (found {len(chosen)})")


@dataclass(frozen=True)
class ACSplit:
    """Train and test multipliers and increments of one modulus; train and test share no a and no c."""
    train_a: np.ndarray
    train_c: np.ndarray
    test_a: np.ndarray
    test_c: np.ndarray


def _take(pool: np.ndarray, excluded: set[int], needed: int, what: str, m: int) -> np.ndarray:
    kept = pool[~np.isin(pool, np.fromiter(excluded, dtype=np.int64, count=len(excluded)))] if excluded else pool
    if len(kept) < needed:
        raise ValueError(f"not enough {what} values for m={m}: need {needed}, "
                         f"{len(kept)} remain after excluding {len(pool) - len(kept)}")
    return kept[:needed]


def split_ac(m: int, n_a: int, n_c: int, n_test_a: int, n_test_c: int, rng: np.random.Generator,
             excluded_a: set[int] = frozenset(), excluded_c: set[int] = frozenset()) -> ACSplit:
    """Draw a (first) then c from `rng`, drop excluded values, split into disjoint train/test sets.

    Draw order and the pool sizes (asked + number excluded, capped at what exists) are fixed, so the
    same seed gives the same split whatever the exclusions remove.
    """
    for name, v in (("n_a", n_a), ("n_c", n_c), ("n_test_a", n_test_a), ("n_test_c", n_test_c)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    need_a, need_c = n_a + n_test_a, n_c + n_test_c
    count_a, count_c = multiplier_count(m), increment_count(m)
    if need_a > count_a:
        raise ValueError(f"m={m} has only {count_a} Hull-Dobell multipliers, but n_a + n_test_a = {need_a}")
    if need_c > count_c:
        raise ValueError(f"m={m} has only {count_c} increments >= 3 coprime to m, but n_c + n_test_c = {need_c}")
    pool_a = draw_multipliers(m, rng, min(need_a + len(excluded_a), count_a))
    pool_c = draw_increments(m, rng, min(need_c + len(excluded_c), count_c))
    a = _take(pool_a, set(excluded_a), need_a, "multiplier (a)", m)
    c = _take(pool_c, set(excluded_c), need_c, "increment (c)", m)
    return ACSplit(train_a=a[:n_a], train_c=c[:n_c], test_a=a[n_a:], test_c=c[n_c:])


# --------------------------------------------------------------------------------------------------
# Exclusions: a and c values used by earlier runs, left out of this one

@dataclass
class Exclusions:
    """a and c values to keep out of both train and test: for every modulus, and per modulus."""
    a: set[int] = field(default_factory=set)
    c: set[int] = field(default_factory=set)
    by_modulus: dict[int, tuple[set[int], set[int]]] = field(default_factory=dict)

    def for_modulus(self, m: int) -> tuple[set[int], set[int]]:
        a, c = self.by_modulus.get(int(m), (set(), set()))
        return self.a | a, self.c | c


def _ints(values, path: str, key: str) -> set[int]:
    try:
        raw = np.asarray(values).ravel().tolist()
        ints = {int(v) for v in raw}
        if any(int(v) != v for v in raw):
            raise ValueError("a value is not a whole number")
        if any(not -2**63 <= v < 2**63 for v in ints):  # a and c are below m < 2^63 and compared in int64
            raise ValueError(f"a value is outside int64: {max(ints, key=abs)}")
    except (TypeError, ValueError) as err:
        raise ValueError(f"exclusion file {path}: {key} is not a list of integers ({err})") from None
    return ints


def load_exclusions(paths) -> Exclusions:
    """Read exclusion files: .npz (train_a/test_a/train_c/test_c) or .pt (single-modulus
    {'training_ac_values': {train_a, train_c}}, curriculum {'training_ac_values': {m: {...}}}, or a
    plain list of a values). A missing, unreadable or unrecognised file raises ValueError.
    """
    ex = Exclusions()
    for path in paths or []:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"exclusion file not found: {path}")
        if path.endswith(".npz"):
            arrays = load_npz(path, "exclusion file")
            found = {k: _ints(v, path, k) for k, v in arrays.items()
                     if k in ("train_a", "test_a", "train_c", "test_c")}
            if not found:
                raise ValueError(f"exclusion file {path} has none of the keys train_a, test_a, train_c, test_c")
            ex.a |= found.get("train_a", set()) | found.get("test_a", set())
            ex.c |= found.get("train_c", set()) | found.get("test_c", set())
        elif path.endswith(".pt"):
            obj = load_foreign(path, "exclusion file")
            _add_pt(ex, obj, path)
        else:
            raise ValueError(f"exclusion file {path}: unsupported extension (use .npz or .pt)")
    return ex


def _add_pt(ex: Exclusions, obj, path: str) -> None:
    if not isinstance(obj, dict):
        ex.a |= _ints(obj, path, "a values")
        return
    values = obj.get("training_ac_values")
    if not isinstance(values, dict):
        raise ValueError(f"exclusion file {path}: expected a dict with key 'training_ac_values'")
    if "train_a" in values or "train_c" in values:
        ex.a |= _ints(values.get("train_a", []), path, "train_a")
        ex.c |= _ints(values.get("train_c", []), path, "train_c")
        return
    for m, per in values.items():  # curriculum layout, keyed by modulus
        if not isinstance(per, dict) or not {"train_a", "train_c"} & set(per):
            raise ValueError(f"exclusion file {path}: entry {m!r} is not a dict with train_a/train_c")
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
            raise ValueError(f"exclusion file {path}: key {m!r} of training_ac_values is not a modulus")
        a, c = ex.by_modulus.setdefault(int(m), (set(), set()))
        a |= _ints(per.get("train_a", []), path, f"{m}.train_a")
        c |= _ints(per.get("train_c", []), path, f"{m}.train_c")
