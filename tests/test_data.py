"""Tokens and datasets: combos, sequences, order, sharding."""

import itertools
import re

import numpy as np
import pytest
import torch

from tests.reference import reference_sequence, reference_tokens
from utils.data import Combo, EpochOrder, PRNGDataset, eval_shards, parse_combos, parse_control_bits, start_states
from utils.params import split_ac
from utils.tokens import check_vocab, context_len, to_tokens

# ---------------------------------------------------------------------------------------------------
# Tokens: base-b digits, least significant first; x = S[:-1], y = S[1:]


@pytest.mark.parametrize("base, digits", [(256, 2), (16, 3), (10, 5), (2, 17), (512, 1)])
def test_tokens_are_digits_least_significant_first(base, digits):
    values = np.random.default_rng(base).integers(0, min(base**digits, 2**17), size=(3, 9))
    expected = [reference_tokens(row, base, digits) for row in values.tolist()]
    assert to_tokens(values, base, digits).tolist() == expected
    assert to_tokens(torch.from_numpy(values), base, digits).tolist() == expected


def test_tokens_of_the_originals_lcg_example():
    assert to_tokens(np.array([[9124, 8813]]), 256, 2).tolist() == [[164, 35, 109, 34]]


def test_context_len():
    assert context_len(513, 1) == 512  # README example
    assert context_len(513, 2) == 1025


@pytest.mark.parametrize("max_value, base, digits, vocab_size", [
    (511, 512, 1, 512),  # README: XSLRR m = 2^18 outputs < 512
    (255, 16, 2, 16),
    (65535, 256, 2, 256),
    (100, 256, 2, 101),  # digits > 1, but no token above the largest value
])
def test_check_vocab_passes_at_the_exact_boundary(max_value, base, digits, vocab_size):
    check_vocab(max_value, base, digits, vocab_size)


@pytest.mark.parametrize("max_value, base, digits, vocab_size, message", [
    (256, 16, 2, 16, "needs more than digits=2"),
    (512, 512, 1, 1024, "needs more than digits=1"),
    (511, 512, 1, 511, "vocab_size=511 is too small"),
    (65535, 256, 2, 255, "vocab_size=255 is too small"),
    (511, 256, 1, 512, "needs more than digits=1"),  # the original: --base 256 --bits_to_keep 9 overflowed
    (5, 1, 3, 10, "need base >= 2"),
])
def test_check_vocab_raises(max_value, base, digits, vocab_size, message):
    with pytest.raises(ValueError, match=message):
        check_vocab(max_value, base, digits, vocab_size)


# ---------------------------------------------------------------------------------------------------
# --type and --control_bits: one combination per type and control-bit value

def labels(combos):
    return [c.label for c in combos]


def test_control_bits_lists():
    assert parse_control_bits("3") == [3]
    assert parse_control_bits(" 1, 2,3 ") == [1, 2, 3]
    assert parse_control_bits(3) == [3]
    for bad in ("", "a", "1,,2", "1,1"):
        with pytest.raises(ValueError, match="control_bits"):
            parse_control_bits(bad)


def test_one_type_with_several_control_bits():
    combos = parse_combos("XSLRR", "1,2,3", 2**18, 9)
    assert labels(combos) == ["XSLRR_cb1", "XSLRR_cb2", "XSLRR_cb3"]
    assert [c.control_bits for c in combos] == [1, 2, 3]


def test_plus_joined_types_keep_their_order_and_share_k_except_lcg():
    combos = parse_combos("LCG + XSLRR+TLCG", "3", 2**18, 9)
    assert labels(combos) == ["LCG", "XSLRR_cb3", "TLCG"]
    assert combos[0] == Combo("LCG", 0, None)  # bits_to_keep is attached to every type except LCG
    assert combos[1] == Combo("XSLRR", 3, 9) and combos[2] == Combo("TLCG", 0, 9)


def test_xspcgs_bundle_order_and_skipped_xshrs():
    lines = []
    combos = parse_combos("XSPCGs", "2,3", 2**16, 8, log=lines.append)
    # cb = 3: XSHRS needs k - cb - 2^cb + 1 = 8 - 3 - 8 + 1 >= 1, so it is dropped, with one line
    assert labels(combos) == ["XSLRR_cb2", "XSHRR_cb2", "XSHRS_cb2", "XSLRR_cb3", "XSHRR_cb3"]
    assert len(lines) == 1 and "XSHRS_cb3" in lines[0] and "k - cb - 2^cb + 1 >= 1" in lines[0]


def test_xspcgs_is_case_insensitive_and_combines_with_other_types():
    combos = parse_combos("lcg+xspcgs", "2", 2**16, 8, log=lambda line: None)
    assert labels(combos) == ["LCG", "XSLRR_cb2", "XSHRR_cb2", "XSHRS_cb2"]


def test_xspcgs_raises_when_a_subtype_other_than_xshrs_is_invalid():
    with pytest.raises(ValueError, match="XSHRR: needs k > cb"):
        parse_combos("XSPCGs", "8", 2**16, 8, log=lambda line: None)


@pytest.mark.parametrize("types, cbs, k, message", [
    ("XSHRS", "3", 8, "k - cb - 2^cb + 1 >= 1"),  # explicit types raise, never skip
    ("RS", "2", 12, "n >= k + cb + 2^cb - 1"),
    ("XSLRR", "", 8, "--control_bits is required for XSLRR"),
    ("RR", " ", 8, "--control_bits is required for RR"),
    ("PCG64", "3", 8, "unknown generator type"),
    ("XSLRR+XSLRR", "3", 8, "repeats a combination"),
])
def test_bad_type_and_control_bits_raise(types, cbs, k, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_combos(types, cbs, 2**16, k)


def test_lcg_and_tlcg_need_no_control_bits_and_never_carry_any():
    assert labels(parse_combos("LCG", "", 2**16, None)) == ["LCG"]
    assert labels(parse_combos("TLCG", "0", 2**16, 8)) == ["TLCG"]
    # Values given with them alone are not theirs (settings.control_bits_for says so in one line)
    assert parse_combos("LCG+TLCG", "3", 2**16, 8) == [Combo("LCG", 0, None), Combo("TLCG", 0, 8)]


# ---------------------------------------------------------------------------------------------------
# PRNGDataset (memory O(n_a + n_c), s0 a hash of the sequence): index arithmetic, sequences equal the
# reference, start states.

COMBOS = [Combo("XSLRR", 3, 9), Combo("XSHRR", 3, 8), Combo("TLCG", 0, 8)]


def small_dataset(m=2**16, combos=COMBOS, a_values=(4101, 5, 65541 % 2**16, 321), c_values=(12345, 3, 7),
                  n_example=2, seq_len=17, base=512, digits=1, data_seed=5):
    return PRNGDataset(m, combos, list(a_values), list(c_values), n_example, seq_len, base, digits, data_seed)


def expected_numbers(ds, index):
    """The reference sequence of one dataset row: (combo, a, c, example) by arithmetic, s0 by hash."""
    j, ia, ic, ex = (int(v[0]) for v in ds.locate([index]))
    combo, a, c = ds.combos[j], int(ds.a_values[ia]), int(ds.c_values[ic])
    s0 = int(start_states(ds.data_seed, ds.m, combo.hash_id, a, c, ex))
    return reference_sequence(combo.kind, ds.m, a, c, s0, ds.seq_len, combo.control_bits, combo.bits_to_keep)


def test_length_is_combos_times_a_times_c_times_examples():
    assert len(small_dataset()) == 3 * 4 * 3 * 2


def test_locate_order_is_combo_then_a_then_c_then_example():
    ds = small_dataset()
    located = list(zip(*(v.tolist() for v in ds.locate(np.arange(len(ds))))))
    assert located == list(itertools.product(range(3), range(4), range(3), range(2)))
    with pytest.raises(IndexError):
        ds.locate([len(ds)])


NON_POWER_OF_TWO = dict(m=10**6, combos=[Combo("TLCG", 0, 10), Combo("XSLRR", 2), Combo("RS", 2, 8), Combo("LCG")],
                        a_values=(21, 999_981, 500_001), c_values=(3, 999_999), base=10**6)


@pytest.mark.parametrize("overrides", [
    {},
    NON_POWER_OF_TWO,
    dict(m=2**61 - 1, combos=[Combo("XSHRS", 2, 30), Combo("RR", 3, 40)], a_values=(2**60 + 3, 12345),
         c_values=(2**61 - 2,), base=2**40),  # products beyond int64: the exact mulmod path
    dict(m=2**62 + 2**61 + 1, combos=[Combo("XSLRR", 5)], a_values=(2**62 + 11,), c_values=(2**61 + 7, 1),
         base=2**31),  # m > 2^62
], ids=["pow2-three-combos", "non-pow2", "m=2^61-1", "m>2^62"])
def test_every_row_equals_the_reference_sequence(overrides):
    ds = small_dataset(**overrides)
    got = ds.numbers(np.arange(len(ds)))
    assert got.dtype == np.int64 and got.shape == (len(ds), ds.seq_len)
    for i, row in enumerate(got.tolist()):
        assert row == expected_numbers(ds, i), i


@pytest.mark.parametrize("overrides", [{}, NON_POWER_OF_TWO], ids=["pow2", "non-pow2"])
def test_torch_path_equals_numpy_path(overrides):
    ds = small_dataset(**overrides)
    indices = np.random.default_rng(0).permutation(len(ds))[:20]
    on_device = ds.numbers(indices, device="cpu")
    assert isinstance(on_device, torch.Tensor) and on_device.dtype == torch.int64
    assert on_device.tolist() == ds.numbers(indices).tolist()


def test_batch_is_tokenised_numbers_shifted_by_one():
    ds = small_dataset(m=2**16, combos=[Combo("LCG"), Combo("XSLRR", 3)], base=256, digits=2)
    indices = [5, 0, 17, 3]
    x, y = ds.batch(indices)
    assert x.dtype == torch.int64 and x.shape == (4, context_len(ds.seq_len, 2))
    for row_x, row_y, i in zip(x.tolist(), y.tolist(), indices):
        tokens = reference_tokens(expected_numbers(ds, i), 256, 2)
        assert row_x == tokens[:-1] and row_y == tokens[1:]


def test_batch_with_digits_on_the_torch_path():
    ds = small_dataset(**{**NON_POWER_OF_TWO, "base": 16, "digits": 5})
    indices = np.arange(len(ds))
    tokens = to_tokens(ds.numbers(indices, device="cpu"), 16, 5)
    x, y = ds.batch(indices, "cpu")
    assert torch.equal(x, tokens[:, :-1]) and torch.equal(y, tokens[:, 1:])
    assert int(x.max()) < 16


def test_combos_share_a_and_c():
    ds = small_dataset(combos=[Combo("LCG"), Combo("XSLRR", 3)])
    per_combo = len(ds) // 2
    j0, a0, c0, e0 = ds.locate(np.arange(per_combo))
    j1, a1, c1, e1 = ds.locate(np.arange(per_combo) + per_combo)
    assert set(j0.tolist()) == {0} and set(j1.tolist()) == {1}
    assert np.array_equal(a0, a1) and np.array_equal(c0, c1) and np.array_equal(e0, e1)


def test_for_combo_gives_the_same_sequences_as_the_combined_dataset():
    ds = small_dataset()
    per_combo = len(ds) // len(ds.combos)
    for j in range(len(ds.combos)):
        alone = ds.for_combo(j)
        assert alone.combos == [ds.combos[j]] and len(alone) == per_combo
        assert np.array_equal(alone.numbers(np.arange(per_combo)), ds.numbers(np.arange(per_combo) + j * per_combo))


def _sequences_by_key(ds):
    rows = ds.numbers(np.arange(len(ds)))
    j, ia, ic, ex = ds.locate(np.arange(len(ds)))
    keys = zip(j.tolist(), ds.a_values[ia].tolist(), ds.c_values[ic].tolist(), ex.tolist())
    return {key: row for key, row in zip(keys, rows.tolist())}


def test_a_sequence_depends_only_on_seed_modulus_combo_a_c_and_example():
    ds = small_dataset()
    reordered = small_dataset(a_values=ds.a_values[::-1], c_values=ds.c_values[[2, 0, 1]])
    subset = small_dataset(a_values=ds.a_values[2:3], c_values=ds.c_values[1:])
    original = _sequences_by_key(ds)
    assert _sequences_by_key(reordered) == original
    assert all(original[key] == row for key, row in _sequences_by_key(subset).items())


def test_start_states_change_with_seed_modulus_combo_and_example():
    a, c = np.arange(1, 2001) * 4 + 1, np.full(2000, 12345)
    base = start_states(5, 2**40, 1, a, c, 0)
    for changed in (start_states(6, 2**40, 1, a, c, 0), start_states(5, 2**40 + 2, 1, a, c, 0),
                    start_states(5, 2**40, 2, a, c, 0), start_states(5, 2**40, 1, a, c, 1)):
        assert np.mean(changed == base) < 0.01


@pytest.mark.parametrize("m", [2, 1000, 2**18, 3**30, 2**63 - 1])
def test_start_states_lie_in_0_to_m_and_look_uniform(m):
    rng = np.random.default_rng(0)
    n = 60_000
    s0 = start_states(7, m, 3, rng.integers(0, 2**40, n), rng.integers(0, 2**40, n), rng.integers(0, 4, n))
    assert s0.dtype == np.int64 and s0.min() >= 0 and s0.max() < m
    bins = min(m, 20)
    counts = np.bincount((s0.astype(object) * bins // m).astype(np.int64), minlength=bins)
    expected = n / bins
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 3 * bins + 20, counts  # far below what a skewed or constant hash gives


def test_start_state_zero_is_possible():
    # s0 is uniform on [0, m): for m = 2 about half the start states are 0.
    s0 = start_states(1, 2, 0, np.arange(1000), 3, 0)
    assert 400 < np.sum(s0 == 0) < 600


def test_readme_dataset_stores_only_the_a_and_c_lists():
    split = split_ac(2**18, 1024, 1024, 128, 64, np.random.default_rng(1))
    ds = PRNGDataset(2**18, [Combo("XSLRR", 3, 9)], split.train_a, split.train_c, n_example=1, seq_len=513,
                     base=512, digits=1, data_seed=1)
    assert len(ds) == 1_048_576
    assert ds.a_values.size + ds.c_values.size == 2048
    x, y = ds.batch(np.arange(512) * 2048)
    assert x.shape == y.shape == (512, 512) and int(x.max()) < 512


# ---------------------------------------------------------------------------------------------------
# EpochOrder: permutation per epoch, deterministic, rank shares.

def epoch(order, e):
    return np.concatenate([order.indices(e * order.per_epoch + i) for i in range(order.per_epoch)])


def test_each_epoch_is_a_permutation_without_its_tail():
    order = EpochOrder(1000, 64, main_seed=3)
    assert order.per_epoch == 15
    for e in range(3):
        seen = epoch(order, e)
        assert len(seen) == 960 and len(set(seen.tolist())) == 960  # each index at most once
        assert seen.min() >= 0 and seen.max() < 1000


def test_epoch_order_is_deterministic_and_epochs_differ():
    first, again, other_seed = EpochOrder(1000, 64, 3), EpochOrder(1000, 64, 3), EpochOrder(1000, 64, 4)
    assert np.array_equal(epoch(first, 0), epoch(again, 0))
    assert not np.array_equal(epoch(first, 0), epoch(first, 1))
    assert not np.array_equal(epoch(first, 0), epoch(other_seed, 0))


def test_epoch_order_is_a_pure_function_of_the_micro_step():
    walked = EpochOrder(1000, 64, 3)
    for step in range(40):
        walked.indices(step)
    resumed = EpochOrder(1000, 64, 3)
    for step in (37, 2, 16, 37):  # jumping back and forth, as a resume does
        assert np.array_equal(resumed.indices(step), walked.indices(step))


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_split_the_single_process_batch(world_size):
    single = EpochOrder(1000, 24 * world_size, main_seed=9)
    ranks = [EpochOrder(1000, 24, main_seed=9, rank=r, world_size=world_size) for r in range(world_size)]
    for step in (0, 1, single.per_epoch - 1, single.per_epoch, 3 * single.per_epoch + 2):
        shares = [r.indices(step) for r in ranks]
        assert all(len(s) == 24 for s in shares)
        assert len(set(np.concatenate(shares).tolist())) == 24 * world_size  # disjoint
        assert np.array_equal(np.concatenate(shares), single.indices(step))


def test_epoch_order_needs_one_global_batch():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        EpochOrder(100, 64, 0, rank=0, world_size=2)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n, batch_size", [(50, 7), (50, 3), (101, 16), (3, 2), (8192, 500)])
def test_eval_shards_cover_every_index_once(world_size, n, batch_size):
    batches = [list(eval_shards(n, batch_size, rank, world_size)) for rank in range(world_size)]
    flat = np.concatenate([b for rank in batches for b in rank]) if n else np.array([])
    assert flat.tolist() == list(range(n))
    assert all(1 <= len(b) <= batch_size for rank in batches for b in rank)
