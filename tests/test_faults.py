"""Faults lose nothing: preemption by a signal, kill -9 while a checkpoint is written, damaged
checkpoints, a non-finite loss, a full disk, and bad input of every kind.

Exit statuses: 0 done, 1 non-finite loss, failed checkpoint write or crash, 2 bad input, 75 stopped by a
signal after a checkpoint (trainer.EXIT_PREEMPTED).
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest
import torch

import curriculum_lowmem
import prng_train_lowmem
from utils import checkpoint, trainer
from utils.checkpoint import estimate_checkpoint_bytes, load_checkpoint, newest_checkpoint, save_checkpoint
from utils.gpt2 import GPTConfig, build_model
from utils.results import save_torch
from utils.run import FileKind, RunFiles
from tests.helpers import clean_env, read_eval, single_base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300
TINY = ["--m", "256", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--batch_size", "4",
        "--n_a", "4", "--n_c", "4", "--n_test_a", "2", "--n_test_c", "2"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_params(a, b):
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def fingerprint(folder) -> dict:
    """Every file under `folder` with the hash of its bytes."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


# --------------------------------------------------------------------------------------------------
# 1. A signal mid-run: finish the update, write a checkpoint, exit 75; --resume auto continues exactly.
#    (The 2-rank case, signal to torchrun, is in test_distributed.py.)

PREEMPT = [*TINY, "--num_steps", "300", "--eval_interval", "10", "--warm_steps", "5", "--save_params"]


@pytest.mark.slow  # a process stopped by a signal, then resumed
def test_sigusr1_mid_run_checkpoints_exits_75_and_resume_is_exact(tmp_path, capsys):
    # Periodic checkpoints are off: the signal's checkpoint is written anyway.
    base = single_base(PREEMPT)
    stopped, reference = tmp_path / "stopped", tmp_path / "reference"
    proc = subprocess.Popen([sys.executable, "prng_train_lowmem.py", *PREEMPT, "--results_dir", str(stopped)],
                            cwd=REPO, env=clean_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        match = re.match(r"step\s+(\d+)/300", line)
        if match and int(match.group(1)) > 0:
            proc.send_signal(signal.SIGUSR1)
            break
    stdout = "".join(lines + proc.stdout.readlines())
    assert proc.wait(timeout=TIMEOUT) == trainer.EXIT_PREEMPTED == 75, stdout
    stop = re.search(r"stopped by signal at step (\d+); checkpoint (\S+); continue with --resume auto", stdout)
    assert stop and 10 <= int(stop.group(1)) < 300, stdout
    assert sorted(os.listdir(stopped)) == sorted([f"eval_{base}.tab", os.path.basename(stop.group(2)),
                                                  f"positions_{base}.npz", f"run_{base}.json", f".run_{base}.lock"])
    assert load(stop.group(2))["step"] == int(stop.group(1))

    assert prng_train_lowmem.main([*PREEMPT, "--results_dir", str(stopped), "--resume", "auto"]) == 0
    assert f"resume: from {stop.group(2)}" in capsys.readouterr().out
    assert prng_train_lowmem.main([*PREEMPT, "--results_dir", str(reference)]) == 0
    pd.testing.assert_frame_equal(read_eval(stopped / f"eval_{base}.tab"), read_eval(reference / f"eval_{base}.tab"),
                                  check_exact=True)
    assert_same_params(load(stopped / f"params_{base}.pth"), load(reference / f"params_{base}.pth"))


# --------------------------------------------------------------------------------------------------
# 2. kill -9 in the middle of a checkpoint write leaves the old file intact; resume never takes a
#    temporary or damaged file.

WRITER = r"""
import sys, time
import torch
from utils.results import atomic_write


class PauseHalfway:
    '''A file that stops for good once `after` bytes are written: the archive is half done.'''

    def __init__(self, fh, after):
        self.fh, self.after, self.written = fh, after, 0

    def write(self, data):
        n = self.fh.write(data)
        self.written += n
        if self.written >= self.after:
            self.fh.flush()
            print("halfway", flush=True)
            time.sleep(600)
        return n

    def flush(self):
        self.fh.flush()


big = {"model_state_dict": {"w%d" % i: torch.full((1_000_000,), float(i)) for i in range(8)}, "step": 8}
with atomic_write(sys.argv[1]) as tmp:
    with open(tmp, "wb") as fh:
        torch.save(big, PauseHalfway(fh, 16_000_000))
"""


@pytest.mark.slow  # a process killed during a write
def test_kill9_during_a_checkpoint_write_keeps_the_good_file(tmp_path):
    good = tmp_path / "checkpoint_RUN_step4.pt"
    save_checkpoint({"model_state_dict": {"w": torch.arange(5.0)}, "step": 4}, str(good))
    before = fingerprint(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(good)], cwd=REPO, env=clean_env(), text=True,
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "halfway"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".tmp_")]
    assert len(leftovers) == 1 and os.path.getsize(tmp_path / leftovers[0]) >= 16_000_000  # killed mid-write
    with pytest.raises(ValueError, match="unreadable or incomplete"):
        load_checkpoint(str(tmp_path / leftovers[0]))
    assert fingerprint(tmp_path)[good.name] == before[good.name]
    assert load_checkpoint(str(good))["step"] == 4

    # Resume candidates: the temporary file is never one; a truncated newer checkpoint is skipped.
    with open(good, "rb") as src, open(tmp_path / "checkpoint_RUN_step8.pt", "wb") as dst:
        dst.write(src.read()[:200])
    shutil.copy(good, tmp_path / ".tmp_x_checkpoint_RUN_step12.pt")  # complete, but a temporary name
    messages = []
    files = RunFiles(str(tmp_path), "RUN", {"checkpoint": FileKind("checkpoint_", "_step{step}.pt")}, num_steps=12)
    assert newest_checkpoint(files, log=messages.append) == str(good)
    assert len(messages) == 1 and "skipping" in messages[0] and "step8.pt" in messages[0]


RESUME = [*TINY, "--num_steps", "8", "--eval_interval", "2", "--warm_steps", "2", "--save_checkpoints",
          "--checkpoint_interval", "4", "--save_params"]


def test_resume_auto_skips_a_damaged_newest_checkpoint_and_continues_exactly(tmp_path, capsys, monkeypatch):
    base = single_base(RESUME)
    ckpt = lambda step: tmp_path / f"checkpoint_{base}_step{step}.pt"
    reference = tmp_path / "reference"
    assert prng_train_lowmem.main([*RESUME, "--results_dir", str(reference)]) == 0
    table, params = read_eval(reference / f"eval_{base}.tab"), load(reference / f"params_{base}.pth")
    # A run that dies after its last checkpoint, before its final files (a crash, not a signal).
    with monkeypatch.context() as patch:
        patch.setattr(prng_train_lowmem, "save_final_outputs", lambda *a: (_ for _ in ()).throw(MemoryError))
        with pytest.raises(MemoryError):
            prng_train_lowmem.main([*RESUME, "--results_dir", str(tmp_path)])
    with open(ckpt(8), "r+b") as fh:
        fh.truncate(os.path.getsize(ckpt(8)) // 2)  # what a non-atomic writer would leave
    shutil.copy(ckpt(4), tmp_path / f".tmp_abc{base[-10:]}_step12.pt")
    capsys.readouterr()
    assert prng_train_lowmem.main([*RESUME, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"skipping checkpoint \S+step8\.pt is unreadable or incomplete", out), out
    assert f"resume: from {ckpt(4)}" in out
    pd.testing.assert_frame_equal(read_eval(tmp_path / f"eval_{base}.tab"), table, check_exact=True)
    assert_same_params(load(tmp_path / f"params_{base}.pth"), params)
    assert load_checkpoint(str(ckpt(8)))["step"] == 8  # rewritten whole


# --------------------------------------------------------------------------------------------------
# 3. A non-finite loss stops the run, names the update, and keeps what was written.

def poison_loss_after(monkeypatch, good_updates):
    """Make the model's training loss NaN from training forward number good_updates + 1 on."""
    real = prng_train_lowmem.build_model

    def build(*args, **kwargs):
        model = real(*args, **kwargs)
        forward, calls = model.forward, [0]

        def poisoned(x, y=None):
            logits, loss = forward(x, y)
            if y is not None:
                calls[0] += 1
                if calls[0] > good_updates:
                    loss = loss * float("nan")
            return logits, loss

        model.forward = poisoned
        return model

    monkeypatch.setattr(prng_train_lowmem, "build_model", build)


def test_nan_loss_stops_naming_the_update_and_keeps_the_checkpoints(tmp_path, capsys, monkeypatch):
    args = [*TINY, "--num_steps", "10", "--eval_interval", "2", "--save_checkpoints", "--checkpoint_interval", "2",
            "--save_params"]
    base = single_base(args)
    poison_loss_after(monkeypatch, 4)
    capsys.readouterr()
    assert prng_train_lowmem.main([*args, "--results_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: non-finite loss") and "at update 5 " in err[0], err
    assert sorted(os.listdir(tmp_path)) == sorted([f"eval_{base}.tab", f"positions_{base}.npz", f"run_{base}.json",
                                                   f".run_{base}.lock"] +
                                                  [f"checkpoint_{base}_step{s}.pt" for s in (0, 2, 4)])
    assert read_eval(tmp_path / f"eval_{base}.tab")["step"].tolist() == [0, 2, 4]
    assert load_checkpoint(str(tmp_path / f"checkpoint_{base}_step4.pt"))["step"] == 4


def test_diverging_lr_stops_with_exit_1(tmp_path, capsys):
    # The user's way to get there: an absurd learning rate.
    args = [*TINY, "--num_steps", "20", "--warm_steps", "0", "--lr_trgt", "1e6", "--lr_min", "1e5"]
    assert prng_train_lowmem.main([*args, "--results_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"error: non-finite loss or gradient at update \d+ ", err[0]), err


def test_a_failed_checkpoint_write_stops_with_exit_1_and_keeps_the_earlier_ones(tmp_path, capsys, monkeypatch):
    args = [*TINY, "--num_steps", "6", "--eval_interval", "2", "--save_checkpoints", "--checkpoint_interval", "2"]
    base = single_base(args)
    real, calls = checkpoint.save_torch, []

    def disk_full_on_third(obj, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(obj, path)

    monkeypatch.setattr(checkpoint, "save_torch", disk_full_on_third)
    assert prng_train_lowmem.main([*args, "--results_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not write ") and "step4.pt" in err[0], err
    assert "No space left on device" in err[0]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("checkpoint_")) == \
        [f"checkpoint_{base}_step0.pt", f"checkpoint_{base}_step2.pt"]


# --------------------------------------------------------------------------------------------------
# 4. Disk space: say what the checkpoints take, refuse what does not fit, --keep_checkpoints N.

DISK = [*TINY, "--num_steps", "6", "--eval_interval", "3", "--save_checkpoints", "--checkpoint_interval", "1"]


@pytest.fixture
def free_bytes(monkeypatch):
    """shutil.disk_usage reports `free[0]` bytes free."""
    free = [0]
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - free[0], free[0]))
    return free


def checkpoint_size(args):
    """The run's own estimate of one checkpoint (checked against a real one below)."""
    cfg = prng_train_lowmem.setup_config(prng_train_lowmem.build_parser().parse_args(args), 1, log=lambda *a: None)
    model = build_model(GPTConfig(
        block_size=cfg.context_len, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
        n_embd=cfg.n_embd, digits=cfg.digits), cfg.no_rope)
    return estimate_checkpoint_bytes(sum(p.numel() for p in model.parameters()))


def test_disk_check_refuses_a_run_that_does_not_fit(tmp_path, capsys, free_bytes):
    each = checkpoint_size(DISK)
    free_bytes[0] = 5 * each  # 7 checkpoints (steps 0..6) do not fit
    with pytest.raises(SystemExit) as stop:
        prng_train_lowmem.main([*DISK, "--results_dir", str(tmp_path)])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert f"checkpoints: {each / 1e6:.1f} MB each, 7 to write, {7 * each / 1e6:.1f} MB in all" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the run needs") and "--ignore_disk_check" in err[0]
    assert os.listdir(tmp_path) == []  # refused before anything was written

    # The override starts it anyway; the estimate is close to what a checkpoint really takes.
    forced = tmp_path / "forced"
    assert prng_train_lowmem.main([*DISK, "--results_dir", str(forced), "--ignore_disk_check"]) == 0
    written = [os.path.getsize(forced / n) for n in os.listdir(forced) if n.startswith("checkpoint_")]
    assert len(written) == 7 and 0.8 < max(written) / each < 1.25, (written, each)  # step 0 has no AdamW moments


def test_keep_checkpoints_keeps_the_newest_and_fits(tmp_path, capsys, free_bytes):
    each = checkpoint_size(DISK)
    free_bytes[0] = 5 * each  # 3 at once fit: the 2 kept and the one being written
    base = single_base(DISK)
    assert prng_train_lowmem.main([*DISK, "--results_dir", str(tmp_path), "--keep_checkpoints", "2"]) == 0
    assert "(--keep_checkpoints 2)" in capsys.readouterr().out
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("checkpoint_")) == \
        [f"checkpoint_{base}_step5.pt", f"checkpoint_{base}_step6.pt"]


# --------------------------------------------------------------------------------------------------
# 5. Bad input: exit 2 with one line `error: ...` on stderr, no traceback, and nothing in results_dir
#    touched. The results_dir holds a finished run's files.

GOOD = [*TINY, "--num_steps", "2", "--eval_interval", "1", "--save_checkpoints", "--save_params"]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    results, inputs = root / "results", root / "inputs"
    inputs.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert prng_train_lowmem.main([*GOOD, "--results_dir", str(results)]) == 0
    finally:
        torch.set_num_threads(threads)
    base = single_base(GOOD)
    ckpt, params = results / f"checkpoint_{base}_step2.pt", results / f"params_{base}.pth"
    with open(ckpt, "rb") as fh:
        (inputs / "truncated.pt").write_bytes(fh.read()[:1000])
    (inputs / "garbage.pt").write_bytes(b"not a torch file at all")
    np.savez(inputs / "wrong_keys.npz", a=np.arange(3))
    torch.save({"training_ac_values": [1, 2, 3]}, inputs / "flat_list.pt")
    torch.save({"training_ac_values": {256: [5, 9]}}, inputs / "modulus_not_dict.pt")
    (inputs / "values.txt").write_text("1 2 3\n")
    yaml_ok = """
model: {n_layer: 1, n_head: 2, n_embd: 64}
data: {seq_len: 9, n_a: 4, n_c: 4, n_test_a: 2, n_test_c: 2}
curriculum:
  moduli: [256, 1024]
  phases: [{phase_steps: 2, end_weights: [1, 1]}]
training: {batch_size: 4}
"""
    (inputs / "ok.yaml").write_text(yaml_ok)
    (inputs / "syntax.yaml").write_text("model: {n_layer: 1\n")
    (inputs / "unknown_key.yaml").write_text(yaml_ok + "tranining: {batch_size: 4}\n")
    (inputs / "wrong_type.yaml").write_text(yaml_ok.replace("n_layer: 1", "n_layer: two"))
    (inputs / "no_moduli.yaml").write_text("model: {n_layer: 1}\n")
    (inputs / "bad_phase.yaml").write_text(yaml_ok.replace("end_weights: [1, 1]", "end_weights: [1]"))
    return {"RESULTS": str(results), "CKPT": str(ckpt), "PARAMS": str(params),
            **{name.split(".")[0].upper(): str(inputs / name) for name in os.listdir(inputs)}}


# script -> case -> (arguments, what the message must say); single-modulus cases start from GOOD.
BAD_INPUT = {
    "prng_train_lowmem": {
        "flag_not_an_int": (["--m", "abc"], "argument --m: invalid int value"),
        "unknown_flag": (["--learning_rate", "1"], "unrecognized arguments"),
        "zero_steps": (["--num_steps", "0"], "num_steps"),
        "keep_zero": (["--keep_checkpoints", "0"], "keep_checkpoints"),
        "resume_missing": (["--resume", "RESULTS/nope.pt"], "no such file"),
        "resume_truncated": (["--resume", "TRUNCATED"], "unreadable or incomplete"),
        "resume_garbage": (["--resume", "GARBAGE"], "unreadable or incomplete"),
        "resume_params_file": (["--resume", "PARAMS"], "not a checkpoint"),
        "resume_other_run": (["--resume", "CKPT", "--lr_trgt", "0.01"], "different run"),
        "exclusions_wrong_keys": (["--exclude_ac_paths", "WRONG_KEYS"], "none of the keys"),
        "exclusions_flat_list": (["--exclude_ac_paths", "FLAT_LIST"], "expected a dict"),
        "exclusions_modulus_not_dict": (["--exclude_ac_paths", "MODULUS_NOT_DICT"], "not a dict with train_a"),
        "exclusions_garbage": (["--exclude_ac_paths", "GARBAGE"], "could not be loaded"),
        "exclusions_text_file": (["--exclude_ac_paths", "VALUES"], "unsupported extension"),
    },
    "curriculum_lowmem": {
        "config_missing": (["--config", "RESULTS/none.yaml"], "cannot read config"),
        "yaml_syntax": (["--config", "SYNTAX"], "not valid YAML"),
        "yaml_unknown_key": (["--config", "UNKNOWN_KEY"], "unknown key 'tranining'"),
        "yaml_wrong_type": (["--config", "WRONG_TYPE"], "model.n_layer"),
        "yaml_no_moduli": (["--config", "NO_MODULI"], "moduli"),
        "yaml_bad_phase": (["--config", "BAD_PHASE"], "end_weights"),
        "custom_phases_json": (["--moduli", "256", "--custom_phases", "[{"], "not valid JSON"),
        "pretrained_wrong_shape": (["--config", "OK", "--pretrained_path", "PARAMS"], "shape"),
        "pretrained_garbage": (["--config", "OK", "--pretrained_path", "GARBAGE"], "could not be loaded"),
        "pretrained_missing": (["--config", "OK", "--pretrained_path", "RESULTS/none.pth"], "not found"),
        "resume_truncated": (["--config", "OK", "--resume", "TRUNCATED"], "unreadable or incomplete"),
        "exclusions_flat_list": (["--config", "OK", "--exclude_ac_paths", "FLAT_LIST"], "expected a dict"),
    },
}


def resolve(args, files):
    return [re.sub(r"^[A-Z_]+", lambda m: files.get(m.group(0), m.group(0)), a) for a in args]


@pytest.mark.parametrize("script, case", [(script, case) for script, cases in BAD_INPUT.items() for case in cases],
                         ids=lambda v: v.replace("_lowmem", ""))
def test_bad_input_exits_2_with_one_line_and_touches_nothing(bad_inputs, capsys, script, case):
    args, message = BAD_INPUT[script][case]
    main = {"prng_train_lowmem": prng_train_lowmem.main, "curriculum_lowmem": curriculum_lowmem.main}[script]
    before = fingerprint(bad_inputs["RESULTS"])
    with pytest.raises(SystemExit) as stop:
        main([*(GOOD if script == "prng_train_lowmem" else []), *resolve(args, bad_inputs),
              "--results_dir", bad_inputs["RESULTS"]])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert fingerprint(bad_inputs["RESULTS"]) == before


# What a user sees (exit status and stderr of the process): tests/test_inputs.py,
# test_bad_input_from_the_command_line.
