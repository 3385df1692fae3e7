"""Which parts of a predicted number are right, by position: the digit-wise view of accuracy.

The parts of a generator's values that are measured:
- a power-of-two LCG (m = 2^n, w = n) and every other type (TLCG and the PCGs emit k-bit values, w = k):
  `low_bits` j (j = 0 .. w-1): the low j+1 bits are right, prediction = target (mod 2^(j+1));
  `bit` j (j = 0 .. w-1): bit j alone is right;
- an LCG whose m is not a power of two: `mod_prime_power` (q, i) for each prime power q^e dividing m
  exactly and i = 1 .. e: prediction = target (mod q^i).
Bits at or above w are not looked at: a prediction outside the values the generator emits can still
have its low w bits right. A negative prediction (a baseline with no consistent candidate, a model
digit outside the base: positions.model_predictions) is wrong in every part.

Rows of an accuracy table are parts and columns positions (positions.py: column p-1 is the prediction
of number p+1 from the first p numbers); `sequences` sequences go into each entry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import prng
from .. import plots

COLUMNS = ["source", "m", "label", "kind", "prime", "index", "position", "accuracy", "sequences"]


@dataclass(frozen=True)
class Part:
    """low_bits j (mod 2^(j+1)), bit j, or mod_prime_power i of `prime` (mod prime^i)."""
    kind: str
    index: int
    prime: int = 2

    @property
    def name(self) -> str:
        if self.kind == "low_bits":
            return f"bits 0-{self.index}" if self.index else "bit 0"
        if self.kind == "bit":
            return f"bit {self.index}"
        return f"mod {self.prime}^{self.index}"


def parts_of(kind: str, m: int, bits_to_keep: int | None = None) -> list[Part]:
    """The parts measured for values of generator `kind` at modulus m (module docstring)."""
    m = int(m)
    if prng.canonical_kind(kind) == "LCG" and m & (m - 1):
        import sympy  # only for a modulus that is not a power of two (utils/params.py, prime_factors)
        return [Part("mod_prime_power", i, int(q)) for q, e in sorted(sympy.factorint(m).items())
                for i in range(1, int(e) + 1)]
    w = prng.effective_bits(kind, m, bits_to_keep)
    return [Part("low_bits", j) for j in range(w)] + [Part("bit", j) for j in range(w)]


def part_correct(pred, target, part: Part) -> np.ndarray:
    """Boolean array: where `part` of the prediction equals that of the target (both int64 arrays)."""
    pred, target = np.asarray(pred, dtype=np.int64), np.asarray(target, dtype=np.int64)
    if part.kind == "low_bits":
        mask = (1 << (part.index + 1)) - 1
        same = (pred & mask) == (target & mask)
    elif part.kind == "bit":
        same = ((pred >> part.index) & 1) == ((target >> part.index) & 1)
    else:
        modulus = part.prime**part.index
        same = pred % modulus == target % modulus
    return same & (pred >= 0)


def accuracy(pred, numbers, parts: list[Part]) -> np.ndarray:
    """(parts, positions) accuracy of predictions (B, T-1) against the sequences (B, T)."""
    target = np.asarray(numbers, dtype=np.int64)[:, 1:]
    return np.stack([part_correct(pred, target, part).mean(0) for part in parts])


def rows(source: str, m: int, label: str, parts: list[Part], acc: np.ndarray, sequences: int) -> list[dict]:
    return [{"source": source, "m": int(m), "label": label, "kind": part.kind, "prime": part.prime,
             "index": part.index, "position": p + 1, "accuracy": float(v), "sequences": int(sequences)}
            for part, line in zip(parts, acc) for p, v in enumerate(line)]


def plot(path: str, parts: list[Part], acc: np.ndarray, title: str) -> None:
    """A heatmap per kind of part (part x position, accuracy 0 to 1), side by side."""
    plt = plots.pyplot()
    kinds = list(dict.fromkeys(part.kind for part in parts))
    n_pos = acc.shape[1]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 1.2 + 0.3 * len(parts) / len(kinds)),
                             squeeze=False, layout="constrained")
    for ax, kind in zip(axes[0], kinds):
        mine = [i for i, part in enumerate(parts) if part.kind == kind]
        image = ax.imshow(acc[mine], aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                          interpolation="nearest", extent=(0.5, n_pos + 0.5, -0.5, len(mine) - 0.5))
        ax.set_yticks(range(len(mine)), [parts[i].name for i in mine], fontsize=7)
        ax.set(xlabel="position (numbers in the context)",
               title={"low_bits": "low bits right", "bit": "each bit right",
                      "mod_prime_power": "residue right"}[kind])
    fig.colorbar(image, ax=axes[0].tolist(), label="accuracy")
    fig.suptitle(title, fontsize=10)
    plots.save(fig, path, dpi=100, tight=False)
