"""The measures of the papers' claims, on arrays whose answers are known: per-bit accuracy by position,
the two definitions of the context needed, the embedding labels and their correlations with principal
components. Expected values are counted by hand or by plain Python written independently of the code."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from utils.analysis import bit_accuracy, embeddings, positions, scaling
from utils.analysis.bit_accuracy import Part
from utils.data import Combo, PRNGDataset
from utils.distributed import DistInfo
from utils.evaluation import evaluate


# --------------------------------------------------------------------------------------------------
# Which parts are measured

def test_a_power_of_two_lcg_is_measured_on_its_n_bits():
    assert bit_accuracy.parts_of("LCG", 256) == ([Part("low_bits", j) for j in range(8)]
                                                 + [Part("bit", j) for j in range(8)])


@pytest.mark.parametrize("kind,m,k,w", [("TLCG", 256, 1, 1), ("TLCG", 1000, 3, 3), ("XSLRR", 1024, None, 5),
                                        ("XSHRR", 4096, 6, 6)])
def test_truncated_and_pcg_outputs_are_measured_on_their_k_output_bits(kind, m, k, w):
    parts = bit_accuracy.parts_of(kind, m, k)
    assert [p.index for p in parts if p.kind == "low_bits"] == list(range(w))
    assert [p.index for p in parts if p.kind == "bit"] == list(range(w))


def test_an_lcg_whose_modulus_is_not_a_power_of_two_is_measured_per_prime_power():
    # 360 = 2^3 * 3^2 * 5
    assert [(p.prime, p.index) for p in bit_accuracy.parts_of("LCG", 360)] == [(2, 1), (2, 2), (2, 3), (3, 1), (3, 2),
                                                                                (5, 1)]
    assert {p.kind for p in bit_accuracy.parts_of("LCG", 251)} == {"mod_prime_power"}


# --------------------------------------------------------------------------------------------------
# Per-part accuracy

def test_per_bit_accuracy_of_a_hand_made_example():
    # position 1: predicted 5 = 101b for 7 = 111b (bits 0 and 2 right, bit 1 wrong);
    # position 2: predicted 6 for 6 (all right) in one sequence, -1 (no prediction) in the other.
    numbers = np.array([[0, 7, 6], [0, 7, 6]])
    pred = np.array([[5, 6], [5, -1]])
    parts = [Part("low_bits", j) for j in range(3)] + [Part("bit", j) for j in range(3)]
    acc = bit_accuracy.accuracy(pred, numbers, parts)
    np.testing.assert_array_equal(acc[:, 0], [1, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(acc[:, 1], [0.5] * 6)


def plain_part_right(pred: int, target: int, part: Part) -> bool:
    """The part's definition on Python ints and binary strings, written out."""
    if pred < 0:
        return False
    if part.kind == "mod_prime_power":
        return pred % part.prime**part.index == target % part.prime**part.index
    p, t = format(pred, "064b")[::-1], format(target, "064b")[::-1]  # p[j] is bit j
    if part.kind == "bit":
        return p[part.index] == t[part.index]
    return p[:part.index + 1] == t[:part.index + 1]


@pytest.mark.parametrize("kind,m,k", [("LCG", 256, None), ("LCG", 360, None), ("TLCG", 512, 4), ("LCG", 2**40, None)])
def test_per_part_accuracy_agrees_with_a_plain_loop(kind, m, k):
    rng = np.random.default_rng(m)
    top = m if kind == "LCG" else 2**k
    numbers = rng.integers(0, top, (40, 9))
    # predictions near the targets (so that low parts are often right), some beyond the values, some missing
    pred = numbers[:, 1:] ^ rng.integers(0, 8, (40, 8)) * (1 << rng.integers(0, 4, (40, 8)))
    pred = np.where(rng.random((40, 8)) < 0.1, -1, pred)
    pred = np.where(rng.random((40, 8)) < 0.1, pred + 3 * top, pred)
    parts = bit_accuracy.parts_of(kind, m, k)
    acc = bit_accuracy.accuracy(pred, numbers, parts)
    for i, part in enumerate(parts):
        for p in range(8):
            right = [plain_part_right(int(pred[b, p]), int(numbers[b, p + 1]), part) for b in range(40)]
            assert acc[i, p] == sum(right) / 40, (part, p)


def test_the_rows_carry_every_part_at_every_position():
    parts = bit_accuracy.parts_of("LCG", 12)
    acc = np.arange(len(parts) * 4, dtype=float).reshape(len(parts), 4) / 100
    rows = pd.DataFrame(bit_accuracy.rows("model", 12, "LCG", parts, acc, 7), columns=bit_accuracy.COLUMNS)
    assert len(rows) == 3 * 4 and (rows.sequences == 7).all()
    mod9 = rows.query("prime == 3 and index == 1").sort_values("position")
    assert mod9.kind.unique().tolist() == ["mod_prime_power"] and mod9.position.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(mod9.accuracy, acc[2])


# --------------------------------------------------------------------------------------------------
# Model predictions: teacher-forced digits, as the training's number accuracy

class TokenMap(torch.nn.Module):
    """A stand-in model whose logits put all weight on f(input token) (a vocabulary of `vocab`)."""

    def __init__(self, f, vocab):
        super().__init__()
        self.f, self.vocab = f, vocab

    def forward(self, idx):
        return torch.nn.functional.one_hot(self.f(idx) % self.vocab, self.vocab).float(), None


@pytest.mark.parametrize("digits,base,vocab", [(1, 64, 64), (2, 8, 8), (3, 4, 6)])
def test_model_predictions_decode_teacher_forced_digits(digits, base, vocab):
    m, seq_len = 64, 7
    ds = PRNGDataset(m, [Combo("LCG")], [5, 9, 13], [3, 7], 2, seq_len, base, digits, 4)
    model = TokenMap(lambda x: 3 * x + 1, vocab)
    pred, numbers = positions.model_predictions(model, ds, torch.device("cpu"), torch.float32, batch_size=5)
    np.testing.assert_array_equal(numbers, ds.numbers(np.arange(len(ds))))
    for b in range(len(ds)):
        tokens = [(int(v) // base**i) % base for v in numbers[b] for i in range(digits)]  # least significant first
        guessed = [(3 * t + 1) % vocab for t in tokens[:-1]]  # the guess of tokens[i + 1], given tokens[: i + 1]
        for p in range(1, seq_len):
            mine = guessed[p * digits - 1:(p + 1) * digits - 1]
            expected = sum(t * base**i for i, t in enumerate(mine)) if max(mine) < base else -1
            assert pred[b, p - 1] == expected
    # exactly right where every digit is: the number accuracy of the training's evaluation
    official = evaluate(model, ds, [np.arange(len(ds))], info=DistInfo(device=torch.device("cpu")),
                        dtype=torch.float32, digits=digits, positions=True)["num_acc"]
    np.testing.assert_array_equal((pred == numbers[:, 1:]).mean(0), official)


def test_a_model_that_is_always_right_is_right_in_every_part():
    m, a, c = 256, 5, 3
    ds = PRNGDataset(m, [Combo("LCG")], [a], [c], 3, 10, m, 1, 1)
    pred, numbers = positions.model_predictions(TokenMap(lambda x: a * x + c, m), ds, torch.device("cpu"),
                                                torch.float32)
    assert (bit_accuracy.accuracy(pred, numbers, bit_accuracy.parts_of("LCG", m)) == 1).all()


# --------------------------------------------------------------------------------------------------
# Context needed, both ways

CURVE = [0.5, 0.92, 0.85, 0.95, 0.991, 0.98, 0.995, 1.0]


@pytest.mark.parametrize("tau,reached,stays", [(0.9, 2, 4), (0.99, 5, 7), (0.995, 7, 7), (0.5, 1, 1),
                                               (1.0, 8, 8), (0.999, 8, 8)])
def test_context_reached_and_context_needed_on_a_hand_made_curve(tau, reached, stays):
    assert positions.context_reached(CURVE, tau) == reached
    assert positions.context_needed(CURVE, tau) == stays


def test_a_curve_that_reaches_tau_and_falls_back_has_no_stays_position():
    assert positions.context_reached([0.2, 0.95, 0.4], 0.9) == 2
    assert positions.context_needed([0.2, 0.95, 0.4], 0.9) is None
    assert positions.context_reached([0.2, 0.5], 0.9) is None


def test_each_definition_has_its_default_tau():
    assert positions.CONTEXT_RULES == {"stays": positions.context_needed, "reaches": positions.context_reached}
    assert positions.DEFAULT_TAU == {"stays": 0.99, "reaches": 0.9}


def write_context_csv(path, m, needed, reached):
    pd.DataFrame([{"source": "model", "m": m, "label": "XSLRR_cb3", "tau": 0.99, "context_needed": needed,
                   "reach_tau": 0.9, "context_reached": reached}]).to_csv(path, index=False)


def test_scaling_reads_the_definition_asked_for(tmp_path):
    write_context_csv(tmp_path / "a.csv", 256, 40, 8)
    write_context_csv(tmp_path / "b.csv", 1024, None, 16)
    stays = scaling.points_from(str(tmp_path / "a.csv"), 0.99, rule="stays")
    reaches = scaling.points_from(str(tmp_path / "b.csv"), 0.99, rule="reaches")
    assert (stays[0]["context_needed"], stays[0]["tau"]) == (40, 0.99)
    assert (reaches[0]["context_needed"], reaches[0]["tau"]) == (16, 0.9)
    assert scaling.points_from(str(tmp_path / "b.csv"), 0.99, rule="stays")[0]["context_needed"] is None
    # a positions/correctness file: the last row, with the tau given
    np.savez(tmp_path / "c.npz", test_m64=np.array([CURVE, CURVE[::-1]]), step=np.array([1, 2]))
    assert [p["context_needed"] for p in scaling.points_from(str(tmp_path / "c.npz"), 0.9, rule="reaches")] == [1]
    assert [p["context_needed"] for p in scaling.points_from(str(tmp_path / "c.npz"), 0.9, rule="stays")] == [None]
    pd.DataFrame([{"source": "model", "m": 64, "label": "LCG", "tau": 0.99, "context_needed": 5}]).to_csv(
        tmp_path / "old.csv", index=False)
    with pytest.raises(ValueError, match="context_reached"):
        scaling.points_from(str(tmp_path / "old.csv"), 0.9, rule="reaches")


def test_each_generator_is_compared_with_its_own_papers_law():
    lcg, pcg = scaling.paper_law("LCG"), scaling.paper_law("XSLRR_cb3")
    assert lcg["paper"] == "arXiv 2502.10390" and "secondary" in lcg["source"]
    assert pcg["paper"] == "arXiv 2510.26792" and scaling.law_value(pcg, 1024) == 16.0
    assert scaling.paper_law("TLCG") is None and scaling.paper_law("test_m256") is None


# --------------------------------------------------------------------------------------------------
# Embedding labels and correlations

def test_zero_bit_and_zero_run_labels_counted_by_hand():
    _, labels = embeddings.token_properties(16)  # 4-bit tokens
    #        t:                     0  1  4  5  6  8  9 10 15   (binary 0000 0001 0100 0101 0110 1000 1001 1010 1111)
    tokens = [0, 1, 4, 5, 6, 8, 9, 10, 15]
    assert labels["zero_bits"][tokens].tolist() == [4, 3, 3, 2, 2, 3, 2, 2, 0]
    assert labels["zero_runs_linear"][tokens].tolist() == [1, 1, 2, 2, 2, 1, 1, 2, 0]
    assert labels["zero_runs_cyclic"][tokens].tolist() == [1, 1, 1, 2, 1, 1, 1, 2, 0]


@pytest.mark.parametrize("n_tokens", [32, 20, 2])
def test_zero_run_labels_agree_with_string_counting_and_cyclic_runs_ignore_rotation(n_tokens):
    w, labels = embeddings.token_properties(n_tokens)
    for t in range(n_tokens):
        s = format(t, f"0{w}b")
        assert labels["zero_bits"][t] == s.count("0")
        assert labels["zero_runs_linear"][t] == len([r for r in s.split("1") if r])
        # on a circle: cut it just after a 1 (if any), then the string's runs are the circle's
        circle = s[s.index("1") + 1:] + s[:s.index("1") + 1] if "1" in s else s
        assert labels["zero_runs_cyclic"][t] == len([r for r in circle.split("1") if r])
    all_w = embeddings.token_properties(2**w)[1]["zero_runs_cyclic"]
    for t in range(2**w):
        rotated = ((t >> 1) | (t << (w - 1))) & (2**w - 1)
        assert all_w[t] == all_w[rotated]


def test_spearman_correlation_by_hand():
    # ranks differ by d = (-1, 1, -1, 1, 0): 1 - 6 * 4 / (5 * 24) = 0.8
    assert embeddings.pearson(embeddings.average_ranks([1, 2, 3, 4, 5]),
                              embeddings.average_ranks([2, 1, 4, 3, 5])) == pytest.approx(0.8)
    assert embeddings.average_ranks([10, 20, 20, 5]).tolist() == [2, 3.5, 3.5, 1]
    assert math.isnan(embeddings.pearson([1, 1, 1], [1, 2, 3]))


def test_components_built_from_known_labels_correlate_with_them():
    """An embedding whose first direction is 10 x popcount and second 1 x (bit 0 - bit 1), which is
    uncorrelated with popcount: PC1 is the popcount (correlation +-1 with it, -+1 with the zero bits)
    and PC2 is uncorrelated with it."""
    _, labels = embeddings.token_properties(16)
    t = np.arange(16)
    bit0_minus_bit1 = (t & 1) - ((t >> 1) & 1)
    wte = np.stack([10.0 * labels["popcount"], bit0_minus_bit1, np.zeros(16)], 1) + 3.0
    coords, ratio = embeddings.pca(wte)
    rows = pd.DataFrame(embeddings.component_correlations(coords, {n: labels[n] for n in embeddings.NUMERIC}, 2))
    r = rows.set_index(["component", "label"])
    assert abs(r.loc[(1, "popcount"), "pearson"]) == pytest.approx(1)
    assert r.loc[(1, "zero_bits"), "pearson"] == pytest.approx(-r.loc[(1, "popcount"), "pearson"])
    assert abs(r.loc[(1, "popcount"), "spearman"]) == pytest.approx(1)
    assert r.loc[(2, "popcount"), "pearson"] == pytest.approx(0, abs=1e-9)
    for (component, label), row in r.iterrows():  # against numpy's and scipy's own implementations
        x = coords[:, component - 1]
        assert row.pearson == pytest.approx(np.corrcoef(x, labels[label])[0, 1])
        assert row.spearman == pytest.approx(stats.spearmanr(x, labels[label]).statistic)
    assert len(rows) == 2 * 5 and ratio[2] == pytest.approx(0, abs=1e-12)
