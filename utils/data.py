"""Datasets of generator sequences that store only (a, c) lists: O(n_a + n_c) memory.

A sequence index maps to (combination, a, c, example) by arithmetic, in the original's order
(combination-major, then a, then c, then example copy). Its start state s0 is a counter-based hash
of (data_seed, m, combination, a, c, example), so the same sequence comes out of every dataset
object, worker count and world size. A batch of indices becomes (x, y) in one vectorized call.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from . import prng
from .seeds import epoch_rng
from .tokens import to_tokens

PCG_KINDS = ("RS", "RR", "XSHRR", "XSHRS", "XSLRR")


@dataclass(frozen=True)
class Combo:
    """One generator/control-bit combination of a run, e.g. XSLRR with cb = 3 (label `XSLRR_cb3`)."""
    kind: str
    control_bits: int = 0
    bits_to_keep: int | None = None

    @property
    def label(self) -> str:
        return self.kind if self.kind in ("LCG", "TLCG") else f"{self.kind}_cb{self.control_bits}"

    @property
    def hash_id(self) -> int:
        return zlib.crc32(self.label.encode())

    def validate(self, m: int) -> None:
        prng.validate(self.kind, m, self.control_bits, self.bits_to_keep)

    def max_output(self, m: int) -> int:
        return prng.max_output(self.kind, m, self.bits_to_keep)


def parse_control_bits(text) -> list[int]:
    """'3' -> [3]; '1, 2,3' -> [1, 2, 3] (one run per control-bit value, as the original)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"control_bits must be an int or a comma list of ints, got {text!r}") from None
    if any(not 0 <= v <= 63 for v in values):  # states have at most 63 bits (rules compute 2^cb)
        raise ValueError(f"control_bits values must be in [0, 63], got {text!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"control_bits lists a value twice: {text!r}")
    return values


def parse_combos(type_text: str, control_bits_text, m: int, bits_to_keep: int | None,
                 log=print) -> list[Combo]:
    """Expand `--type` (one type, a `+`-join, or the XSPCGs bundle) and `--control_bits` into validated
    combinations, validated before any data exist. Explicit types raise on invalid parameters; the bundle drops an
    invalid XSHRS with one printed line.
    """
    combos: list[Combo] = []
    for part in [p.strip() for p in str(type_text).split("+")]:
        if part.upper() == "XSPCGS":
            for cb in parse_control_bits(control_bits_text):
                for kind in ("XSLRR", "XSHRR", "XSHRS"):
                    combo = Combo(kind, cb, bits_to_keep)
                    try:
                        combo.validate(m)
                    except ValueError as err:
                        if kind != "XSHRS":
                            raise
                        log(f"XSPCGs: skipping {combo.label} for m={m}: {err}")
                        continue
                    combos.append(combo)
            continue
        kind = prng.canonical_kind(part)
        if kind in PCG_KINDS:
            if str(control_bits_text).strip() == "":
                raise ValueError(f"--control_bits is required for {kind}")
            cbs = parse_control_bits(control_bits_text)
        else:  # LCG/TLCG have no control bits (the control bits are the PCG types'; settings.control_bits_for)
            cbs = [0]
        for cb in cbs:
            combo = Combo(kind, cb, None if kind == "LCG" else bits_to_keep)
            combo.validate(m)
            combos.append(combo)
    labels = [c.label for c in combos]
    if not combos:
        raise ValueError(f"--type {type_text!r} gives no valid generator for m={m}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"--type {type_text!r} with control_bits {control_bits_text!r} repeats a combination: {labels}")
    return combos


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def start_states(data_seed: int, m: int, combo_id, a, c, example) -> np.ndarray:
    """s0 in [0, m) as a pure function of (data_seed, m, combination, a, c, example).

    A chained splitmix64 hash reduced mod m; its bias is below m / 2^64 (under 2^-24 for m <= 2^40).
    """
    fields = [np.asarray(v).astype(np.uint64) for v in (combo_id, a, c, example)]
    shape = np.broadcast_shapes(*(f.shape for f in fields))
    with np.errstate(over="ignore"):
        h = _mix64(np.full(shape, (int(data_seed) & (2**64 - 1)), dtype=np.uint64) + _GOLDEN)
        h = _mix64(h ^ (np.uint64(int(m)) + _GOLDEN))
        for f in fields:
            h = _mix64(h ^ (f + _GOLDEN))
    return (h % np.uint64(int(m))).astype(np.int64)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on `device` in one copy that does not make the host wait: on CUDA it goes through
    pinned (page-locked) memory, whose copy runs asynchronously (torch's pinned-memory cache keeps the
    buffer until the copy is done); elsewhere a plain copy."""
    device, tensor = torch.device(device), torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class PRNGDataset:
    """All sequences of combos x a_values x c_values x n_example for one modulus.

    Holds only the (a, c) lists and, per device, jump-ahead tables of the a values
    (len(a_values) x seq_len numbers each), never one object per sequence.
    """

    def __init__(self, m: int, combos: list[Combo], a_values, c_values, n_example: int, seq_len: int,
                 base: int, digits: int, data_seed: int):
        self.m, self.combos = int(m), list(combos)
        self.a_values = np.asarray(a_values, dtype=np.int64)
        self.c_values = np.asarray(c_values, dtype=np.int64)
        self.n_example, self.seq_len = int(n_example), int(seq_len)
        self.base, self.digits, self.data_seed = int(base), int(digits), int(data_seed)
        self.shape = (len(self.combos), len(self.a_values), len(self.c_values), self.n_example)
        self._tables: dict[str, tuple] = {}

    def __len__(self) -> int:
        return int(np.prod(self.shape))

    def for_combo(self, j: int) -> "PRNGDataset":
        """The same sequences restricted to combination j (per-type evaluation sees identical data)."""
        return PRNGDataset(self.m, [self.combos[j]], self.a_values, self.c_values, self.n_example,
                           self.seq_len, self.base, self.digits, self.data_seed)

    def locate(self, indices) -> tuple[np.ndarray, ...]:
        """Sequence indices -> (combo index, a index, c index, example) arrays."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"sequence index out of range [0, {len(self)})")
        return np.unravel_index(indices, self.shape)

    def _jump_tables(self, device: torch.device | None):
        key = "numpy" if device is None else str(device)
        if key not in self._tables:
            a = self.a_values if device is None else torch.as_tensor(self.a_values, device=device)
            self._tables[key] = prng.jump_tables(a, self.m, self.seq_len)
        return self._tables[key]

    def numbers(self, indices, device: torch.device | None = None):
        """Generator outputs, shape (B, seq_len) int64: numpy on the host (device None), else a tensor
        computed on `device`."""
        j, ia, ic, ex = self.locate(indices)
        combo_ids = np.array([c.hash_id for c in self.combos], dtype=np.uint64)[j]
        a, c = self.a_values[ia], self.c_values[ic]
        s0 = start_states(self.data_seed, self.m, combo_ids, a, c, ex)
        A, S = self._jump_tables(device)
        if device is not None:
            ia, j, s0, c = to_device(np.stack([ia, j, s0, c]), device)
        states = prng.states_from_tables(A[ia], S[ia], s0, c, self.m)
        if len(self.combos) == 1:
            combo = self.combos[0]
            return prng.output(combo.kind, states, self.m, combo.control_bits, combo.bits_to_keep)
        if device is not None:
            # Every combination's output on all rows, each row keeping its own: a boolean-mask
            # assignment would wait for the device (its row count decides the shape) once per type.
            out = states
            for k, combo in enumerate(self.combos):
                mine = prng.output(combo.kind, states, self.m, combo.control_bits, combo.bits_to_keep)
                out = torch.where((j == k)[:, None], mine, out)
            return out
        out = states.copy()
        for k, combo in enumerate(self.combos):
            rows = j == k
            out[rows] = prng.output(combo.kind, states[rows], self.m, combo.control_bits, combo.bits_to_keep)
        return out

    def batch(self, indices, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) token tensors of shape (B, seq_len*digits - 1) on `device`.

        On CUDA the numbers are computed there; on the CPU numpy's int64 kernels are faster than torch's.
        """
        device = torch.device(device)
        if device.type == "cpu":
            tokens = torch.from_numpy(to_tokens(self.numbers(indices), self.base, self.digits))
        else:
            tokens = to_tokens(self.numbers(indices, device), self.base, self.digits)
        return tokens[:, :-1], tokens[:, 1:]


# --------------------------------------------------------------------------------------------------
# Order of training sequences: deterministic per (main_seed, epoch), split disjointly over ranks.

class EpochOrder:
    """Global micro-batches of `global_batch` = batch_size x world_size sequences.

    Micro-batch i of the run is slice i of the epoch's permutation (seeded by (main_seed, epoch)),
    dropping the incomplete tail; rank r takes the r-th contiguous share. The whole schedule is a pure
    function of the micro-batch counter, so resuming, worker counts and world sizes change nothing.
    """

    def __init__(self, n: int, batch_size: int, main_seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.main_seed = int(n), int(batch_size), int(main_seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.global_batch = self.batch_size * self.world_size
        self.per_epoch = self.n // self.global_batch
        if self.per_epoch == 0:
            raise ValueError(f"the training set has {n} sequences, fewer than one global batch "
                             f"(batch_size {batch_size} x world size {world_size})")
        self._epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, epoch_rng(self.main_seed, epoch).permutation(self.n)
        return self._perm

    def indices(self, micro_step: int) -> np.ndarray:
        """This rank's sequence indices for the run's micro-batch number `micro_step` (0-based)."""
        epoch, i = divmod(int(micro_step), self.per_epoch)
        start = i * self.global_batch + self.rank * self.batch_size
        return self.permutation(epoch)[start:start + self.batch_size]


def eval_shards(n: int, batch_size: int, rank: int = 0, world_size: int = 1):
    """This rank's contiguous share of range(n), in batches; shares cover every index exactly once (no test sequence is dropped)."""
    lo, hi = n * rank // world_size, n * (rank + 1) // world_size
    for start in range(lo, hi, batch_size):
        yield np.arange(start, min(start + batch_size, hi))
