"""Single-modulus training end to end: the README command, files, metrics, LR, resume, bad input.

The script is run the way a user runs it (a subprocess) where files and exit codes matter, and
in-process through `main([...])` where only its behaviour is checked. Configurations are tiny: a
subprocess costs seconds of imports on these machines.
"""

import math
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

import prng_train_lowmem
from tests.helpers import FINISHED_ARGS as FILES_ARGS, FINISHED_BASE as FILES_BASE, TINY, unfinish
from utils.checkpoint import KEYS
from utils.data import parse_combos, PRNGDataset
from utils.distributed import DistInfo
from utils.evaluation import evaluate
from utils.gpt2 import GPTConfig, build_model
from utils.params import split_ac
from utils.schedules import single_lr
from tests.test_names import README_COMMAND

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_COLUMNS = ["step", "train_loss", "test_loss", "train_acc", "test_acc", "train_last_acc", "test_last_acc",
                "grad_norm"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_script(*args, results_dir):
    return subprocess.run([sys.executable, "prng_train_lowmem.py", *map(str, args), "--results_dir", str(results_dir)],
                          cwd=REPO, capture_output=True, text=True)


def run_main(*args, results_dir):
    return prng_train_lowmem.main([*map(str, args), "--results_dir", str(results_dir)])


def read_eval(path):
    return pd.read_csv(path, sep="\t", index_col=0)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# --------------------------------------------------------------------------------------------------
# 1. The README example, shrunk only by the sizes appended after it.

# README_COMMAND: the original README's command, as the README gives it (tests/test_names.py checks both).
README_SMALLER = "--num_steps 2 --batch_size 1 --n_a 2 --n_c 2 --n_test_a 1 --n_test_c 1 --eval_interval 1".split()
README_BASE = ("XSLRR_m262144_cb3_kp9_vs512_sl513_b512_nd1_na2_nc2_ne1_n1024_h8_d4_rope_dI1_I1_lr0.000500"
               "_Twarm5000_T2_B1_wd0.1")


@pytest.mark.slow  # the README's 51M-parameter model, 1.2 GB of checkpoints
def test_readme_example_with_smaller_sizes_runs_and_writes_every_file(tmp_path):
    # The full 51M-parameter model at seq_len 513 is kept on purpose: this is the user's command.
    # The run is all LR warmup (warm_steps 5000 > num_steps 2), which must be allowed.
    out = tmp_path / "readme"
    result = run_script(*README_COMMAND, *README_SMALLER, results_dir=out)
    try:
        assert_ok(result)
        assert "warning" in result.stdout.lower() and "warm_steps" in result.stdout
        expected = {f"eval_{README_BASE}.tab", f"params_{README_BASE}.pth",
                    f"checkpoint_{README_BASE}_step0.pt", f"checkpoint_{README_BASE}_step2.pt",
                    "trainac_XSLRR_m262144_b512_d1_na2_nc2_ne1_dI1.npz",
                    "training_ac_values_m262144_na2_nc2_nta1_ntc1_ne1_vs512_sl513_dI1_I1.pt",
                    f"correctness_{README_BASE}.npz", f"correctness_{README_BASE}.png",
                    f"positions_{README_BASE}.npz", f"run_{README_BASE}.json", f".run_{README_BASE}.lock"}
        assert set(os.listdir(out)) == expected  # nothing else, no temporary files left behind
        table = read_eval(out / f"eval_{README_BASE}.tab")
        assert table["step"].tolist() == [0, 1, 2]
        assert np.isfinite(table[EVAL_COLUMNS[1:]].to_numpy()[1:]).all()
    finally:
        for name in os.listdir(out) if out.exists() else []:
            os.remove(out / name)  # 1.2 GB of checkpoints: do not leave them in pytest's kept tmp dirs


# --------------------------------------------------------------------------------------------------
# 2, 5, 9. One small run with every output flag (the suite's shared finished run, tests/conftest.py): names,
# columns, keys, stopping and progress lines. num_steps 7 is not a multiple of eval_interval 3: training
# must still stop exactly at 7.

@pytest.fixture(scope="module")
def files_run(finished_run, tmp_path_factory):
    """The same command run twice in one results_dir (first as a subprocess, then in-process: the second
    finds the run finished and writes nothing), and once more in-process in another folder."""
    out, first, listing_after_first = finished_run
    again = tmp_path_factory.mktemp("files_again")
    assert run_main(*FILES_ARGS, results_dir=out) == 0
    assert run_main(*FILES_ARGS, results_dir=again) == 0
    return out, first, listing_after_first, again


def test_file_names_are_the_originals(files_run):
    out, _, first_listing, _ = files_run
    assert first_listing == {
        f"eval_{FILES_BASE}.tab", f"params_{FILES_BASE}.pth", f"correctness_{FILES_BASE}.npz",
        f"correctness_{FILES_BASE}.png",
        *(f"checkpoint_{FILES_BASE}_step{s}.pt" for s in (0, 3, 6, 7)),
        "trainac_LCG_m256_b256_d1_na4_nc4_ne1_dI1.npz",
        "testac_LCG_m256_b256_d1_na4_nc4_nta2_ntc2_dI1.npz",
        "training_ac_values_m256_na4_nc4_nta2_ntc2_ne1_vs256_sl9_dI1_I1.pt",
        f"positions_{FILES_BASE}.npz", f"run_{FILES_BASE}.json", f".run_{FILES_BASE}.lock"}
    # Running the finished run again says so and writes nothing (no `_2` duplicates).
    assert set(os.listdir(out)) == first_listing


def test_eval_table_columns_rows_and_stop_at_num_steps(files_run):
    out = files_run[0]
    with open(out / f"eval_{FILES_BASE}.tab") as fh:
        header = fh.readline().rstrip("\n").split("\t")
    assert header == [""] + EVAL_COLUMNS  # a pandas index column first
    table = read_eval(out / f"eval_{FILES_BASE}.tab")
    assert table.index.tolist() == [0, 1, 2, 3]
    assert table["step"].tolist() == [0, 3, 6, 7]  # every eval_interval, and the last update
    first = table.iloc[0]
    assert first[["train_loss", "train_acc", "train_last_acc", "grad_norm"]].isna().all()
    assert first[["test_loss", "test_acc", "test_last_acc"]].notna().all()
    rest = table.iloc[1:][EVAL_COLUMNS[1:]].to_numpy()
    assert np.isfinite(rest).all()
    accs = table.iloc[1:][["train_acc", "test_acc", "train_last_acc", "test_last_acc"]].to_numpy()
    assert ((0 <= accs) & (accs <= 1)).all()
    assert (table.iloc[1:]["grad_norm"] > 0).all()
    # The same command in another folder reproduces the table (deterministic given the seeds).
    pd.testing.assert_frame_equal(table, read_eval(files_run[3] / f"eval_{FILES_BASE}.tab"), check_exact=False,
                                  rtol=1e-5)


def test_checkpoints_load_with_weights_only_and_stop_exactly_at_num_steps(files_run):
    out = files_run[0]
    steps = sorted(int(m.group(1)) for n in os.listdir(out) if (m := re.search(r"_step(\d+)\.pt$", n)))
    assert steps == [0, 3, 6, 7]  # no checkpoint past num_steps
    params = load(out / f"params_{FILES_BASE}.pth")  # written by the same run as the checkpoints
    for step in steps:
        ckpt = load(out / f"checkpoint_{FILES_BASE}_step{step}.pt")
        assert {"model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "step", "eval_results",
                "config"} <= set(ckpt)
        assert set(ckpt) == set(KEYS)  # the format's one list of keys is complete
        assert ckpt["step"] == step
        assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model_state_dict"])
        assert set(ckpt["model_state_dict"]) == set(params)
        assert type(ckpt["config"]) is dict
        assert ckpt["config"]["m"] == 256 and ckpt["config"]["num_steps"] == 7
    final = load(out / f"checkpoint_{FILES_BASE}_step7.pt")
    for name, tensor in params.items():
        assert torch.equal(final["model_state_dict"][name], tensor), name
    # Exactly 7 optimizer updates: AdamW counts them per parameter.
    assert {float(s["step"]) for s in final["optimizer_state_dict"]["state"].values()} == {7.0}
    table = read_eval(out / f"eval_{FILES_BASE}.tab")
    np.testing.assert_array_equal(np.array(final["eval_results"], dtype=float), table[EVAL_COLUMNS].to_numpy())
    assert [row[0] for row in load(out / f"checkpoint_{FILES_BASE}_step3.pt")["eval_results"]] == [0, 3]


def test_params_and_ac_value_files(files_run):
    out = files_run[0]
    params = load(out / f"params_{FILES_BASE}.pth")
    assert "transformer.wte.weight" in params and not any(k.startswith("_orig_mod.") for k in params)
    trainac = np.load(out / "trainac_LCG_m256_b256_d1_na4_nc4_ne1_dI1.npz")
    testac = np.load(out / "testac_LCG_m256_b256_d1_na4_nc4_nta2_ntc2_dI1.npz")
    assert set(trainac.files) == {"train_a", "train_c"} and set(testac.files) == {"test_a", "test_c"}
    assert trainac["train_a"].shape == trainac["train_c"].shape == (4,)
    assert testac["test_a"].shape == testac["test_c"].shape == (2,)
    assert not set(trainac["train_a"]) & set(testac["test_a"]) and not set(trainac["train_c"]) & set(testac["test_c"])
    values = load(out / "training_ac_values_m256_na4_nc4_nta2_ntc2_ne1_vs256_sl9_dI1_I1.pt")
    ac = values["training_ac_values"]
    for key in ("train_a", "train_c"):
        assert type(ac[key]) is list and all(type(v) is int for v in ac[key])
        assert ac[key] == trainac[key].tolist()
    assert values["config"] == {"type": "LCG", "m": 256, "n_a": 4, "n_c": 4, "n_example": 1, "vocab_size": 256,
                                "seq_len": 9, "control_bits": "0", "data_seed": 1, "main_seed": 1}


def test_correctness_npz_and_plot(files_run):
    out = files_run[0]
    curves = np.load(out / f"correctness_{FILES_BASE}.npz")
    assert set(curves.files) == {"train_correct", "test_correct"}
    for key in curves.files:
        assert curves[key].shape == (8,)  # context_len = seq_len * digits - 1
        assert ((0 <= curves[key]) & (curves[key] <= 1)).all()
    with open(out / f"correctness_{FILES_BASE}.png", "rb") as fh:
        assert fh.read(8) == PNG_MAGIC


def test_output_files_get_the_usual_permissions(files_run):
    # Atomic writes must not change who can read the results: a file is created as open() would
    # create it (0666 minus the umask), as the original's torch.save / np.savez / to_csv did.
    out = files_run[0]
    umask = os.umask(0)
    os.umask(umask)
    modes = {name: oct(os.stat(out / name).st_mode & 0o777) for name in sorted(os.listdir(out))}
    wrong = {name: mode for name, mode in modes.items() if mode != oct(0o666 & ~umask)}
    assert not wrong, f"expected {oct(0o666 & ~umask)} (umask {oct(umask)}), got {wrong}"


def test_progress_line_per_evaluation(files_run):
    stdout = files_run[1].stdout
    lines = [line for line in stdout.splitlines() if line.startswith("step ")]
    assert [int(re.match(r"step\s+(\d+)/7\b", line).group(1)) for line in lines] == [0, 3, 6, 7]
    assert all(re.search(r"test loss [\d.]+ acc [\d.]+ last [\d.]+", line) and " lr " in line for line in lines)
    for line in lines[1:]:
        assert re.search(r"train loss [\d.]+ acc [\d.]+ last [\d.]+", line), line
        assert re.search(r"[\d.]+k tok/s", line) and re.search(r"left \d+m\d\ds", line), line


# --------------------------------------------------------------------------------------------------
# 3. Metrics against hand-computed values.

# Per-token correctness of three sequences of five targets; wrong predictions get probability 0.25
# on the target, right ones 0.5, so the loss is ln 2 per right token and ln 4 = 2 ln 2 per wrong one.
HITS = torch.tensor([[1, 1, 1, 1, 1],
                     [1, 0, 1, 0, 1],
                     [0, 0, 1, 1, 1]], dtype=torch.bool)


class FixedLogits(nn.Module):
    """Returns stored logits for the sequence whose index is in x[:, 0]; remembers its mode."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.modes = []

    def forward(self, x, y=None):
        self.modes.append(self.training)
        return self.logits[x[:, 0]], None


class FixedData:
    def __init__(self, seq_len, x, y):
        self.seq_len, self.x, self.y = seq_len, x, y

    def batch(self, idx, device):
        idx = torch.as_tensor(np.asarray(idx))
        return self.x[idx].to(device), self.y[idx].to(device)


def fixed_case():
    n, C, V = HITS.shape[0], HITS.shape[1], 3
    y = (torch.arange(n)[:, None] + torch.arange(C)[None, :]) % V
    predicted = torch.where(HITS, y, (y + 1) % V)
    probs = torch.full((n, C, V), 0.25).scatter(2, predicted[..., None], 0.5)
    x = torch.zeros(n, C, dtype=torch.long)
    x[:, 0] = torch.arange(n)
    return FixedLogits(probs.log()), x, y


@pytest.mark.parametrize("digits, seq_len, last_acc, num_acc", [
    (1, 6, 3 / 3, [2 / 3, 1 / 3, 3 / 3, 2 / 3, 3 / 3]),  # last number = last token: all three right
    (2, 3, 2 / 3, [1 / 3, 2 / 3]),  # last number = tokens 3, 4: sequence 1 misses token 3
])
def test_evaluate_against_hand_computed_metrics(digits, seq_len, last_acc, num_acc):
    model, x, y = fixed_case()
    model.train()
    # Uneven batches: a mean of batch means would give 1.3 ln 2, the token-weighted mean 19/15 ln 2.
    result = evaluate(model, FixedData(seq_len, x, y), [np.array([0, 1]), np.array([2])], info=DistInfo(),
                      dtype=torch.float32, digits=digits, positions=True)
    assert result["loss"] == pytest.approx((11 * math.log(2) + 4 * math.log(4)) / 15, rel=1e-6)
    assert result["acc"] == pytest.approx(11 / 15, rel=1e-12)
    assert result["last_acc"] == pytest.approx(last_acc, rel=1e-12)
    np.testing.assert_allclose(result["pos_acc"], [2 / 3, 1 / 3, 3 / 3, 2 / 3, 3 / 3], rtol=1e-12)
    # digits 2: drop the first target, then numbers are tokens (1, 2) and (3, 4).
    np.testing.assert_allclose(result["num_acc"], num_acc, rtol=1e-12)
    assert model.modes == [False, False] and model.training  # evaluated in eval mode, mode restored


# --------------------------------------------------------------------------------------------------
# 4. The LR the loop applies at each update (the original's warmup and cosine).

@pytest.fixture
def applied_lrs():
    lrs = []

    def hook(optimizer, args, kwargs):
        group_lrs = {group["lr"] for group in optimizer.param_groups}
        assert len(group_lrs) == 1
        lrs.append(group_lrs.pop())

    handle = register_optimizer_step_pre_hook(hook)
    yield lrs
    handle.remove()


def test_lr_applied_at_every_update_follows_the_schedule(tmp_path, applied_lrs):
    lr, lr_min, W, N = 1e-3, 1e-5, 3, 10
    assert run_main("--m", "256", *TINY, "--num_steps", N, "--warm_steps", W, "--lr_trgt", lr, "--lr_min", lr_min,
                    "--eval_interval", 4, results_dir=tmp_path) == 0
    assert len(applied_lrs) == N  # 10 updates although 10 is not a multiple of eval_interval 4
    cosine = lambda u: lr_min + (lr - lr_min) * (1 + math.cos(math.pi * (u - W) / (N - W))) / 2
    assert applied_lrs[0] == pytest.approx(lr * 1e-8, rel=1e-9)  # the first update uses about 0
    assert applied_lrs[1] == pytest.approx(lr * (1e-8 + (1 - 1e-8) / 3), rel=1e-9)
    assert applied_lrs[W] == pytest.approx(lr, rel=1e-12)  # warmup ends at the peak
    assert applied_lrs[6] == pytest.approx(cosine(6), rel=1e-12)
    assert applied_lrs[-1] == pytest.approx(cosine(N - 1), rel=1e-12)
    expected = [single_lr(u, lr_trgt=lr, lr_min=lr_min, warm_steps=W, num_steps=N) for u in range(N)]
    assert applied_lrs == pytest.approx(expected, rel=1e-12)


def test_lr_without_warmup_starts_at_the_peak(tmp_path, applied_lrs):
    lr, lr_min, N = 2e-3, 1e-6, 5
    assert run_main("--m", "256", *TINY, "--num_steps", N, "--warm_steps", 0, "--lr_trgt", lr, "--lr_min", lr_min,
                    "--eval_interval", 5, results_dir=tmp_path) == 0
    assert applied_lrs[0] == lr
    assert applied_lrs[-1] == pytest.approx(lr_min + (lr - lr_min) * (1 + math.cos(math.pi * 4 / 5)) / 2, rel=1e-12)
    expected = [single_lr(u, lr_trgt=lr, lr_min=lr_min, warm_steps=0, num_steps=N) for u in range(N)]
    assert applied_lrs == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# 6. Several generator types in one run: per-type table and correctness keys.

MULTI_LABELS = ["LCG", "XSLRR_cb1", "XSLRR_cb2"]  # sorted


def test_multi_type_run_writes_per_type_metrics_consistent_with_the_combined_ones(tmp_path):
    args = ["--type", "LCG+XSLRR", "--control_bits", "1,2", "--m", "1024", *TINY, "--num_steps", "4",
            "--eval_interval", "2", "--save_correctness"]
    assert run_main(*args, results_dir=tmp_path) == 0
    base = "LCG+XSLRR_m1024_cb1_2_kp10_vs1024_sl9_b1024_nd1_na4_nc4_ne1_n32_h2_d1_rope_dI1_I1_lr0.001000_Twarm10_T4_B4_wd0.5"
    per_type = pd.read_csv(tmp_path / f"per_type_eval_{base}.csv")
    assert list(per_type.columns) == ["step"] + [f"{l}_{k}" for l in MULTI_LABELS for k in ("loss", "acc", "last_acc")]
    assert per_type["step"].tolist() == [0, 2, 4]
    # Every type has 2 x 2 test sequences of equal length, so the combined test metrics are the plain
    # mean of the per-type ones (each type's sequences are the combined set's sequences of that type).
    combined = read_eval(tmp_path / f"eval_{base}.tab")
    for metric in ("loss", "acc", "last_acc"):
        mean = per_type[[f"{l}_{metric}" for l in MULTI_LABELS]].mean(axis=1).to_numpy()
        np.testing.assert_allclose(combined[f"test_{metric}"].to_numpy(), mean, rtol=1e-5, atol=1e-12)
    curves = np.load(tmp_path / f"correctness_{base}.npz")
    assert set(curves.files) == {"train_correct", "test_correct"} | {f"{l}_correct" for l in MULTI_LABELS}
    assert all(curves[key].shape == (8,) for key in curves.files)
    np.testing.assert_allclose(curves["test_correct"], np.mean([curves[f"{l}_correct"] for l in MULTI_LABELS], 0))


def test_per_type_evaluation_sees_the_combined_sets_sequences():
    m, seq_len = 1024, 9
    combos = parse_combos("LCG+XSLRR", "1,2", m, 10, log=lambda *a: None)
    split = split_ac(m, 4, 4, 2, 2, np.random.default_rng(1))
    test = PRNGDataset(m, combos, split.test_a, split.test_c, 1, seq_len, m, 1, data_seed=1)
    torch.manual_seed(0)
    model = build_model(GPTConfig(block_size=seq_len - 1, vocab_size=m, n_layer=1, n_head=2, n_embd=32), False)
    per = len(test) // len(combos)
    kw = dict(info=DistInfo(), dtype=torch.float32, digits=1, positions=True)
    for j in range(len(combos)):
        subset = evaluate(model, test, [np.arange(j * per, (j + 1) * per)], **kw)
        alone = evaluate(model, test.for_combo(j), [np.arange(per)], **kw)
        for key in ("loss", "acc", "last_acc"):
            assert subset[key] == alone[key]
        np.testing.assert_array_equal(subset["pos_acc"], alone["pos_acc"])


# --------------------------------------------------------------------------------------------------
# 7. Bad input: one line on stderr, exit non-zero, before anything is built or written.

@pytest.mark.parametrize("args, message", [
    (["--type", "FOO"], "FOO"),
    (["--type", "RS", "--m", "256", "--control_bits", "3", "--bits_to_keep", "8"], "RS"),
    (["--m", "1024", "--base", "16"], "digits"),  # values up to 1023 need 3 base-16 digits
    (["--type", "XSLRR", "--m", "1024"], "control_bits"),
    (["--m", "256", "--n_embd", "30", "--n_head", "4"], "n_head"),
    (["--m", "256", "--exclude_ac_paths", "MISSING"], "missing.npz"),
    # The training set (1 x 1 sequences) is smaller than one batch of 4.
    (["--m", "256", "--n_a", "1", "--n_c", "1"], "batch"),
], ids=["unknown_type", "invalid_generator", "base_too_small", "pcg_without_control_bits", "n_embd_vs_n_head",
        "missing_exclusion_file", "train_set_smaller_than_batch"])
def test_bad_flags_fail_with_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    args = [a.replace("MISSING", str(tmp_path / "missing.npz")) for a in args]
    with pytest.raises(SystemExit) as stop:
        run_main(*TINY, "--num_steps", "2", *args, results_dir=out)
    assert stop.value.code not in (0, None)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert not out.exists() or not os.listdir(out)


# The same contract seen by a user (exit status and stderr of the process): tests/test_inputs.py,
# test_bad_input_from_the_command_line.


# --------------------------------------------------------------------------------------------------
# 8. Resume is exact.

RESUME_ARGS = ["--m", "256", *TINY, "--num_steps", "12", "--eval_interval", "4", "--warm_steps", "2",
               "--save_checkpoints", "--checkpoint_interval", "4", "--save_params"]
RESUME_BASE = "LCG_m256_kp8_vs256_sl9_b256_nd1_na4_nc4_ne1_n32_h2_d1_rope_dI1_I1_lr0.001000_Twarm2_T12_B4_wd0.5"


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, capsys):
    eval_path, params_path = tmp_path / f"eval_{RESUME_BASE}.tab", tmp_path / f"params_{RESUME_BASE}.pth"
    ckpt = lambda step: tmp_path / f"checkpoint_{RESUME_BASE}_step{step}.pt"
    assert run_main(*RESUME_ARGS, results_dir=tmp_path) == 0
    table_a, params_a = read_eval(eval_path), load(params_path)
    assert table_a["step"].tolist() == [0, 4, 8, 12]
    for path in (eval_path, params_path, ckpt(8), ckpt(12)):
        os.remove(path)
    unfinish(tmp_path / f"run_{RESUME_BASE}.json")  # as if killed after the checkpoint at update 4
    capsys.readouterr()

    assert run_main(*RESUME_ARGS, "--resume", "auto", results_dir=tmp_path) == 0
    assert f"resume: from {ckpt(4)}" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_eval(eval_path), table_a, check_exact=True)
    params_b = load(params_path)
    assert set(params_b) == set(params_a)
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name

    # A checkpoint of another configuration is refused, in one line, before training.
    with pytest.raises(SystemExit) as stop:
        run_main(*RESUME_ARGS, "--lr_trgt", "2e-3", "--resume", ckpt(4), results_dir=tmp_path)
    assert stop.value.code not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "lr_trgt" in err[0], err
