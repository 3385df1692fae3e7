"""analyze.py and utils/analysis: tiny models trained here in seconds, every subcommand run from its
command line, and the baselines against the algebra and a plain-Python enumeration.

The scripts run in this process through their `main(argv)` (a process costs seconds of imports on these
machines); analyze.py's bad input as a user sees it (a process) is in tests/test_inputs.py."""
import argparse
import contextlib
import glob
import io
import itertools
import math
import os
import re
import subprocess
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

import analyze as analyze_cli
import curriculum_lowmem
import prng_train_lowmem
from tests.helpers import TINY as TINY_SIZES, read_eval
from utils import prng, settings
from utils.analysis import baselines, loading, positions
from utils.gpt2 import GPTConfig, build_model, strip_compile_prefix
from utils.params import multiplier_count, multiplier_step, split_ac

TINY = [*TINY_SIZES, "--num_steps", "5", "--eval_interval", "5"]
MAINS = {"prng_train_lowmem.py": prng_train_lowmem.main, "curriculum_lowmem.py": curriculum_lowmem.main,
         "analyze.py": analyze_cli.main}


def run(script, *args, check=True):
    """The script's main on this command line, in this process; its exit status and output as a process's."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = MAINS[script]([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code
    result = subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def analyze(*args, check=True):
    return run("analyze.py", *args, check=check)


def bad_input(capsys, *args):
    """Run analyze.py's main in this process (no interpreter start-up) on input it must refuse."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        analyze_cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    return subprocess.CompletedProcess(args, stop.value.code, "", err)


def assert_bad_input(result, *words):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def one(folder, pattern):
    found = glob.glob(os.path.join(str(folder), pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.fixture(scope="module")
def lcg_run(finished_run):
    """LCG m=256, RoPE, params + checkpoints (steps 0, 3, 6, 7) + correctness: the suite's shared finished run."""
    return finished_run[0]


# --------------------------------------------------------------------------------------------------
# Context needed

def test_context_needed_is_the_first_position_from_which_accuracy_stays_above_tau():
    assert positions.context_needed([0.1, 1.0, 0.5, 0.995, 1.0, 1.0]) == 4
    assert positions.context_needed([1.0, 1.0]) == 1
    assert positions.context_needed([1.0, 0.5]) is None
    assert positions.context_needed([0.2, 0.95, 0.96], tau=0.9) == 2


# --------------------------------------------------------------------------------------------------
# Baselines

def random_lcg(m, n, length, rng, family=True):
    if family:
        a = rng.integers(1, multiplier_count(m) + 1, n) * multiplier_step(m) + 1
        c = np.array([v for v in rng.permutation(np.arange(3, m)) if math.gcd(int(v), m) == 1][:n])
        c = np.resize(c, n)
    else:
        a, c = rng.integers(0, m, n), rng.integers(0, m, n)
    return a, c, rng.integers(0, m, n)


@pytest.mark.parametrize("m", [256, 251])
def test_lcg_baseline_is_exact_from_position_3(m):
    # a d1 = d2 (mod m) leaves one class of a mod m/gcd(d1, m), and every one gives the same next number.
    rng = np.random.default_rng(m)
    a, c, s0 = random_lcg(m, 200, 20, rng, family=m == 256)
    x = prng.generate("LCG", m, a, c, s0, 20)
    acc = baselines.accuracy(baselines.lcg_known_m(x, m), x)
    assert np.all(acc[2:] == 1.0)
    assert acc[1] < 0.5 and acc[0] < 0.5  # two numbers do not determine a


def plain_family_predictions(kind, m, cb, k, x):
    """Majority next output over every (a, c, s0) of the family consistent with the prefix, in plain Python."""
    L = multiplier_step(m)
    a_values = [kk * L + 1 for kk in range(1, m // L)]
    c_values = [c for c in range(3, m) if math.gcd(c, m) == 1]
    out = [int(v) for v in prng.output(kind, np.arange(m), m, cb, k)]
    T = len(x)
    seqs = []
    for a, c, s in itertools.product(a_values, c_values, range(m)):
        seq = []
        for _ in range(T):
            s = (a * s + c) % m
            seq.append(out[s])
        seqs.append(seq)
    preds = []
    for p in range(1, T):
        votes = Counter(seq[p] for seq in seqs if seq[:p] == list(x[:p]))
        best = max(votes.values())
        preds.append(min(v for v, n in votes.items() if n == best))
    return preds


@pytest.mark.parametrize("kind,cb,k", [("XSLRR", 1, None), ("TLCG", 0, 3), ("LCG", 0, None)])
def test_family_baseline_agrees_with_plain_enumeration(kind, cb, k):
    m, T = 32, 6
    rng = np.random.default_rng(7)
    a, c, s0 = random_lcg(m, 4, T, rng)
    x = prng.generate(kind, m, a, c, s0, T, control_bits=cb, bits_to_keep=k)
    fast = baselines.family(x, kind, m, cb, k)
    for row in range(len(x)):
        assert fast[row].tolist() == plain_family_predictions(kind, m, cb, k, x[row].tolist())


@pytest.mark.parametrize("kind,cb,k", [("TLCG", 0, 5), ("XSLRR", 2, None)])
def test_family_baseline_reaches_accuracy_1_at_m_1024(kind, cb, k):
    m = 1024
    rng = np.random.default_rng(3)
    a, c, s0 = random_lcg(m, 32, 48, rng)
    x = prng.generate(kind, m, a, c, s0, 48, control_bits=cb, bits_to_keep=k)
    acc = baselines.accuracy(baselines.family(x, kind, m, cb, k), x)
    assert acc[-8:].min() == 1.0
    assert acc[0] < 0.5


# --------------------------------------------------------------------------------------------------
# eval

def curves(folder):
    return pd.read_csv(os.path.join(folder, "accuracy_by_position.csv"))


def test_eval_regenerates_the_runs_test_set(lcg_run, tmp_path):
    ckpt = one(lcg_run, "checkpoint_*_step7.pt")
    result = analyze("eval", ckpt, "--device", "cpu", "--baselines", "lcg,family", "--out", tmp_path / "a")
    assert "context needed" in result.stdout
    df = curves(tmp_path / "a")
    model = df[df.source == "model"].sort_values("position")
    # The training script's own end-of-run pass over its test set (digits 1: token = number positions).
    with np.load(one(lcg_run, "correctness_*.npz")) as saved:
        np.testing.assert_allclose(model.accuracy.to_numpy(), saved["test_correct"], atol=1e-12)
    assert (model.sequences == 4).all() and model.position.tolist() == list(range(1, 9))
    lcg = df[df.source == "baseline_lcg"].sort_values("position").accuracy.to_numpy()
    assert np.all(lcg[2:] == 1.0)
    summary = pd.read_csv(tmp_path / "a" / "context_needed.csv").set_index("source")
    assert summary.loc["baseline_lcg", "context_needed"] == 3 and summary.loc["baseline_lcg", "context_reached"] == 3
    assert (summary.tau == 0.99).all() and (summary.reach_tau == 0.9).all()
    # Per-bit accuracy: the LCG baseline is exact from position 3 in every bit; the model's low 8 bits
    # (its predictions are tokens < 256 = m) are right exactly where its number is.
    bits = pd.read_csv(tmp_path / "a" / "bit_accuracy_by_position.csv")
    assert len(bits) == 3 * 16 * 8 and set(bits.kind) == {"low_bits", "bit"}
    lcg_bits = bits.query("source == 'baseline_lcg' and position >= 3")
    assert (lcg_bits.accuracy == 1.0).all() and len(lcg_bits) == 16 * 6
    top = bits.query("source == 'model' and kind == 'low_bits' and index == 7").sort_values("position")
    np.testing.assert_allclose(top.accuracy.to_numpy(), model.accuracy.to_numpy())
    assert os.path.getsize(tmp_path / "a" / "bit_accuracy_model_LCG_m256.png") > 1000
    roll = pd.read_csv(tmp_path / "a" / "rollout.csv")
    assert 0 <= roll.mean_exact[0] <= roll.generated[0]
    assert os.path.getsize(tmp_path / "a" / "accuracy_by_position.png") > 1000


def test_eval_reads_params_files_and_the_originals_files(lcg_run, tmp_path, capsys):
    ckpt_path = one(lcg_run, "checkpoint_*_step7.pt")
    params = one(lcg_run, "params_*.pth")
    ckpt = torch.load(ckpt_path, weights_only=True)
    # The original's layout: compiled-model keys and a pickled argparse Namespace.
    original = {"model_state_dict": {f"_orig_mod.{k}": v for k, v in ckpt["model_state_dict"].items()},
                "config": argparse.Namespace(**ckpt["config"]), "step": 7}
    torch.save(original, tmp_path / "original.pt")
    analyze("eval", ckpt_path, "--no_rollout", "--out", tmp_path / "ours")
    analyze("eval", tmp_path / "original.pt", "--no_rollout", "--out", tmp_path / "orig")
    analyze("eval", params, "--n_head", 2, "--m", 256, "--seq_len", 9, "--n_a", 4, "--n_c", 4, "--n_test_a", 2,
            "--n_test_c", 2, "--no_rollout", "--out", tmp_path / "params")
    expected = curves(tmp_path / "ours")
    pd.testing.assert_frame_equal(curves(tmp_path / "orig"), expected)
    pd.testing.assert_frame_equal(curves(tmp_path / "params"), expected)
    assert_bad_input(bad_input(capsys, "eval", params, "--m", 256, "--seq_len", 9, "--out", tmp_path / "x"),
                     "--n_head")
    assert_bad_input(bad_input(capsys, "eval", ckpt_path, "--n_head", 4, "--out", tmp_path / "x"), "n_head")


def test_eval_on_fresh_and_unseen_settings(lcg_run, tmp_path, capsys):
    ckpt = one(lcg_run, "checkpoint_*_step7.pt")
    analyze("eval", ckpt, "--m", "128,256", "--a", "5,9,13", "--c", "3,7", "--n_example", 2, "--rollout_from", 4,
            "--out", tmp_path / "u")
    df = curves(tmp_path / "u")
    assert sorted(df.m.unique()) == [128, 256] and (df.sequences == 12).all()
    roll = pd.read_csv(tmp_path / "u" / "rollout.csv")
    assert roll.start.tolist() == [4, 4] and roll.generated.tolist() == [5, 5]
    assert_bad_input(bad_input(capsys, "eval", ckpt, "--m", 512, "--out", tmp_path / "x"), "vocab")
    assert_bad_input(bad_input(capsys, "eval", ckpt, "--baselines", "magic", "--out", tmp_path / "x"), "magic")
    assert_bad_input(bad_input(capsys, "eval", tmp_path / "missing.pt", "--out", tmp_path / "x"), "not found")
    assert_bad_input(bad_input(capsys, "eval", ckpt, "--tau", "2", "--out", tmp_path / "x"), "--tau")
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------------
# eval evaluates what training evaluated: the run's settings, split and sequences, derived by the
# training's own code. Small vocabularies and 16 test sequences per curve make the model right at some
# positions, so another test set would show in the numbers.

SMALL = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--batch_size", "4", "--n_a", "3",
         "--n_c", "3", "--n_test_a", "4", "--n_test_c", "4", "--lr_trgt", "0.01", "--eval_interval", "2",
         "--save_checkpoints", "--device", "cpu"]
REPRODUCED = {  # case -> the training flags over SMALL (single-modulus script unless --custom_phases)
    "LCG": ["--type", "LCG", "--m", 32],
    "TLCG": ["--type", "TLCG", "--m", 256, "--bits_to_keep", 2],
    "RS": ["--type", "RS", "--m", 256, "--control_bits", 1, "--bits_to_keep", 2],
    "RR": ["--type", "RR", "--m", 256, "--control_bits", 1, "--bits_to_keep", 2],
    "XSHRR": ["--type", "XSHRR", "--m", 256, "--control_bits", 1, "--bits_to_keep", 2],
    "XSHRS": ["--type", "XSHRS", "--m", 256, "--control_bits", 1, "--bits_to_keep", 3],
    "XSLRR": ["--type", "XSLRR", "--m", 64, "--control_bits", 2],
    "plus_joined": ["--type", "TLCG+XSLRR", "--m", 64, "--control_bits", "1,2", "--bits_to_keep", 3],
    "curriculum": ["--type", "XSLRR", "--moduli", "64,256", "--control_bits", 1,
                   "--custom_phases", '[{"phase_steps": 2, "end_weights": [1, 1]}]'],
    "abacus": ["--type", "TLCG", "--m", 256, "--bits_to_keep", 2, "--base", 2, "--digits", 2, "--no_rope"],
    "learned_positions": ["--type", "TLCG", "--m", 256, "--bits_to_keep", 2, "--no_rope"],
}


@pytest.mark.parametrize("case", REPRODUCED)
def test_eval_of_the_final_checkpoint_reproduces_the_runs_last_evaluation(case, tmp_path, capsys):
    flags = [str(f) for f in REPRODUCED[case]]
    curriculum = "--custom_phases" in flags
    script = curriculum_lowmem if curriculum else prng_train_lowmem
    steps = [] if curriculum else ["--num_steps", "2", "--warm_steps", "0"]
    assert script.main([*SMALL, *flags, *steps, "--results_dir", str(tmp_path / "run")]) == 0
    assert analyze_cli.main(["eval", one(tmp_path / "run", "*checkpoint_*_step2.pt"), "--device", "cpu",
                             "--no_rollout", "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    model = curves(tmp_path / "a").query("source == 'model'")
    with np.load(one(tmp_path / "run", "positions_*.npz")) as saved:
        positions_row = {key: saved[key][-1] for key in saved.files if key != "step"}
    if curriculum:
        last = pd.read_csv(one(tmp_path / "run", "XSLRR_*.csv")).iloc[-1]
        expected = {(m, f"test_m{m}"): last[f"test_last_acc_m{m}"] for m in (64, 256)}
    else:
        last = read_eval(one(tmp_path / "run", "eval_*.tab")).iloc[-1]
        if "plus_joined" == case:  # each type's numbers, and together the run's test_last_acc
            per_type = pd.read_csv(one(tmp_path / "run", "per_type_eval_*.csv")).iloc[-1]
            expected = {(64, label): per_type[f"{label}_last_acc"] for label in ("TLCG", "XSLRR_cb1", "XSLRR_cb2")}
        else:
            expected = {(int(flags[flags.index("--m") + 1]), "test"): last.test_last_acc}
    assert len(model.groupby(["m", "label"])) == len(expected)
    right = 0
    for (m, key), last_accuracy in expected.items():
        curve = model[(model.m == m) & ((model.label == key) | (key.startswith("test")))].sort_values("position")
        assert curve.accuracy.iloc[-1] == last_accuracy, (m, key)
        np.testing.assert_array_equal(curve.accuracy.to_numpy(), positions_row[key])
        right += int(round((curve.accuracy * curve.sequences).sum()))
    if case == "plus_joined":  # the three types' last numbers together are the run's own test_last_acc
        lasts = model[model.position == 8]
        assert (lasts.accuracy * lasts.sequences).sum() / lasts.sequences.sum() == last.test_last_acc
    assert right > 0  # right somewhere: the comparison can tell test sets apart


@pytest.mark.parametrize("flags", [
    ["--type", "lcg", "--m", "200", "--digits", "2", "--no_rope"],  # base 2^k = 256, not m: the original's test for LCG
    ["--type", "LCG+XSLRR", "--m", "256"],  # no control bits: XSLRR takes 0, as training did
    ["--type", "XSLRR", "--m", "256", "--control_bits", "1"],  # k = n//2, base 2^k
    ["--type", "TLCG", "--m", "256", "--bits_to_keep", "3", "--base", "4", "--digits", "2", "--no_rope"],
], ids=["lcg", "joined_without_control_bits", "xslrr", "tlcg_base_4"])
def test_a_file_without_config_gets_the_training_scripts_test_set_from_the_same_flags(flags):
    sizes = ["--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--batch_size", "4", "--n_a", "4", "--n_c", "4",
             "--n_test_a", "2", "--n_test_c", "3"]
    cfg = prng_train_lowmem.setup_config(prng_train_lowmem.build_parser().parse_args([*flags, *sizes]), 1,
                                         log=lambda *a: None)
    _, trained_on = settings.datasets(cfg, settings.ac_splits(cfg))  # what the script evaluates on
    model = build_model(GPTConfig.for_run(cfg), cfg.no_rope)
    given = dict(zip(flags[::2], flags[1::2]))  # analyze.py's flags: what a params file cannot tell
    as_flags = {"n_head": 2, "m": int(given["--m"]), "seq_len": 9, "n_a": 4, "n_c": 4, "type": given["--type"],
                "control_bits": given.get("--control_bits"), "digits": int(given.get("--digits", 1)),
                "base": int(given["--base"]) if "--base" in given else None,
                "bits_to_keep": int(given["--bits_to_keep"]) if "--bits_to_keep" in given else None}
    loaded = loading.settings_from(loading.infer_shape(model.state_dict()), None, as_flags)
    sets = loading.eval_sets(loaded, n_test_a=2, n_test_c=3, log=lambda *a: None)
    test = trained_on[cfg.m]
    assert [s.label for s in sets] == [c.label for c in cfg.combos]
    for j, s in enumerate(sets):
        mine = test.for_combo(j)
        assert (s.dataset.base, s.dataset.digits, s.combo) == (cfg.base, cfg.digits, cfg.combos[j])
        everything = np.arange(len(mine))
        assert torch.equal(s.dataset.batch(everything)[0], mine.batch(everything)[0])


# --------------------------------------------------------------------------------------------------
# curves

def test_curves_reads_the_training_positions_file_and_one_in_its_format(lcg_run, tmp_path, capsys):
    analyze("curves", one(lcg_run, "positions_*.npz"), "--out", tmp_path / "train")
    table = pd.read_csv(tmp_path / "train" / "context_needed_over_training.csv")
    assert table.step.tolist() == [0, 3, 6, 7] and set(table.key) == {"test"}
    # A file written here: at step 0 never >= 0.99, at step 10 from position 5, at step 20 from position 3.
    acc = np.array([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
                    [0.0, 1.0, 0.5, 0.9, 1.0, 1.0],
                    [0.2, 0.3, 1.0, 1.0, 0.995, 1.0]])
    np.savez(tmp_path / "positions_x.npz", step=np.array([0, 10, 20]), test=acc, XSLRR_cb1=acc[::-1].copy())
    result = analyze("curves", tmp_path / "positions_x.npz", "--keys", "test", "--out", tmp_path / "mine")
    table = pd.read_csv(tmp_path / "mine" / "context_needed_over_training.csv")
    assert table.context_needed.isna().tolist() == [True, False, False]
    assert table.context_needed.tolist()[1:] == [5, 3]
    assert "context needed at step 20: 3" in result.stdout
    for name in ("curves_test.png", "context_needed_over_training.png"):
        assert os.path.getsize(tmp_path / "mine" / name) > 1000
    np.savez(tmp_path / "bad.npz", test=acc)
    assert_bad_input(bad_input(capsys, "curves", tmp_path / "bad.npz", "--out", tmp_path / "x"), "step")
    assert_bad_input(bad_input(capsys, "curves", tmp_path / "positions_x.npz", "--keys", "RR", "--out", tmp_path / "x"),
                     "RR")


# --------------------------------------------------------------------------------------------------
# embed

def test_token_properties_and_separation_score():
    from utils.analysis import embeddings
    w, props = embeddings.token_properties(8)
    assert w == 3
    assert props["popcount"].tolist() == [0, 1, 1, 2, 1, 2, 2, 3]
    assert props["lowest_bit"].tolist() == [3, 0, 1, 0, 2, 0, 1, 0]
    assert props["rotation_class"].tolist() == [0, 1, 1, 3, 1, 3, 3, 7]  # 1, 2, 4 and 3, 6, 5 rotate into each other
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    points = np.eye(4)[labels] * 10 + rng.normal(0, 0.1, (40, 4))
    assert embeddings.nearest_centroid_accuracy(points, labels) == 1.0
    assert embeddings.nearest_centroid_accuracy(rng.normal(size=(40, 4)), labels) < 0.6


def test_embed_end_to_end(lcg_run, tmp_path):
    result = analyze("embed", one(lcg_run, "params_*.pth"), "--components", 3, "--out", tmp_path)
    variance = pd.read_csv(tmp_path / "embed_variance.csv")
    assert len(variance) == 32 and abs(variance.explained_variance.sum() - 1) < 1e-9  # n_embd components
    scores = pd.read_csv(tmp_path / "embed_scores.csv")
    assert scores.property.tolist() == ["popcount", "lowest_bit", "rotation_class", "zero_bits", "zero_runs_cyclic",
                                        "zero_runs_linear"]
    assert scores.classes.tolist() == [9, 9, 36, 9, 5, 5]  # 8-bit tokens: 36 necklaces, 0 to 4 runs of zeros
    assert scores.accuracy.between(0, 1).all() and "nearest-centroid" in result.stdout
    for name in scores.property:
        assert os.path.getsize(tmp_path / f"embed_{name}.png") > 1000
    # 256 tokens in 32 dimensions: every component varies; one row per component and numeric label
    correlations = pd.read_csv(tmp_path / "embed_correlations.csv")
    assert len(correlations) == 32 * 5 and correlations.pearson.abs().max() <= 1 + 1e-12
    assert set(correlations.label) == {"popcount", "lowest_bit", "zero_bits", "zero_runs_cyclic", "zero_runs_linear"}
    np.testing.assert_allclose(correlations.query("label == 'zero_bits'").pearson.to_numpy(),
                               -correlations.query("label == 'popcount'").pearson.to_numpy())
    assert "Pearson correlation of the top 3 components" in result.stdout


# --------------------------------------------------------------------------------------------------
# layers

@pytest.fixture(scope="module")
def two_generator_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("two")
    run("prng_train_lowmem.py", "--type", "TLCG+XSLRR", "--control_bits", 1, "--bits_to_keep", 4, "--m", 256, *TINY,
        "--n_test_a", 4, "--n_test_c", 4, "--save_checkpoints", "--results_dir", d)
    return d


def test_linear_probe_separates_separable_classes():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 40)
    features = rng.normal(size=(120, 8))
    features[:, 0] += labels * 10
    assert probes_accuracy(features, labels) >= 0.95
    assert probes_accuracy(rng.normal(size=(120, 8)), labels) < 0.7


def probes_accuracy(features, labels):
    from utils.analysis import probes
    return probes.linear_probe(features, labels)


def test_layers_end_to_end(two_generator_run, lcg_run, tmp_path, capsys):
    ckpt = one(two_generator_run, "checkpoint_*_step5.pt")
    analyze("layers", ckpt, "--positions", "1,4,8", "--attention", "0,17", "--out", tmp_path)
    table = pd.read_csv(tmp_path / "layer_probe.csv")
    assert table.layer.tolist() == [0, 0, 0, 1, 1, 1] and table.position.tolist() == [1, 4, 8] * 2
    assert (table.sequences == 32).all() and (table.chance == 0.5).all() and table.accuracy.between(0, 1).all()
    with np.load(tmp_path / "attention_17.npz") as saved:
        maps = saved["attention"]
    assert maps.shape == (1, 2, 8, 8)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(maps, 1) == 0)  # causal
    assert os.path.getsize(tmp_path / "layer_probe.png") > 1000 and os.path.getsize(tmp_path / "attention_0.png") > 1000
    assert_bad_input(bad_input(capsys, "layers", one(lcg_run, "checkpoint_*_step7.pt"), "--out", tmp_path / "x"),
                     "several")


# --------------------------------------------------------------------------------------------------
# scaling

def test_scaling_fits_the_exponent(lcg_run, tmp_path, capsys):
    for i, m in enumerate([256, 1024, 4096, 16384]):
        needed = round(math.sqrt(m) / 2 * 3 * (1.1 if i % 2 else 0.9))
        pd.DataFrame([{"source": "model", "m": m, "label": "LCG", "tau": 0.99, "context_needed": needed,
                       "reach_tau": 0.9, "context_reached": 2**(i // 2) * 8},
                      {"source": "baseline_lcg", "m": m, "label": "LCG", "tau": 0.99, "context_needed": 3,
                       "reach_tau": 0.9, "context_reached": 3}]
                     ).to_csv(tmp_path / f"run{m}.csv", index=False)
    runs = [tmp_path / f"run{m}.csv" for m in (256, 1024, 4096, 16384)]
    result = analyze("scaling", *runs, "--out", tmp_path / "s")
    fit = pd.read_csv(tmp_path / "s" / "scaling_fit.csv").iloc[0]
    assert fit.points == 4 and abs(fit.exponent - 0.5) < 0.1 and 0 < fit.exponent_stderr < 0.1
    assert len(pd.read_csv(tmp_path / "s" / "scaling.csv")) == 4 and "m^0.5" in result.stdout
    assert os.path.getsize(tmp_path / "s" / "scaling.png") > 1000
    assert analyze_cli.main(["scaling", *map(str, runs), "--source", "baseline_lcg", "--out", str(tmp_path / "b")]) == 0
    assert abs(pd.read_csv(tmp_path / "b" / "scaling_fit.csv").exponent[0]) < 1e-9
    assert_bad_input(bad_input(capsys, "scaling", runs[0], "--out", tmp_path / "x"), "two or more")
    # The papers' definition: the first position reaching tau (8, 8, 16, 16: m^0.25 up to the steps)
    result = analyze("scaling", *runs, "--context_rule", "reaches", "--out", tmp_path / "r")
    table = pd.read_csv(tmp_path / "r" / "scaling.csv")
    assert table.context_needed.tolist() == [8, 8, 16, 16] and (table.tau == 0.9).all()
    assert (table.rule == "reaches").all() and table.paper_law.str.startswith("arXiv 2502.10390").all()
    fit = pd.read_csv(tmp_path / "r" / "scaling_fit.csv").iloc[0]
    assert abs(fit.exponent - 0.25) < 0.06 and fit.rule == "reaches" and "secondary summary" in result.stdout
    other_tau = pd.read_csv(runs[1]).assign(tau=0.8)
    other_tau.to_csv(tmp_path / "tau08.csv", index=False)
    assert_bad_input(bad_input(capsys, "scaling", runs[0], tmp_path / "tau08.csv", runs[2], "--out", tmp_path / "x"),
                     "different tau")


# --------------------------------------------------------------------------------------------------
# curriculum files

def test_eval_reads_a_curriculum_model_file(tmp_path):
    d = tmp_path / "cur"
    run("curriculum_lowmem.py", "--moduli", "256,64", "--custom_phases", '[{"phase_steps": 4, "end_weights": [1, 1]}]',
        *TINY_SIZES, "--eval_interval", 2, "--save_params", "--results_dir", d)
    model_file = one(d, "multi_curriculum_model_lazy_*.pt")
    loaded = loading.load_model(model_file, {}, torch.device("cpu"))
    assert loaded.settings.moduli == [64, 256] and loaded.settings.curriculum and loaded.settings.n_head == 2
    sets = loading.eval_sets(loaded.settings)
    assert [s.m for s in sets] == [64, 256]
    for i, s in enumerate(sets):  # modulus i of a curriculum draws its (a, c) from data_seed + 1000 i
        split = split_ac(s.m, 4, 4, 2, 2, np.random.default_rng(1 + 1000 * i))
        assert s.dataset.a_values.tolist() == split.test_a.tolist()
        assert s.dataset.c_values.tolist() == split.test_c.tolist()
    analyze("eval", model_file, "--no_rollout", "--out", tmp_path / "a")
    df = curves(tmp_path / "a")
    assert sorted(df.m.unique()) == [64, 256] and len(df) == 2 * 8


class NextOf(torch.nn.Module):
    """A stand-in model whose logits put all weight on f(previous token)."""

    def __init__(self, f, vocab):
        super().__init__()
        self.f, self.vocab = f, vocab

    def forward(self, idx):
        return torch.nn.functional.one_hot(self.f(idx), self.vocab).float(), None


def test_rollout_counts_exact_numbers_until_the_first_wrong_one():
    from utils.data import Combo, PRNGDataset
    m, a, c = 256, 5, 3
    ds = PRNGDataset(m, [Combo("LCG")], [a], [c], 3, 12, m, 1, 1)
    perfect = NextOf(lambda x: (a * x + c) % m, m)
    runs = positions.rollout(perfect, ds, 4, torch.device("cpu"), torch.float32)
    assert runs.tolist() == [8, 8, 8]
    # Right for the first generated number only: from then on it continues from its own output.
    numbers = ds.numbers(np.arange(3))
    second = set(numbers[:, 4].tolist())  # the first generated number
    flawed = NextOf(lambda x: torch.where(torch.isin(x, torch.tensor(sorted(second))), x, (a * x + c) % m), m)
    assert positions.rollout(flawed, ds, 4, torch.device("cpu"), torch.float32).tolist() == [1, 1, 1]


def test_family_baseline_refuses_an_enumeration_too_large_for_memory():
    x = prng.generate("TLCG", 2**14, np.array([5, 9]), np.array([3, 7]), np.array([1, 2]), 10, bits_to_keep=4)
    with pytest.raises(ValueError, match="candidates"):
        baselines.family(x, "TLCG", 2**14, 0, 4)


@pytest.mark.parametrize("digits,positions_kind", [(1, "learned"), (2, "abacus")])
def test_model_shape_comes_from_the_weights(digits, positions_kind):
    model = build_model(GPTConfig(block_size=17 * digits - 1, vocab_size=24, n_layer=3, n_head=2, n_embd=16,
                                  digits=digits), no_rope=True)
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    shape = loading.infer_shape(strip_compile_prefix(state))
    assert (shape.vocab_size, shape.n_embd, shape.n_layer, shape.positions) == (24, 16, 3, positions_kind)
    settings = loading.settings_from(shape, None, {"n_head": 2, "m": 16, "type": "TLCG", "bits_to_keep": 3})
    assert settings.digits == digits and settings.seq_len == 17 and settings.block_size == 17 * digits - 1
    rebuilt = loading.build(shape, settings, strip_compile_prefix(state), torch.device("cpu"))
    x = torch.randint(0, 24, (2, 17 * digits - 1))
    torch.testing.assert_close(rebuilt(x)[0], model(x)[0])


def test_eval_of_a_two_digit_abacus_model_matches_the_training_positions_file(tmp_path):
    d = tmp_path / "abacus"
    run("prng_train_lowmem.py", "--type", "LCG", "--m", 256, "--digits", 2, "--base", 16, "--no_rope", *TINY,
        "--save_params", "--results_dir", d)
    # A params file: n_head and the data settings as flags; the context comes from the learned positions.
    analyze("eval", one(d, "params_*.pth"), "--n_head", 2, "--m", 256, "--base", 16, "--n_a", 4, "--n_c", 4,
            "--n_test_a", 2, "--n_test_c", 2, "--rollout_from", 3, "--out", tmp_path / "a")
    model = curves(tmp_path / "a").query("source == 'model'").sort_values("position")
    with np.load(one(d, "positions_*.npz")) as saved:
        np.testing.assert_allclose(model.accuracy.to_numpy(), saved["test"][-1], atol=1e-12)
    # two base-16 digits make numbers below 256 = m: the low 8 bits are the number
    bits = pd.read_csv(tmp_path / "a" / "bit_accuracy_by_position.csv").query("kind == 'low_bits' and index == 7")
    np.testing.assert_allclose(bits.sort_values("position").accuracy.to_numpy(), model.accuracy.to_numpy())
    assert pd.read_csv(tmp_path / "a" / "rollout.csv").generated.tolist() == [6]


# --------------------------------------------------------------------------------------------------
# Bad input of every kind: one `error:` line, exit 2, before any compute where it can be known then.

@pytest.fixture(scope="module")
def bad_files(lcg_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_files")
    ckpt = torch.load(one(lcg_run, "checkpoint_*_step7.pt"), weights_only=True)
    params = torch.load(one(lcg_run, "params_*.pth"), weights_only=True)
    torch.save({**ckpt, "config": {**ckpt["config"], "n_head": 0}}, d / "n_head_0.pt")
    torch.save({**ckpt, "config": {**ckpt["config"], "seq_len": 1e9}}, d / "seq_len_1e9.pt")
    torch.save({**params, "transformer.h.0.attn.c_attn.weight": torch.zeros(5, 7)}, d / "wrong_shape.pth")
    torch.save({**params, "transformer.wte.weight": torch.zeros(5)}, d / "flat_embedding.pth")
    (d / "empty_positions.npz").write_bytes(b"")
    (d / "empty_runs.csv").write_bytes(b"")
    (d / "a_file").write_text("x")
    return {"CKPT": one(lcg_run, "checkpoint_*_step7.pt"), "PARAMS": one(lcg_run, "params_*.pth"),
            **{p.stem.upper(): str(p) for p in d.iterdir()}}


PARAMS_FLAGS = ["--m", "256", "--seq_len", "9"]
BAD_ANALYSIS = {  # case -> (arguments, words of the message); FILE names come from bad_files, OUT is a fresh folder
    "out_is_a_file": (["eval", "CKPT", "--out", "A_FILE"], ["--out", "not a directory"]),
    "out_inside_a_file": (["eval", "CKPT", "--out", "A_FILE/sub"], ["--out", "not a directory"]),
    "n_head_0_flag": (["eval", "PARAMS", "--n_head", "0", *PARAMS_FLAGS, "--out", "OUT"], ["--n_head", ">= 1"]),
    "seq_len_0_flag": (["eval", "CKPT", "--seq_len", "0", "--out", "OUT"], ["--seq_len", ">= 2"]),
    "n_head_0_in_config": (["eval", "N_HEAD_0", "--out", "OUT"], ["n_head", ">= 1"]),
    "seq_len_1e9_in_config": (["eval", "SEQ_LEN_1E9", "--no_rollout", "--out", "OUT"], ["seq_len", "memory"]),
    "tensor_of_another_shape": (["eval", "WRONG_SHAPE", "--n_head", "2", *PARAMS_FLAGS, "--out", "OUT"],
                                ["do not fit", "c_attn"]),
    "flat_embedding": (["embed", "FLAT_EMBEDDING", "--out", "OUT"], ["wte", "shape"]),
    "empty_positions_file": (["curves", "EMPTY_POSITIONS", "--out", "OUT"], ["not a readable .npz"]),
    "empty_npz_to_scaling": (["scaling", "EMPTY_POSITIONS", "--out", "OUT"], ["not a readable .npz"]),
    "empty_csv_to_scaling": (["scaling", "EMPTY_RUNS", "--out", "OUT"], ["not a readable CSV"]),
}


@pytest.mark.parametrize("case", list(BAD_ANALYSIS))
def test_bad_input_to_analyze_is_one_line_exit_2(bad_files, tmp_path, capsys, monkeypatch, case):
    args, words = BAD_ANALYSIS[case]
    files = {**bad_files, "OUT": str(tmp_path / "out")}

    def built(*a, **k):
        raise AssertionError("a model was built for bad input")
    if case.endswith("_flag"):  # known from the flags alone: refused before any model is built
        monkeypatch.setattr(analyze_cli.loading, "build", built)
    args = [re.sub(r"^[A-Z_0-9]+(?=/|$)", lambda m: files.get(m.group(0), m.group(0)), a) for a in args]
    assert_bad_input(bad_input(capsys, *args), *words)
    assert not (tmp_path / "out").exists()


def test_an_out_folder_that_cannot_be_written_is_one_line_exit_2(lcg_run, tmp_path, capsys):
    ckpt = one(lcg_run, "checkpoint_*_step7.pt")
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() == 0:
        assert subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(target)]).returncode == 0
    else:
        target.chmod(0o555)
    try:
        assert_bad_input(bad_input(capsys, "eval", ckpt, "--no_rollout", "--out", target / "x"), "not writable")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(target)])


def test_a_full_out_folder_is_one_line_exit_2(lcg_run, tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    target = tmp_path / "full"
    target.mkdir()
    assert subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)]).returncode == 0
    try:
        (target / "filler").write_bytes(b"\0" * 45_000)  # no room for a plot: the per-bit heatmap comes first
        result = bad_input(capsys, "eval", one(lcg_run, "checkpoint_*_step7.pt"), "--no_rollout", "--out", target)
        assert_bad_input(result, "could not write", "bit_accuracy_model_LCG_m256.png", "No space left")
        assert not [n for n in os.listdir(target) if n.startswith(".tmp_")]
    finally:
        subprocess.run(["umount", "-l", str(target)])
