"""Classical predictors on the same sequences as the model, position by position.

Both keep, for every sequence, the set of generator parameters consistent with the numbers seen so far
and predict the value most of them give next (ties go to the smallest value; a sequence with no
consistent candidate gets -1, which is never right). Positions follow positions.py: column p - 1 of
the result is the prediction of number p + 1 from the first p numbers.

(a) `lcg_known_m`: an LCG x' = a x + c (mod m) with known m and any a, c in [0, m). After three numbers
    the differences d1 = x2 - x1, d2 = x3 - x2 satisfy a d1 = d2 (mod m): with g = gcd(d1, m) the
    surviving a form one class mod m/g, and since g | d2 they all give the same a d2, so every
    candidate predicts the same x4 = x3 + a d2. The predictor is therefore exact from position 3 on,
    for any m (with d1 not invertible when m = 2^k, all g candidates are enumerated).
(b) `family`: every (a, c, s0) the data layer can draw (params.py: Hull–Dobell a = kk L + 1 with
    1 <= kk < m/L, c in [3, m) coprime to m, any s0), for any generator type: the best possible
    predictor of a model trained on that family. Enumerated as (a, s1, s2) with s1, s2 states whose
    outputs are the first two numbers and c = s2 - a s1 (s1 = a s0 + c is one-to-one in s0), pruned at
    every later number; the first prediction counts (a, c) pairs per state with one FFT convolution.
"""
from __future__ import annotations

import numpy as np

from .. import prng
from ..params import multiplier_count, multiplier_step

CANDIDATE_BUDGET = 1 << 22  # candidates held at once; sequences are processed in chunks below it
MAX_LCG_MODULUS = 1 << 24
MAX_FAMILY_MODULUS = 1 << 16
MAX_SEQUENCE_CANDIDATES = 1 << 26  # (s1, s2, a) triples of one sequence after two numbers


def _vote(seq: np.ndarray, values: np.ndarray, n_seq: int, n_values: int) -> np.ndarray:
    """Per sequence, the value most candidates give (smallest on ties; -1 without candidates)."""
    counts = np.bincount(seq * n_values + values, minlength=n_seq * n_values).reshape(n_seq, n_values)
    best = counts.argmax(1)
    return np.where(counts.max(1) > 0, best, -1)


def _chunks(sizes: np.ndarray):
    """Consecutive index ranges whose candidate counts sum to at most CANDIDATE_BUDGET (at least one each)."""
    start, total = 0, 0
    for i, size in enumerate(sizes.tolist()):
        if i > start and total + size > CANDIDATE_BUDGET:
            yield start, i
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)


def _follow(numbers, seq, a, c, state, out_table, n_values, m, pred, first_col):
    """From column first_col on: predict with (a, c, state) candidates, then keep those that were right."""
    n_seq = numbers.shape[0]
    for col in range(first_col, numbers.shape[1] - 1):
        state = (a * state + c) % m
        values = out_table[state] if out_table is not None else state
        pred[:, col] = _vote(seq, values, n_seq, n_values)
        keep = values == numbers[seq, col + 1]
        seq, a, c, state = seq[keep], a[keep], c[keep], state[keep]


def lcg_known_m(numbers, m: int) -> np.ndarray:
    """Predictions (B, T-1) of an LCG with known modulus m and unknown a, c (any values in [0, m))."""
    numbers = np.asarray(numbers, dtype=np.int64)
    m = int(m)
    if m > MAX_LCG_MODULUS:
        raise ValueError(f"the LCG baseline enumerates all m multipliers; m={m} is above {MAX_LCG_MODULUS}")
    B, T = numbers.shape
    pred = np.full((B, T - 1), -1, dtype=np.int64)
    pred[:, 0] = 0  # from one number every next value is equally likely: the smallest wins the tie
    if T < 3:
        return pred
    for lo, hi in _chunks(np.full(B, m)):
        x = numbers[lo:hi]
        seq = np.repeat(np.arange(hi - lo), m)
        a = np.tile(np.arange(m, dtype=np.int64), hi - lo)
        x1, x2 = x[seq, 0], x[seq, 1]
        c = (x2 - a * x1) % m
        _follow(x, seq, a, c, x2, None, m, m, pred[lo:hi], 1)
    return pred


class Family:
    """The data layer's (a, c) family for one modulus and one generator output function."""

    def __init__(self, kind: str, m: int, control_bits: int = 0, bits_to_keep: int | None = None):
        m = int(m)
        if m > MAX_FAMILY_MODULUS:
            raise ValueError(f"the family baseline enumerates states; m={m} is above {MAX_FAMILY_MODULUS}")
        prng.validate(kind, m, control_bits, bits_to_keep)
        self.m = m
        self.a = np.arange(1, multiplier_count(m) + 1, dtype=np.int64) * multiplier_step(m) + 1
        c = np.arange(m, dtype=np.int64)
        self.c_ok = (c >= 3) & (np.gcd(c, m) == 1)
        self.out = np.asarray(prng.output(kind, np.arange(m, dtype=np.int64), m, control_bits, bits_to_keep))
        self.n_values = prng.max_output(kind, m, bits_to_keep) + 1
        order = np.argsort(self.out, kind="stable")
        bounds = np.searchsorted(self.out[order], np.arange(self.n_values + 1))
        self._order, self._bounds = order, bounds

    def preimage(self, value: int) -> np.ndarray:
        """States whose output is `value`."""
        if not 0 <= value < self.n_values:
            return self._order[:0]
        return self._order[self._bounds[value]:self._bounds[value + 1]]

    def first_prediction(self, x1: int) -> int:
        """Majority next output over (a, c, s1) with output(s1) = x1: counts of s2 = a s1 + c per s2 are
        the histogram of a s1 convolved (mod m) with the set of allowed c."""
        pre = self.preimage(x1)
        if len(pre) == 0 or len(self.a) == 0:
            return -1
        hist = np.bincount(((self.a[:, None] * pre[None, :]) % self.m).ravel(), minlength=self.m).astype(np.float64)
        counts = np.fft.irfft(np.fft.rfft(hist) * np.fft.rfft(self.c_ok.astype(np.float64)), n=self.m)
        counts = np.rint(counts)
        by_value = np.bincount(self.out, weights=counts, minlength=self.n_values)
        return int(by_value.argmax())

    def predict(self, numbers) -> np.ndarray:
        """Predictions (B, T-1) of the majority of consistent (a, c, s0) of the family."""
        numbers = np.asarray(numbers, dtype=np.int64)
        B, T = numbers.shape
        pred = np.full((B, T - 1), -1, dtype=np.int64)
        firsts = {int(v): self.first_prediction(int(v)) for v in np.unique(numbers[:, 0])}
        pred[:, 0] = [firsts[int(v)] for v in numbers[:, 0]]
        if T < 3:
            return pred
        pre1 = [self.preimage(int(v)) for v in numbers[:, 0]]
        pre2 = [self.preimage(int(v)) for v in numbers[:, 1]]
        sizes = np.array([len(p) * len(q) * len(self.a) for p, q in zip(pre1, pre2)], dtype=np.int64)
        if sizes.max() > MAX_SEQUENCE_CANDIDATES:
            raise ValueError(f"the family baseline would start from {sizes.max():,} candidates for one sequence at "
                             f"m={self.m} (more than {MAX_SEQUENCE_CANDIDATES:,}): the outputs keep too few bits of the state")
        for lo, hi in _chunks(sizes):
            seq, s1, s2 = [], [], []
            for i in range(lo, hi):
                grid1, grid2 = np.meshgrid(pre1[i], pre2[i], indexing="ij")
                s1.append(grid1.ravel())
                s2.append(grid2.ravel())
                seq.append(np.full(grid1.size, i - lo))
            seq, s1, s2 = (np.concatenate(v).astype(np.int64) for v in (seq, s1, s2))
            n_a = len(self.a)
            seq, s1, s2 = np.repeat(seq, n_a), np.repeat(s1, n_a), np.repeat(s2, n_a)
            a = np.tile(self.a, len(seq) // n_a)
            c = (s2 - a * s1) % self.m
            keep = self.c_ok[c]
            _follow(numbers[lo:hi], seq[keep], a[keep], c[keep], s2[keep], self.out, self.n_values, self.m,
                    pred[lo:hi], 1)
        return pred


def family(numbers, kind: str, m: int, control_bits: int = 0, bits_to_keep: int | None = None) -> np.ndarray:
    return Family(kind, m, control_bits, bits_to_keep).predict(numbers)


def accuracy(pred: np.ndarray, numbers) -> np.ndarray:
    """Per-position accuracy of predictions (B, T-1) against the sequences (B, T)."""
    return (pred == np.asarray(numbers)[:, 1:]).mean(0)


NAMES = ("lcg", "family")


def run(name: str, numbers, combo, m: int) -> np.ndarray:
    """Predictions of baseline `name` for sequences of one generator combination."""
    if name == "lcg":
        if combo.kind != "LCG":
            raise ValueError(f"the lcg baseline reads states, so it needs LCG sequences, not {combo.label}")
        return lcg_known_m(numbers, m)
    if name == "family":
        return family(numbers, combo.kind, m, combo.control_bits, combo.bits_to_keep)
    raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(NAMES)}")
