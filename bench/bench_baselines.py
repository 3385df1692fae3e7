"""Baseline benchmark: run time of the classical predictors (utils/analysis/baselines.py) at m = 2^10 and
2^12, every generator type, on one thread.

Run from the repository root:  OMP_NUM_THREADS=1 python -m bench.bench_baselines
Each type: 64 test sequences (8 multipliers x 8 increments of the training family, one start state
each) of 64 numbers; PCG types with control bits 1 and k = n // 2 output bits (XSLRR: n // 2 anyway).
"""
import os
import sys
import time

if not __package__:  # run as a file: bench/, not the repository root, is on sys.path (bench/__init__.py)
    sys.exit(f"error: run it from the repository root as a module: python -m bench.{os.path.basename(__file__)[:-3]}")

import numpy as np  # noqa: E402

from utils.analysis import baselines  # noqa: E402
from utils.analysis.positions import context_needed  # noqa: E402
from utils.data import Combo, PRNGDataset  # noqa: E402
from utils.params import split_ac  # noqa: E402

MODULI = (2**10, 2**12)
N_TEST_A = N_TEST_C = 8
SEQ_LEN = 64
TARGET_S = 60.0  # m = 2^10, all seven types: the bound asked of the baselines on 2 cores


def combos(m: int) -> list[Combo]:
    k = (m - 1).bit_length() // 2
    return [Combo("LCG"), Combo("TLCG", 0, k)] + [Combo(kind, 1, k) for kind in ("RS", "RR", "XSHRR", "XSHRS", "XSLRR")]


def sequences(m: int, combo: Combo) -> np.ndarray:
    split = split_ac(m, 4, 4, N_TEST_A, N_TEST_C, np.random.default_rng(1))
    ds = PRNGDataset(m, [combo], split.test_a, split.test_c, 1, SEQ_LEN, 2**12, 1, 1)
    return ds.numbers(np.arange(len(ds)))


def main() -> int:
    print(f"{'m':>6s} {'type':>10s} {'baseline':>9s} {'seconds':>8s} {'acc pos 1':>9s} {'acc last':>8s} {'context 0.99':>12s}")
    totals = {}
    for m in MODULI:
        for combo in combos(m):
            x = sequences(m, combo)
            for name in ("lcg", "family") if combo.kind == "LCG" else ("family",):
                t0 = time.perf_counter()
                acc = baselines.accuracy(baselines.run(name, x, combo, m), x)
                dt = time.perf_counter() - t0
                if name == "family":
                    totals[m] = totals.get(m, 0.0) + dt
                needed = baselines_context(acc)
                print(f"{m:>6d} {combo.label:>10s} {name:>9s} {dt:>8.2f} {acc[0]:>9.3f} {acc[-1]:>8.3f} {needed:>12}")
    for m, total in totals.items():
        print(f"m={m}: family baseline, all seven types: {total:.1f} s")
    ok = totals[2**10] < TARGET_S
    print(f"m=1024 under {TARGET_S:.0f} s: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


def baselines_context(acc) -> str:
    needed = context_needed(acc)
    return "not reached" if needed is None else str(needed)


if __name__ == "__main__":
    sys.exit(main())
