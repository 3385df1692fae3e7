"""(a, c) parameters: multipliers, increments, split, exclusions."""

import math
import zipfile

import numpy as np
import pytest
import torch

from tests.reference import reference_sequence
from utils.params import (
    draw_increments, draw_multipliers, increment_count, load_exclusions, multiplier_count, multiplier_step,
    prime_factors, split_ac, totient,
)

# ---------------------------------------------------------------------------------------------------
# Factoring: a power of two without sympy, any other modulus with it.

def test_prime_factors_and_totient_match_trial_division_and_counting():
    for m in range(2, 1000):
        primes = [p for p in range(2, m + 1) if m % p == 0 and all(p % q for q in range(2, math.isqrt(p) + 1))]
        assert prime_factors(m) == primes, m
        assert totient(m) == sum(math.gcd(c, m) == 1 for c in range(1, m + 1)), m
    for n in (11, 32, 63, 64, 100):
        assert (prime_factors(2**n), totient(2**n)) == ([2], 2**(n - 1))
    assert prime_factors(3 * 5 * 7 * 2**20) == [2, 3, 5, 7] and prime_factors(2**61 - 1) == [2**61 - 1]
    assert totient(2**61 - 1) == 2**61 - 2


# ---------------------------------------------------------------------------------------------------
# Multipliers: Hull-Dobell, a = kk*L + 1 with 1 <= kk < m // L.


@pytest.mark.parametrize("m, step, count", [
    (2**18, 4, 2**16 - 1),  # 4 | m: L uses 4, not 2
    (16, 4, 3),
    (64, 4, 15),
    (1024, 4, 255),
    (3**4 * 5**2, 15, 134),
    (3**5 * 2**2, 12, 80),
    (100, 20, 4),  # 2^2 * 5^2
    (360, 60, 5),  # 2^3 * 3^2 * 5
    (90, 30, 2),  # 2 * 3^2 * 5: 2 | m but not 4, so L keeps the 2
    (2 * 3 * 5 * 7, 210, 0),  # square-free: only a = 1 would have full period
])
def test_multiplier_step_and_count(m, step, count):
    assert multiplier_step(m) == step
    assert multiplier_count(m) == count


@pytest.mark.parametrize("m", [2**18, 3**4 * 5**2, 3**5 * 2**2, 360])
def test_multipliers_are_distinct_hull_dobell_values(m):
    step, count = multiplier_step(m), multiplier_count(m)
    a = draw_multipliers(m, np.random.default_rng(0), count)
    assert a.dtype == np.int64
    assert len(set(a.tolist())) == count
    assert np.all(a % step == 1) and np.all(a != 1) and np.all(a < m)
    assert set(a.tolist()) == {kk * step + 1 for kk in range(1, m // step)}


def test_asking_for_more_multipliers_than_exist_raises():
    with pytest.raises(ValueError, match="m=16 has only 3"):
        draw_multipliers(16, np.random.default_rng(0), 4)


def _full_period(m, a, c):
    return len(set(reference_sequence("LCG", m, a, c, 0, m))) == m


@pytest.mark.parametrize("m", [16, 64, 100, 360, 1024, 3**5 * 2**2])
def test_every_drawn_multiplier_has_full_period(m):
    rng = np.random.default_rng(m)
    increments = draw_increments(m, rng, 3)
    for a in draw_multipliers(m, rng, multiplier_count(m)).tolist():
        for c in increments.tolist():
            assert _full_period(m, a, c), (m, a, c)


@pytest.mark.parametrize("m", [16, 100, 360, 3**5 * 2**2])
def test_multipliers_are_exactly_the_full_period_ones_other_than_1(m):
    full_period = {a for a in range(2, m) if _full_period(m, a, 1)}
    assert set(draw_multipliers(m, np.random.default_rng(0), multiplier_count(m)).tolist()) == full_period


# ---------------------------------------------------------------------------------------------------
# Increments: c in [3, m), gcd(c, m) = 1.

@pytest.mark.parametrize("m, num", [
    (2**16, 1000),
    (2**18, 1088),
    (1000, 300),
    (3**5 * 2**2, 200),
    (3 * 5 * 7 * 2**20, 3000),  # > 2^22: drawn by rejection
    (2**40 + 15, 3000),
])
def test_increments_are_distinct_coprime_and_at_least_3(m, num):
    c = draw_increments(m, np.random.default_rng(0), num)
    assert c.dtype == np.int64 and len(c) == num
    assert len(set(c.tolist())) == num
    assert all(3 <= v < m and math.gcd(v, m) == 1 for v in c.tolist())


@pytest.mark.parametrize("m", [16, 64, 100, 360, 1000])
def test_drawing_every_increment_gives_all_coprimes_from_3(m):
    everything = {v for v in range(3, m) if math.gcd(v, m) == 1}
    assert increment_count(m) == len(everything)
    assert set(draw_increments(m, np.random.default_rng(0), len(everything)).tolist()) == everything


@pytest.mark.parametrize("m", [16, 100])
def test_asking_for_more_increments_than_exist_raises(m):
    with pytest.raises(ValueError, match=f"m={m} has only {increment_count(m)}"):
        draw_increments(m, np.random.default_rng(0), increment_count(m) + 1)


# ---------------------------------------------------------------------------------------------------
# The train/test split: uniformly random given data_seed, train and test disjoint.

README = dict(m=2**18, n_a=1024, n_c=1024, n_test_a=128, n_test_c=64)


def readme_split(seed, **overrides):
    return split_ac(**{**README, **overrides}, rng=np.random.default_rng(seed))


def test_split_sizes_and_disjointness():
    s = readme_split(1)
    assert (len(s.train_a), len(s.train_c), len(s.test_a), len(s.test_c)) == (1024, 1024, 128, 64)
    a, c = s.train_a.tolist() + s.test_a.tolist(), s.train_c.tolist() + s.test_c.tolist()
    assert len(set(a)) == len(a) and len(set(c)) == len(c)  # train and test share no a and no c
    assert all(v % 4 == 1 for v in a) and all(v % 2 == 1 and v >= 3 for v in c)


def test_split_is_deterministic_per_seed():
    first, again, other = readme_split(1), readme_split(1), readme_split(2)
    for name in ("train_a", "train_c", "test_a", "test_c"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
        assert not np.array_equal(getattr(first, name), getattr(other, name))


def test_test_multipliers_are_not_a_band_of_their_own():
    """The original's test multipliers sat in a narrow band of a mod 2^15, apart from training."""
    for seed in range(5):
        s = readme_split(seed)
        train, test = s.train_a % 2**15, s.test_a % 2**15
        lo, hi = test.min(), test.max()
        assert hi - lo > 0.9 * 2**15  # test residues spread over the whole range ...
        assert np.mean((train >= lo) & (train <= hi)) > 0.9  # ... which training fills too


def test_test_multipliers_are_uniform_over_all_multipliers():
    # kk = (a - 1)/4 over many seeds, in 16 bins of [1, 2^16): a chi-square far below a banded split's.
    kk = np.concatenate([(readme_split(seed).test_a - 1) // 4 for seed in range(20)])
    counts = np.bincount(kk * 16 // 2**16, minlength=16)
    expected = len(kk) / 16
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 50, counts  # 15 degrees of freedom: P(chi2 > 50) ~ 1e-5 for a uniform split


@pytest.mark.parametrize("sizes, what", [
    (dict(m=16, n_a=3, n_test_a=1, n_c=2, n_test_c=2), "3 Hull-Dobell multipliers"),
    (dict(m=16, n_a=2, n_test_a=1, n_c=6, n_test_c=2), "7 increments"),
])
def test_split_asking_for_more_values_than_exist_names_m(sizes, what):
    with pytest.raises(ValueError, match=f"m=16 has only {what}"):
        split_ac(**sizes, rng=np.random.default_rng(0))


def test_split_sizes_must_be_positive():
    with pytest.raises(ValueError, match="n_test_c must be >= 1"):
        split_ac(2**16, 4, 4, 4, 0, np.random.default_rng(0))


def test_exclusions_remove_values_and_keep_disjointness():
    plain = readme_split(3)
    excluded_a = set(plain.train_a[:100].tolist()) | set(plain.test_a[:10].tolist())
    excluded_c = set(plain.train_c[::7].tolist()) | set(plain.test_c.tolist())
    s = readme_split(3, excluded_a=excluded_a, excluded_c=excluded_c)
    a, c = s.train_a.tolist() + s.test_a.tolist(), s.train_c.tolist() + s.test_c.tolist()
    assert (len(s.train_a), len(s.train_c), len(s.test_a), len(s.test_c)) == (1024, 1024, 128, 64)
    assert not excluded_a & set(a) and not excluded_c & set(c)
    assert len(set(a)) == len(a) and len(set(c)) == len(c)
    again = readme_split(3, excluded_a=excluded_a, excluded_c=excluded_c)
    assert np.array_equal(s.test_a, again.test_a) and np.array_equal(s.train_c, again.train_c)


def test_exclusions_that_leave_too_few_values_raise():
    # m = 16 has exactly three multipliers (5, 9, 13): excluding one leaves two for three places.
    with pytest.raises(ValueError, match=r"not enough multiplier \(a\) values for m=16"):
        split_ac(16, 2, 2, 1, 1, np.random.default_rng(0), excluded_a={9})
    with pytest.raises(ValueError, match=r"not enough increment \(c\) values for m=16"):
        split_ac(16, 2, 6, 1, 1, np.random.default_rng(0), excluded_c={3})


# ---------------------------------------------------------------------------------------------------
# Exclusion files, written the way the original wrote them.

def test_npz_train_and_test_keys(tmp_path):
    path = tmp_path / "trainac.npz"
    np.savez(path, train_a=np.array([5, 9]), test_a=np.array([13]), train_c=np.array([3]), test_c=np.array([7, 11]))
    ex = load_exclusions([path])
    assert ex.a == {5, 9, 13} and ex.c == {3, 7, 11}
    assert ex.for_modulus(16) == ({5, 9, 13}, {3, 7, 11})  # applies to every modulus


def test_npz_with_only_some_keys(tmp_path):
    path = tmp_path / "a_only.npz"
    np.savez(path, train_a=np.array([5, 9]))
    ex = load_exclusions([path])
    assert ex.a == {5, 9} and ex.c == set()


def test_single_modulus_pt(tmp_path):
    path = tmp_path / "training_ac_values_m65536.pt"
    config = {"type": "XSLRR", "m": 65536, "n_a": 2, "n_c": 2, "control_bits": "3", "data_seed": 1}
    torch.save({"training_ac_values": {"train_a": [5, 9], "train_c": [3, 7]}, "config": config}, path)
    ex = load_exclusions([path])
    assert ex.a == {5, 9} and ex.c == {3, 7}


def test_pt_with_numpy_int64_scalars_loads(tmp_path):
    # What the original saved: lists of numpy int64, which torch >= 2.6 refuses by default.
    path = tmp_path / "numpy_values.pt"
    values = {"train_a": [np.int64(65541), np.int64(65545)], "train_c": [np.int64(261133)]}
    torch.save({"training_ac_values": values, "config": {"m": np.int64(2**18)}}, path)
    ex = load_exclusions([path])
    assert ex.a == {65541, 65545} and ex.c == {261133}


def _as_saved_by_numpy_1(path):
    """Rewrite a torch .pt so its numpy scalars reference numpy 1.x's module name, numpy.core."""
    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            if name.endswith("data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            z.writestr(name, data)


def test_pt_with_numpy_int64_scalars_saved_under_numpy_1_loads(tmp_path):
    path = tmp_path / "numpy1_values.pt"
    torch.save({"training_ac_values": {"train_a": [np.int64(65541)], "train_c": [np.int64(261133)]}}, path)
    _as_saved_by_numpy_1(path)
    ex = load_exclusions([path])
    assert ex.a == {65541} and ex.c == {261133}


def test_curriculum_pt_excludes_per_modulus(tmp_path):
    path = tmp_path / "training_ac_values_moduli65536_262144.pt"
    values = {65536: {"train_a": [np.int64(5), np.int64(9)], "train_c": [np.int64(3)]},
              262144: {"train_a": [13], "train_c": [7, 11]}}
    torch.save({"training_ac_values": values, "config": {"moduli": [65536, 262144]}}, path)
    ex = load_exclusions([path])
    assert ex.for_modulus(65536) == ({5, 9}, {3})
    assert ex.for_modulus(262144) == ({13}, {7, 11})
    assert ex.for_modulus(1024) == (set(), set())  # nothing global, and nothing for another modulus


def test_files_combine(tmp_path):
    npz, curriculum = tmp_path / "a.npz", tmp_path / "b.pt"
    np.savez(npz, train_a=np.array([21]), test_c=np.array([19]))
    torch.save({"training_ac_values": {65536: {"train_a": [5], "train_c": [3]}}}, curriculum)
    ex = load_exclusions([npz, curriculum])
    assert ex.for_modulus(65536) == ({5, 21}, {3, 19})
    assert ex.for_modulus(16) == ({21}, {19})


def test_plain_list_pt_excludes_a_values_only(tmp_path):
    path = tmp_path / "a_values.pt"
    torch.save([5, 9, 13], path)
    ex = load_exclusions([path])
    assert ex.a == {5, 9, 13} and ex.c == set()


def test_no_paths_excludes_nothing():
    for paths in (None, []):
        ex = load_exclusions(paths)
        assert ex.a == set() and ex.c == set() and ex.by_modulus == {}


class Payload:
    """An arbitrary object: loading a file that holds one must not run its code."""
    calls = []

    def __init__(self):
        self.command = "anything"

    def __setstate__(self, state):
        Payload.calls.append(state)


def _write_bad_file(tmp_path, case):
    if case == "missing":
        return tmp_path / "nowhere.pt"
    if case == "unsupported extension":
        path = tmp_path / "values.json"
        path.write_text("[5, 9]")
        return path
    if case == "random bytes .pt":
        path = tmp_path / "corrupt.pt"
        path.write_bytes(np.random.default_rng(0).bytes(512))
        return path
    if case == "random bytes .npz":
        path = tmp_path / "corrupt.npz"
        path.write_bytes(np.random.default_rng(0).bytes(512))
        return path
    if case in ("empty .npz", "one .npy array named .npz"):
        path = tmp_path / "odd.npz"
        with open(path, "wb") as fh:
            if case != "empty .npz":
                np.save(fh, np.array([5, 9]))
        return path
    if case == "npz without known keys":
        path = tmp_path / "other.npz"
        np.savez(path, a=np.array([5]), c=np.array([3]))
        return path
    path = tmp_path / f"{case.replace(' ', '_')}.pt"
    obj = {
        "pt dict without training_ac_values": {"train_a": [5], "train_c": [3]},
        "pt training_ac_values not a dict": {"training_ac_values": [5, 9]},
        "pt modulus entry not a dict": {"training_ac_values": {65536: [5, 9]}},
        "pt modulus entry without train keys": {"training_ac_values": {65536: {"a": [5]}}},
        "pt values not integers": {"training_ac_values": {"train_a": ["five"], "train_c": [3]}},
        "pt pickled object": {"training_ac_values": {"train_a": [5], "train_c": [3]}, "extra": Payload()},
    }[case]
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("unsupported extension", "unsupported extension"),
    ("random bytes .pt", "could not be loaded safely"),
    ("random bytes .npz", "not a readable .npz"),
    ("empty .npz", "not a readable .npz"),
    ("one .npy array named .npz", "not a readable .npz"),
    ("npz without known keys", "none of the keys train_a, test_a, train_c, test_c"),
    ("pt dict without training_ac_values", "expected a dict with key 'training_ac_values'"),
    ("pt training_ac_values not a dict", "expected a dict with key 'training_ac_values'"),
    ("pt modulus entry not a dict", "entry 65536 is not a dict with train_a/train_c"),
    ("pt modulus entry without train keys", "entry 65536 is not a dict with train_a/train_c"),
    ("pt values not integers", "train_a is not a list of integers"),
    ("pt pickled object", "could not be loaded safely"),
])
def test_bad_exclusion_files_are_errors(tmp_path, case, message):
    path = _write_bad_file(tmp_path, case)
    with pytest.raises(ValueError, match=message) as err:
        load_exclusions([path])
    assert str(path) in str(err.value)
    assert Payload.calls == []  # weights_only: nothing in the file ran


def test_truncated_npz_is_a_value_error(tmp_path):
    path = tmp_path / "truncated.npz"
    np.savez(path, train_a=np.arange(1000), test_a=np.arange(5))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_exclusions([path])


def test_non_integral_values_are_errors(tmp_path):
    path = tmp_path / "floats.npz"
    np.savez(path, train_a=np.array([65541.5]))
    with pytest.raises(ValueError, match="not a list of integers"):
        load_exclusions([path])


def test_integral_float_values_are_accepted(tmp_path):
    path = tmp_path / "floats.npz"
    np.savez(path, train_a=np.array([65541.0, 65545.0]))
    assert load_exclusions([path]).a == {65541, 65545}


def test_paths_may_be_str_or_pathlike(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, train_a=np.array([5]))
    assert load_exclusions([str(path)]).a == load_exclusions([path]).a == {5}
