"""Data benchmark: batch generation vs the per-sequence loop, and the README dataset's set-up cost (memory O(n_a + n_c)).

Run from the repository root:  python -m bench.bench_data
"""
import gc
import os
import statistics
import sys
import time

if not __package__:  # run as a file: bench/, not the repository root, is on sys.path (bench/__init__.py)
    sys.exit(f"error: run it from the repository root as a module: python -m bench.{os.path.basename(__file__)[:-3]}")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from tests.reference import reference_sequence  # noqa: E402
from utils.data import Combo, EpochOrder, PRNGDataset, start_states  # noqa: E402
from utils.params import split_ac  # noqa: E402

COMMAND = "python -m bench.bench_data"
M, SEQ_LEN, BATCH, N_A, N_C, N_TEST_A, N_TEST_C, DATA_SEED = 2**18, 513, 512, 1024, 1024, 128, 64, 1
SETUP_TARGET_S, SETUP_TARGET_MB = 2.0, 50.0
BATCH_REPEATS, LOOP_REPEATS = 7, 3

# The README shape: m = 2^18 (n = 18), cb 3, k 9, where the type's rules allow it.
COMBOS = [
    Combo("LCG"),
    Combo("TLCG", 0, 9),  # no control bits
    Combo("RS", 3, 8),  # RS needs n >= k + cb + 2^cb - 1: with cb 3, k <= 8
    Combo("RR", 3, 9),
    Combo("XSHRR", 3, 9),
    Combo("XSHRS", 2, 9),  # XSHRS needs k >= cb + 2^cb and n >= 2k - cb: no k fits cb 3 at n = 18
    Combo("XSLRR", 3, 9),  # k is ignored: XSLRR outputs n//2 = 9 bits
]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def median_time(fn, repeats):
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def readme_setup():
    """split_ac + PRNGDataset + the first batch, as a training run starts."""
    split = split_ac(M, N_A, N_C, N_TEST_A, N_TEST_C, np.random.default_rng(DATA_SEED))
    ds = PRNGDataset(M, [Combo("XSLRR", 3, 9)], split.train_a, split.train_c, n_example=1, seq_len=SEQ_LEN,
                     base=512, digits=1, data_seed=DATA_SEED)
    x, y = ds.batch(EpochOrder(len(ds), BATCH, main_seed=1).indices(0))
    return ds, x, y


def measure_setup():
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    ds, x, y = readme_setup()
    seconds = time.perf_counter() - start
    extra = rss_mb() - before
    assert len(ds) == N_A * N_C and x.shape == (BATCH, SEQ_LEN - 1)
    return seconds, extra


def measure_rates():
    split = split_ac(M, N_A, N_C, N_TEST_A, N_TEST_C, np.random.default_rng(DATA_SEED))
    rows = []
    for combo in COMBOS:
        ds = PRNGDataset(M, [combo], split.train_a, split.train_c, 1, SEQ_LEN, 512, 1, DATA_SEED)
        order = EpochOrder(len(ds), BATCH, main_seed=1)
        ds.numbers(order.indices(0))  # warm-up: builds the per-a jump tables once per dataset
        ds.numbers(order.indices(0), device="cpu")
        numpy_s = median_time(lambda i: ds.numbers(order.indices(i + 1)), BATCH_REPEATS)
        torch_s = median_time(lambda i: ds.numbers(order.indices(i + 1), device="cpu"), BATCH_REPEATS)

        # The loop is handed (a, c, s0): it times generation only, which flatters the loop.
        cases = []
        for i in range(LOOP_REPEATS):
            idx = order.indices(i + 1)
            _, ia, ic, ex = ds.locate(idx)
            a, c = ds.a_values[ia], ds.c_values[ic]
            s0 = start_states(DATA_SEED, M, combo.hash_id, a, c, ex)
            cases.append(list(zip(a.tolist(), c.tolist(), s0.tolist())))
            expected = ds.numbers(idx)[:4].tolist()
            assert [reference_sequence(combo.kind, M, *abc, SEQ_LEN, combo.control_bits, combo.bits_to_keep)
                    for abc in cases[-1][:4]] == expected, combo.label
        loop_s = median_time(lambda i: [reference_sequence(combo.kind, M, a, c, s0, SEQ_LEN, combo.control_bits,
                                                           combo.bits_to_keep) for a, c, s0 in cases[i]],
                             LOOP_REPEATS)
        rows.append((combo, BATCH / numpy_s, BATCH / torch_s, BATCH / loop_s))
    return rows


def main():
    print(f"# {COMMAND}")
    print(f"# m = 2^18, batch {BATCH} x {SEQ_LEN} numbers, n_a = n_c = {N_A}; median of {BATCH_REPEATS} "
          f"(batch) / {LOOP_REPEATS} (loop) repetitions; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    seconds, extra = measure_setup()  # first, so that nothing else has grown the heap yet
    print()
    print(f"{'type':<10}{'cb':>3}{'k':>4}{'numpy seq/s':>14}{'torch-cpu seq/s':>17}{'loop seq/s':>12}"
          f"{'numpy/loop':>12}{'torch/loop':>12}")
    for combo, numpy_rate, torch_rate, loop_rate in measure_rates():
        k = "-" if combo.kind == "LCG" else 9 if combo.kind == "XSLRR" else combo.bits_to_keep
        print(f"{combo.kind:<10}{combo.control_bits:>3}{k:>4}{numpy_rate:>14,.0f}{torch_rate:>17,.0f}"
              f"{loop_rate:>12,.0f}{numpy_rate / loop_rate:>11,.0f}x{torch_rate / loop_rate:>11,.0f}x")
    print()
    print("README example set-up (split_ac + PRNGDataset(XSLRR, m=2^18, cb 3, k 9, 1024 x 1024) + first batch):")
    print(f"  wall time {seconds:6.3f} s   target < {SETUP_TARGET_S:.0f} s    "
          f"{'OK' if seconds < SETUP_TARGET_S else 'MISS'}")
    print(f"  extra RSS {extra:6.1f} MB  target < {SETUP_TARGET_MB:.0f} MB   "
          f"{'OK' if extra < SETUP_TARGET_MB else 'MISS'}")


if __name__ == "__main__":
    main()
