"""Generators: formulas, validation, batch and torch paths."""

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.reference import reference_sequence, reference_tokens
from utils.params import multiplier_step
from utils.prng import KINDS, bit_length, effective_bits, generate, max_output, validate

# ---------------------------------------------------------------------------------------------------
# The original's samples, from the start state s0 it drew.

ORIGINAL_SAMPLES = [
    # kind, m, cb, k, a, c, s0, first 12 tokens (digits 1: tokens are the outputs)
    ("XSLRR", 2**18, 3, 9, 65541, 261133, 173557, [332, 237, 313, 259, 112, 54, 44, 464, 499, 80, 125, 150]),
    ("XSHRR", 2**16, 3, 8, 4101, 12345, 43188, [159, 235, 159, 201, 243, 38, 102, 15, 170, 119, 122, 171]),
    ("RR", 2**16, 3, 8, 5, 3, 22538, [14, 140, 211, 35, 206, 10, 81, 43, 191, 247, 175, 189]),
    ("TLCG", 2**16, 0, 8, 4101, 12345, 54623, [75, 231, 134, 111, 14, 121, 29, 35, 80, 129, 8, 124]),
    ("XSHRS", 2**20, 2, 8, 4101, 12345, 220599, [233, 249, 83, 29, 87, 238, 5, 180, 44, 106, 165, 226]),
    ("RS", 2**16, 2, 8, 4101, 12345, 10141, [201, 250, 116, 144, 235, 25, 4, 54, 70, 192, 49, 180]),
]


@pytest.mark.parametrize("kind, m, cb, k, a, c, s0, tokens", ORIGINAL_SAMPLES, ids=[s[0] for s in ORIGINAL_SAMPLES])
def test_the_originals_samples(kind, m, cb, k, a, c, s0, tokens):
    assert generate(kind, m, a, c, s0, 12, control_bits=cb, bits_to_keep=k).tolist() == tokens
    assert reference_sequence(kind, m, a, c, s0, 12, cb, k) == tokens


def test_the_originals_lcg_sample_in_two_base_256_digits():
    values = generate("LCG", 2**16, 4101, 12345, 175, 513)
    assert values[0] == 9124  # the first output is s1 = (a*s0 + c) mod m, never s0
    tokens = reference_tokens(values.tolist(), base=256, digits=2)
    assert len(tokens) == 1026
    assert tokens[:12] == [164, 35, 109, 34, 90, 172, 251, 45, 32, 198, 217, 14]


# ---------------------------------------------------------------------------------------------------
# Property: the vectorized generator equals the per-sequence reference for any valid parameters.

moduli = st.one_of(
    st.integers(2, 62).map(lambda e: 2**e),  # powers of two
    st.integers(2, 2**62),  # anything up to 2^62 (mostly not powers of two)
    st.integers(2**62 + 1, 2**63 - 1),  # n = 63: the double-and-add mulmod path
    st.integers(2, 2**20),  # small moduli, where the shift/rotation edge cases live
)


@st.composite
def valid_generator(draw, kind, modulus=moduli):
    """(m, cb, k) that validate() accepts, built directly from its rules (shifts >= 0, bits inside the
    state, no constant bits)."""
    m = draw(modulus)
    n = bit_length(m)
    if kind == "LCG":
        return m, 0, None
    if kind == "TLCG":
        return m, 0, draw(st.integers(1, n))
    if kind == "XSLRR":
        m = max(m, 3)  # n >= 2, so the output has at least one bit
        return m, draw(st.integers(0, bit_length(m) // 2)), draw(st.none() | st.integers(1, 64))
    cb = draw(st.integers(0, 6))
    low, high = {
        "RS": (1, n - cb - 2**cb + 1),
        "RR": (2**cb, n - cb),
        "XSHRR": (max(cb + 1, 2 - cb), min(n - cb - 1, (n + cb) // 2)),
        "XSHRS": (cb + 2**cb, (n + cb) // 2),
    }[kind]
    if low > high:  # no valid k for this cb: fall back to cb = 0, valid for every n >= 2
        cb = 0
        low, high = {"RS": (1, n), "RR": (1, n), "XSHRR": (2, min(n - 1, n // 2)), "XSHRS": (1, n // 2)}[kind]
    assume(low <= high)  # n too small for this kind at all (XSHRR needs n >= 4)
    return m, cb, draw(st.integers(low, high))


@st.composite
def generator_case(draw, kind, rows=1):
    m, cb, k = draw(valid_generator(kind))
    validate(kind, m, cb, k)  # the strategy only builds valid parameters
    values = st.integers(0, m - 1)
    acs = draw(st.lists(st.tuples(values, values, values), min_size=rows, max_size=rows))
    length = draw(st.integers(1, 40))
    return m, cb, k, acs, length


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TORCH_PROPERTY = settings(PROPERTY, max_examples=40)  # each torch op costs more than numpy on tiny arrays


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(data=st.data())
def test_generate_scalar_matches_reference(kind, data):
    m, cb, k, [(a, c, s0)], length = data.draw(generator_case(kind))
    got = generate(kind, m, a, c, s0, length, control_bits=cb, bits_to_keep=k)
    assert got.dtype == np.int64 and got.shape == (length,)
    assert got.tolist() == reference_sequence(kind, m, a, c, s0, length, cb, k)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(data=st.data())
def test_generate_rows_match_reference(kind, data):
    rows = data.draw(st.integers(1, 6))
    m, cb, k, acs, length = data.draw(generator_case(kind, rows))
    a, c, s0 = (np.array(v, dtype=np.int64) for v in zip(*acs))
    got = generate(kind, m, a, c, s0, length, control_bits=cb, bits_to_keep=k)
    assert got.shape == (rows, length)
    for row, (ai, ci, si) in zip(got.tolist(), acs):
        assert row == reference_sequence(kind, m, ai, ci, si, length, cb, k)


@pytest.mark.parametrize("kind", KINDS)
@TORCH_PROPERTY
@given(data=st.data())
def test_torch_path_matches_numpy(kind, data):
    rows = data.draw(st.integers(1, 6))
    m, cb, k, acs, length = data.draw(generator_case(kind, rows))
    a, c, s0 = (np.array(v, dtype=np.int64) for v in zip(*acs))
    on_host = generate(kind, m, a, c, s0, length, control_bits=cb, bits_to_keep=k)
    on_device = generate(kind, m, a, c, s0, length, control_bits=cb, bits_to_keep=k, device="cpu")
    assert isinstance(on_device, torch.Tensor) and on_device.dtype == torch.int64
    assert on_device.tolist() == on_host.tolist()
    for row, (ai, ci, si) in zip(on_device.tolist(), acs):
        assert row == reference_sequence(kind, m, ai, ci, si, length, cb, k)


def test_generate_accepts_python_ints_beyond_int32():
    m = 2**63 - 25  # the largest prime below 2^63
    a, c, s0 = m - 2, m - 3, m - 1
    assert generate("LCG", m, a, c, s0, 5).tolist() == reference_sequence("LCG", m, a, c, s0, 5)


# ---------------------------------------------------------------------------------------------------
# Validation: each rule on both sides of its boundary, the error naming the rule.

BOUNDARIES = [
    # kind, m, cb, k, rule (None: valid). n = 16 unless m says otherwise.
    ("TLCG", 2**16, 0, 1, None),
    ("TLCG", 2**16, 0, 0, "1 <= bits_to_keep <= n"),
    ("TLCG", 2**16, 0, 16, None),
    ("TLCG", 2**16, 0, 17, "1 <= bits_to_keep <= n"),
    ("RS", 2**16, 2, 11, None),
    ("RS", 2**16, 2, 12, "n >= k + cb + 2^cb - 1"),  # the original's weaker n > 2^cb - 1 + k let this through
    ("RS", 2**16, 3, 6, None),
    ("RS", 2**16, 3, 7, "n >= k + cb + 2^cb - 1"),
    ("RR", 2**16, 3, 8, None),
    ("RR", 2**16, 3, 7, "k >= 2^cb"),
    ("RR", 2**16, 2, 14, None),
    ("RR", 2**16, 2, 15, "n >= cb + k"),
    ("XSHRR", 2**16, 3, 4, None),
    ("XSHRR", 2**16, 3, 3, "k > cb"),
    ("XSHRR", 2**16, 6, 9, None),
    ("XSHRR", 2**16, 6, 10, "n > cb + k"),
    ("XSHRR", 2**16, 2, 9, None),
    ("XSHRR", 2**16, 2, 10, "n >= 2k - cb"),
    ("XSHRR", 2**16, 0, 2, None),
    ("XSHRR", 2**16, 0, 1, "k + cb >= 2"),
    ("XSHRS", 2**16, 2, 6, None),
    ("XSHRS", 2**16, 2, 5, "k - cb - 2^cb + 1 >= 1"),
    ("XSHRS", 2**16, 2, 9, None),
    ("XSHRS", 2**16, 2, 10, "n >= 2k - cb"),
    ("XSLRR", 2**16, 8, None, None),
    ("XSLRR", 2**16, 9, None, "cb <= n//2"),
    ("XSLRR", 2**17, 8, None, None),  # odd n = 17: n//2 = 8
    ("XSLRR", 2**17, 9, None, "cb <= n//2"),
    ("XSLRR", 3, 0, None, None),  # n = 2: one output bit
    ("XSLRR", 2, 0, None, "needs n >= 2"),  # n = 1: n//2 = 0 output bits
    ("LCG", 2, 0, None, None),
    ("LCG", 1, 0, None, "2 <= m < 2^63"),
    ("LCG", 2**63 - 1, 0, None, None),
    ("LCG", 2**63, 0, None, "2 <= m < 2^63"),
    ("XSLRR", 2**16, -1, None, "must be >= 0"),
    ("RS", 2**16, -1, 8, "must be >= 0"),
    ("LCG", 2**16, 1, None, "no control bits"),
    ("TLCG", 2**16, 1, 8, "no control bits"),
]


@pytest.mark.parametrize("kind, m, cb, k, rule", BOUNDARIES,
                         ids=[f"{b[0]}-m{b[1]}-cb{b[2]}-k{b[3]}-{'ok' if b[4] is None else 'bad'}" for b in BOUNDARIES])
def test_validation_rule_boundaries(kind, m, cb, k, rule):
    if rule is None:
        validate(kind, m, cb, k)
        assert len(generate(kind, m, 1, 1, 0, 4, control_bits=cb, bits_to_keep=k)) == 4
    else:
        with pytest.raises(ValueError, match=re.escape(rule)):
            validate(kind, m, cb, k)
        with pytest.raises(ValueError, match=re.escape(rule)):
            generate(kind, m, 1, 1, 0, 4, control_bits=cb, bits_to_keep=k)


def test_xorshift_by_zero_is_why_xshrr_needs_k_plus_cb_at_least_2():
    # k = 1, cb = 0 passes the three geometric rules, but xs = (k + cb)//2 = 0 and s ^ (s >> 0) = 0.
    assert set(reference_sequence("XSHRR", 2**16, 4101, 12345, 7, 200, 0, 1)) == {0}
    with pytest.raises(ValueError, match=re.escape("k + cb >= 2")):
        validate("XSHRR", 2**16, 0, 1)


@pytest.mark.parametrize("name, a, c, s0", [
    ("a", 2**16, 1, 0), ("a", -1, 1, 0),
    ("c", 5, 2**16, 0), ("c", 5, -1, 0),
    ("s0", 5, 1, 2**16), ("s0", 5, 1, -1),
])
def test_a_c_s0_must_lie_in_0_to_m(name, a, c, s0):
    with pytest.raises(ValueError, match=rf"{name} must satisfy 0 <= {name} < m=65536"):
        generate("LCG", 2**16, a, c, s0, 4)


def test_a_c_s0_at_the_edges_of_the_range_are_valid():
    m = 2**16
    assert generate("LCG", m, m - 1, m - 1, m - 1, 3).tolist() == reference_sequence("LCG", m, m - 1, m - 1, m - 1, 3)
    assert generate("LCG", m, 0, 0, 0, 3).tolist() == [0, 0, 0]


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown generator type 'PCG64'"):
        validate("PCG64", 2**16, 0, 8)


def test_kinds_are_case_insensitive():
    expected = generate("XSLRR", 2**18, 65541, 261133, 173557, 12, control_bits=3)
    for spelling in ("xslrr", "XsLrR", " XSLRR "):
        assert generate(spelling, 2**18, 65541, 261133, 173557, 12, control_bits=3).tolist() == expected.tolist()


def test_length_must_be_positive():
    with pytest.raises(ValueError, match="length must be >= 1"):
        generate("LCG", 16, 5, 3, 0, 0)


# ---------------------------------------------------------------------------------------------------
# XSLRR (always n//2 output bits) and the exact bit length.

def test_xslrr_ignores_bits_to_keep():
    m, a, c, s0 = 2**18, 65541, 261133, 173557
    outputs = {tuple(generate("XSLRR", m, a, c, s0, 200, control_bits=3, bits_to_keep=k).tolist())
               for k in (None, 1, 9, 18, 40)}
    assert len(outputs) == 1
    assert effective_bits("XSLRR", m, 18) == 9 and max_output("XSLRR", m, 18) == 511


@pytest.mark.parametrize("m", [2**16, 2**17, 3**11, 1000])
def test_xslrr_outputs_fit_in_half_the_state(m):
    half = bit_length(m) // 2
    out = generate("XSLRR", m, multiplier_step(m) + 1, 3, 1, 5000, control_bits=2)
    assert out.min() >= 0 and out.max() < 2**half
    assert out.max() >= 2**(half - 1)  # ... and reach the top one of those n//2 bits


@pytest.mark.parametrize("m, n", [
    (2, 1), (3, 2), (4, 2), (5, 3), (2**40, 40), (2**40 + 1, 41), (2**40 - 1, 40),
    (2**53 + 1, 54),  # a float log2 rounds this to 53
    (2**62, 62), (2**62 + 1, 63), (2**63 - 1, 63),
])
def test_bit_length_is_exact_ceil_log2(m, n):
    assert bit_length(m) == n
    assert 2**(n - 1) < m <= 2**n


def test_non_power_of_two_state_uses_ceil_log2_bits():
    # TLCG with k = n keeps the whole state, so it equals the LCG only if n is ceil(log2 m) exactly.
    m = 2**40 + 1
    lcg = generate("LCG", m, 3, 7, m - 1, 50)
    assert generate("TLCG", m, 3, 7, m - 1, 50, bits_to_keep=41).tolist() == lcg.tolist()
    assert generate("TLCG", m, 3, 7, m - 1, 50, bits_to_keep=40).tolist() == (lcg >> 1).tolist()


# ---------------------------------------------------------------------------------------------------
# Validation's intent: valid parameters emit no constant bits.

def _bits_that_vary(values, width):
    """1 for each of the low `width` bits that takes both values somewhere in `values`, else 0."""
    bits = (np.asarray(values)[:, None] >> np.arange(width)) & 1
    return (bits.min(axis=0) != bits.max(axis=0)).astype(int).tolist()


@pytest.mark.parametrize("kind, m, cb, k", [
    ("XSLRR", 2**16, 2, None),
    ("XSLRR", 2**17, 3, None),
    ("RS", 2**16, 2, 8),
    ("RS", 2**16, 2, 11),  # at the boundary of its rule
    ("RR", 2**16, 3, 8),
    ("RR", 2**16, 2, 14),
    ("XSHRR", 2**16, 3, 8),
    ("XSHRR", 2**16, 0, 2),
    ("XSHRS", 2**20, 2, 8),
    ("XSHRS", 2**16, 2, 9),
    ("TLCG", 2**16, 0, 8),
])
def test_no_output_bit_is_constant(kind, m, cb, k):
    out = generate(kind, m, 4101, 12345, 1, 8192, control_bits=cb, bits_to_keep=k)
    width = effective_bits(kind, m, k)
    assert _bits_that_vary(out, width) == [1] * width


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "LCG"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_no_output_bit_is_constant_over_a_full_period(kind, data):
    """Power-of-two m, Hull-Dobell a, odd c: one period visits every state, so every bit must vary."""
    m, cb, k = data.draw(valid_generator(kind, st.integers(4, 13).map(lambda e: 2**e)))
    a = 4 * data.draw(st.integers(1, m // 4 - 1)) + 1
    c = 2 * data.draw(st.integers(1, m // 2 - 1)) + 1
    out = generate(kind, m, a, c, 0, m, control_bits=cb, bits_to_keep=k)
    width = effective_bits(kind, m, k)
    assert _bits_that_vary(out, width) == [1] * width
