"""No run loses or clobbers data: run identity and stems, the run-long lock, start-up checks, write
failures, signals at any moment, resume that trusts nothing it can re-derive, long names, shared files.

Exit statuses: 0 done (or already done), 1 a write failure or crash, 2 bad input, 75 stopped by a signal
after a checkpoint.
"""
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import pytest
import torch

import curriculum_lowmem
import prng_train_lowmem
from tests.helpers import clean_env, read_eval, single_base
from utils import checkpoint, run
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.preemption import StopSignals
from utils.results import NAME_MAX, WriteError, save_shared
from utils.run import run_identity
from utils.runtime import plain_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300
TINY = ["--m", "256", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--batch_size", "4",
        "--n_a", "4", "--n_c", "4", "--n_test_a", "2", "--n_test_c", "2", "--device", "cpu", "--dtype", "float32"]
RUN = [*TINY, "--num_steps", "8", "--eval_interval", "2", "--warm_steps", "2", "--save_checkpoints",
       "--checkpoint_interval", "2", "--save_params"]


def listing(folder):
    return sorted(os.listdir(folder))


class StopAtLook(StopSignals):
    """Stop signals whose flag goes up at its `look`-th read (and stays up)."""
    look = 1

    def __init__(self):
        self._seen = 0
        super().__init__()

    @property
    def received(self):
        self._seen += 1
        return signal.SIGTERM if self._seen >= self.look else None

    @received.setter
    def received(self, value):
        pass


# The flag is read before the run claims its files, before the first update, and after every update
# (and between micro-batches, none with G = 1): read LOOKS_BEFORE_TRAINING + u comes after update u.
LOOKS_BEFORE_TRAINING = 2


@contextlib.contextmanager
def stopped_after(updates):
    """Runs (of either script) started inside stop after `updates` updates of each start (checkpoint, exit 75)."""
    real = run.StopSignals
    run.StopSignals = type("Stop", (StopAtLook,), {"look": updates + LOOKS_BEFORE_TRAINING})
    try:
        yield
    finally:
        run.StopSignals = real


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """RUN, uninterrupted, in a folder of its own."""
    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test (tests/conftest.py): exact comparisons need the same thread count
    try:
        assert prng_train_lowmem.main([*RUN, "--results_dir", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


# --------------------------------------------------------------------------------------------------
# 1. Identity: a run that differs only in a setting the base name leaves out gets its own files.

def test_identity_ignores_only_what_may_change_on_resume_or_only_changes_outputs():
    cfg = plain_config(prng_train_lowmem.setup_config(
        prng_train_lowmem.build_parser().parse_args(RUN), 1, log=lambda *a: None))
    same = [{"results_dir": "elsewhere/"}, {"resume": "auto"}, {"keep_checkpoints": 3}, {"ignore_disk_check": True},
            {"device": "cuda"}, {"dtype": "bfloat16"}, {"compile": "on"}, {"batch_size": 2, "world_size": 2},
            # output only: which files are written, and how often checkpoints are
            {"save_params": False}, {"save_correctness": True}, {"save_test_values": True},
            {"save_checkpoints": False}, {"checkpoint_interval": 4},
            {"exclude_ac_paths": []}]  # the flag without a file: no exclusions, as without the flag
    other = [{"lr_min": 1e-5}, {"beta2": 0.99}, {"eval_interval": 4}, {"exclude_ac_paths": ["x.npz"]},
             {"batch_size": 2}, {"main_seed": 2}, {"grad_acc_steps": 2}]
    for change in same:
        assert run_identity({**cfg, **change}) == run_identity(cfg), change
    for change in other:
        assert run_identity({**cfg, **change}) != run_identity(cfg), change


def test_two_runs_differing_only_in_lr_min_never_touch_each_others_files(tmp_path, reference, capsys):
    base = single_base(RUN)
    with stopped_after(3):  # the first run stops after update 3 (checkpoint at 3)
        assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)]) == 75
    first = {n: os.path.getmtime(tmp_path / n) for n in os.listdir(tmp_path)}
    capsys.readouterr()
    # Same base name, other lr_min; --keep_checkpoints 1 prunes only its own checkpoints.
    assert prng_train_lowmem.main([*RUN, "--lr_min", "1e-5", "--keep_checkpoints", "1",
                                   "--results_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"this run's files are named {base}_2" in out
    assert {n: os.path.getmtime(tmp_path / n) for n in first} == first  # untouched, none removed
    second = sorted(set(os.listdir(tmp_path)) - set(first))
    assert all(f"{base}_2" in n for n in second if not n.startswith(("trainac_", "training_ac_values_"))), second
    assert [n for n in second if n.startswith("checkpoint_")] == [f"checkpoint_{base}_2_step8.pt"]
    # The first run resumes from its own checkpoint and ends as if never interrupted.
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    assert f"resume: from {tmp_path / f'checkpoint_{base}_step3.pt'}" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_eval(tmp_path / f"eval_{base}.tab"), read_eval(reference / f"eval_{base}.tab"),
                                  check_exact=True)
    for name, tensor in torch.load(reference / f"params_{base}.pth", weights_only=True).items():
        assert torch.equal(torch.load(tmp_path / f"params_{base}.pth", weights_only=True)[name], tensor), name
    assert read_eval(tmp_path / f"eval_{base}_2.tab")["step"].tolist() == [0, 2, 4, 6, 8]


def test_a_finished_run_started_again_says_so_and_writes_nothing(reference, capsys):
    before = {n: os.path.getmtime(reference / n) for n in os.listdir(reference)}
    for extra in ([], ["--resume", "auto"]):
        assert prng_train_lowmem.main([*RUN, *extra, "--results_dir", str(reference)]) == 0
        assert "this run finished already" in capsys.readouterr().out
    assert {n: os.path.getmtime(reference / n) for n in os.listdir(reference)} == before
    manifest = json.loads((reference / f"run_{single_base(RUN)}.json").read_text())
    assert manifest["finished"] and f"params_{single_base(RUN)}.pth" in manifest["finished"]["files"]
    assert manifest["identity"] == run_identity(manifest["config"])


def test_starting_over_a_run_with_checkpoints_needs_resume(tmp_path, capsys):
    with stopped_after(1):
        assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)]) == 75
    before = listing(tmp_path)
    with pytest.raises(SystemExit) as stop:
        prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume auto" in err[0] and "checkpoints up to update 1" in err[0], err
    assert listing(tmp_path) == before


def stopped_run(folder, updates=3, args=RUN):
    """`args` in `folder`, stopped by a signal after `updates` updates (checkpoint, exit 75)."""
    with stopped_after(updates):
        assert prng_train_lowmem.main([*args, "--results_dir", str(folder)]) == 75


def assert_same_as_reference(folder, reference, base):
    pd.testing.assert_frame_equal(read_eval(folder / f"eval_{base}.tab"), read_eval(reference / f"eval_{base}.tab"),
                                  check_exact=True)
    params = torch.load(folder / f"params_{base}.pth", weights_only=True)
    for name, tensor in torch.load(reference / f"params_{base}.pth", weights_only=True).items():
        assert torch.equal(params[name], tensor), name


MANIFEST_DAMAGE = {
    "missing": lambda path, manifest: path.unlink(),
    "cut_short": lambda path, manifest: path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2]),
    "finished_not_a_record": lambda path, manifest: path.write_text(json.dumps({**manifest, "finished": "yes"})),
    "identity_not_a_string": lambda path, manifest: path.write_text(json.dumps({**manifest, "identity": 5})),
    "not_json": lambda path, manifest: path.write_bytes(b"\x00" * 100),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_a_lost_or_damaged_manifest_resumes_from_the_runs_own_checkpoints(tmp_path, reference, capsys, damage):
    base = single_base(RUN)
    stopped_run(tmp_path)
    manifest_path = tmp_path / f"run_{base}.json"
    MANIFEST_DAMAGE[damage](manifest_path, json.loads(manifest_path.read_text()))
    capsys.readouterr()
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert f"resume: from {tmp_path / f'checkpoint_{base}_step3.pt'}" in out
    assert "manifest of this run" in out and "missing or damaged" in out
    assert not [n for n in os.listdir(tmp_path) if f"{base}_2" in n]  # no second stem: the checkpoints told the owner
    assert_same_as_reference(tmp_path, reference, base)
    manifest = json.loads(manifest_path.read_text())  # written again, whole
    assert manifest["identity"] == run_identity(manifest["config"]) and manifest["finished"]


def test_checkpoints_copied_to_a_new_folder_are_resumed_there(tmp_path, reference, capsys):
    base = single_base(RUN)
    first, moved = tmp_path / "first", tmp_path / "moved"
    stopped_run(first)
    moved.mkdir()
    for name in os.listdir(first):
        if name.startswith("checkpoint_"):
            shutil.copy(first / name, moved / name)
    capsys.readouterr()
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(moved), "--resume", "auto"]) == 0
    assert f"resume: from {moved / f'checkpoint_{base}_step3.pt'}" in capsys.readouterr().out
    assert not [n for n in os.listdir(moved) if f"{base}_2" in n]
    assert_same_as_reference(moved, reference, base)


def test_a_requeue_that_adds_output_flags_resumes_the_same_run(tmp_path, reference, capsys):
    base = single_base(RUN)
    without = [a for a in RUN if a != "--save_params"]  # the first start saved no final model
    stopped_run(tmp_path, args=without)
    capsys.readouterr()
    # The requeue's command line adds --save_params and --save_correctness, changes --checkpoint_interval and
    # gives --exclude_ac_paths without a file (no exclusions, as before): the same run, so it resumes.
    assert prng_train_lowmem.main([*RUN, "--save_correctness", "--checkpoint_interval", "4", "--exclude_ac_paths",
                                   "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    assert f"resume: from {tmp_path / f'checkpoint_{base}_step3.pt'}" in capsys.readouterr().out
    assert not [n for n in os.listdir(tmp_path) if f"{base}_2" in n]
    assert_same_as_reference(tmp_path, reference, base)
    assert f"correctness_{base}.npz" in os.listdir(tmp_path)


def test_a_failed_manifest_write_leaves_the_previous_manifest_whole(tmp_path, monkeypatch):
    files = run.RunFiles(str(tmp_path), "RUN", {"manifest": run.FileKind("run_", ".json"),
                                                "checkpoint": run.FileKind("c_", "_{step}.pt")}, 8)
    with run.DirLock(str(tmp_path)):
        claim = run.claim_stem(str(tmp_path), "RUN", "0123456789ab", files.kinds, 8)
    run.write_manifest(claim, {"identity": "0123456789ab", "finished": None, "notes": "x" * 10_000})
    before = (tmp_path / "run_RUN.json").read_bytes()

    def disk_full(fd):  # the data never reaches the disk (ENOSPC at write-back, as NFS reports it)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(WriteError, match="No space left"):
        run.write_manifest(claim, {"identity": "0123456789ab", "finished": {"time": "t", "files": ["a"] * 2000}})
    monkeypatch.undo()
    assert (tmp_path / "run_RUN.json").read_bytes() == before
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp_")]
    # The run still holds its lock after the manifest was replaced: a second claim is refused.
    with pytest.raises(ValueError, match="already running"):
        run.claim_stem(str(tmp_path), "RUN", "0123456789ab", files.kinds, 8)
    run.release(run.RunStart(claim.files, "0123456789ab", None, claim, None))
    assert run.claim_stem(str(tmp_path), "RUN", "0123456789ab", files.kinds, 8).fd is not None


# --------------------------------------------------------------------------------------------------
# 2. One process per run: a second start of the same run is refused while the first lives.

@pytest.mark.slow  # two processes at once
def test_a_second_start_of_a_running_run_exits_2_naming_it(tmp_path):
    args = [*TINY, "--num_steps", "100000", "--eval_interval", "50", "--results_dir", str(tmp_path)]
    first = subprocess.Popen([sys.executable, "prng_train_lowmem.py", *args], cwd=REPO, env=clean_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for line in first.stdout:
            if line.startswith("step"):
                break
        first.send_signal(signal.SIGSTOP)  # still running, holding its lock, but leaving the CPU to the second
        second = subprocess.run([sys.executable, "prng_train_lowmem.py", *args], cwd=REPO, env=clean_env(),
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and "already running" in err[0] and f"pid {first.pid}" in err[0], err
    finally:
        first.send_signal(signal.SIGTERM)  # handled once it continues
        first.send_signal(signal.SIGCONT)
        rest = first.communicate(timeout=TIMEOUT)[0]
    assert first.returncode == 75, rest


@pytest.mark.slow  # a process killed, then another
def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    args = [*TINY, "--num_steps", "100000", "--eval_interval", "50", "--save_checkpoints", "--checkpoint_interval",
            "20", "--results_dir", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "prng_train_lowmem.py", *args], cwd=REPO, env=clean_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in proc.stdout:
        if line.startswith("step") and not line.startswith("step      0"):
            break
    proc.kill()
    proc.wait(timeout=TIMEOUT)
    resumed = subprocess.Popen([sys.executable, "prng_train_lowmem.py", *args, "--resume", "auto"], cwd=REPO,
                               env=clean_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    head = []
    for line in resumed.stdout:
        head.append(line)
        if line.startswith("step"):
            break
    resumed.send_signal(signal.SIGTERM)
    out = "".join(head) + resumed.communicate(timeout=TIMEOUT)[0]
    assert resumed.returncode == 75, out
    assert re.search(r"resume: from \S+_step\d+\.pt", out), out


# --------------------------------------------------------------------------------------------------
# 3. Start-up checks: results_dir usable, before data or model; names that fit.

@pytest.mark.parametrize("kind", ["file", "empty", "read_only"])
def test_an_unusable_results_dir_is_one_line_before_anything(tmp_path, capsys, kind):
    if kind == "file":
        target = tmp_path / "a_file"
        target.write_text("x")
        message = "is not a directory"
    elif kind == "empty":
        target, message = "", "must not be empty"
    else:
        target, message = read_only_dir(tmp_path), "is not writable"
    with pytest.raises(SystemExit) as stop:
        prng_train_lowmem.main([*RUN, "--results_dir", str(target)])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: results_dir") and message in err[0], err
    assert "data:" not in captured.out and "model:" not in captured.out  # refused before data and model


def read_only_dir(tmp_path):
    """A directory this process cannot write: a read-only tmpfs as root (as CI runs), else chmod 555."""
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(target)]).returncode != 0:
            pytest.fail("running as root but cannot mount a read-only tmpfs")
        return target
    target.chmod(0o555)
    return target


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a 2 MB file system: a tmpfs as root (as CI runs); None where it cannot be had."""
    target = tmp_path / "small"
    target.mkdir()
    if os.geteuid() != 0:
        yield None
        return
    assert subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)]).returncode == 0
    yield target
    subprocess.run(["umount", "-l", str(target)])


@pytest.fixture(autouse=True)
def unmount_read_only(tmp_path):
    yield
    target = tmp_path / "ro"
    if target.is_dir() and os.path.ismount(target):
        subprocess.run(["umount", "-l", str(target)])


def test_results_dir_spelled_otherwise_on_resume_is_the_same_run(tmp_path, reference, monkeypatch, capsys):
    base = single_base(RUN)
    job, elsewhere = tmp_path / "job", tmp_path / "elsewhere"
    job.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(job)
    with stopped_after(3):
        assert prng_train_lowmem.main([*RUN, "--results_dir", "out"]) == 75
    with stopped_after(2):  # resumed as out/, stopped again two updates later
        assert prng_train_lowmem.main([*RUN, "--results_dir", "out/", "--resume", "auto"]) == 75
    monkeypatch.chdir(elsewhere)  # a requeue from another working directory
    assert prng_train_lowmem.main([*RUN, "--results_dir", "../job/out", "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert "resume: from out/" in out.replace("out//", "out/") and "resume: from ../job/out/" in out
    assert not [n for n in os.listdir(job / "out") if f"{base}_2" in n]
    pd.testing.assert_frame_equal(read_eval(job / "out" / f"eval_{base}.tab"), read_eval(reference / f"eval_{base}.tab"),
                                  check_exact=True)


def test_a_results_dir_too_long_for_the_runs_file_names_is_one_line(tmp_path, capsys):
    # The start-up probe's short name fits; the manifest's and checkpoints' names would not (PATH_MAX).
    target = str(tmp_path)
    while len(target) < 3990 - 201:
        target = os.path.join(target, "d" * 200)
    target = os.path.join(target, "e" * (3990 - len(target) - 1))
    os.makedirs(target)
    with pytest.raises(SystemExit) as stop:
        prng_train_lowmem.main([*RUN, "--results_dir", target])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: results_dir is 3990 bytes long"), err
    assert os.listdir(target) == []


def read_only_copy(source, tmp_path):
    """A read-only copy of `source`: a read-only bind mount as root (as CI runs), else chmod 555."""
    target = tmp_path / "ro_copy"
    shutil.copytree(source, target)
    if os.geteuid() == 0:
        for cmd in (["mount", "--bind", str(target), str(target)], ["mount", "-o", "remount,bind,ro", str(target)]):
            if subprocess.run(cmd).returncode != 0:
                pytest.fail(f"running as root but cannot {' '.join(cmd)}")
    else:
        target.chmod(0o555)
    return target


def test_a_finished_run_in_a_read_only_folder_says_so_and_exits_0(tmp_path, reference, capsys):
    folder = read_only_copy(reference, tmp_path)
    try:
        assert prng_train_lowmem.main([*RUN, "--results_dir", str(folder), "--resume", "auto"]) == 0
        assert "this run finished already" in capsys.readouterr().out
        # Another run in the same folder cannot start there: one line, exit 2.
        with pytest.raises(SystemExit) as stop:
            prng_train_lowmem.main([*RUN, "--lr_min", "1e-5", "--results_dir", str(folder)])
        assert stop.value.code == 2 and "is not writable" in capsys.readouterr().err
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folder)])


def test_a_manifest_that_cannot_be_replaced_is_one_line(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount the manifest read-only (CI runs as root)")
    stopped_run(tmp_path)
    manifest = tmp_path / f"run_{single_base(RUN)}.json"
    for cmd in (["mount", "--bind", str(manifest), str(manifest)], ["mount", "-o", "remount,bind,ro", str(manifest)]):
        assert subprocess.run(cmd).returncode == 0
    try:
        with pytest.raises(SystemExit) as stop:
            prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path), "--resume", "auto"])
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: could not write") and manifest.name in err[0], err
    finally:
        subprocess.run(["umount", "-l", str(manifest)])


# --------------------------------------------------------------------------------------------------
# 4. Write failures: one line naming the file, exit 1, earlier files intact; plots never cost the model.

def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_earlier_ones(small_disk, tmp_path, capsys,
                                                                           monkeypatch):
    args = [*RUN, "--n_embd", "64", "--ignore_disk_check"]  # ~0.4 MB per checkpoint: the 2 MB disk fills up
    base = single_base(args)
    if small_disk is None:  # not root: a writer that fails as a full disk does
        real = checkpoint.save_torch
        monkeypatch.setattr(checkpoint, "save_torch", lambda obj, path: real(obj, path) if "step6" not in path else
                            (_ for _ in ()).throw(RuntimeError("[enforce fail] PytorchStreamWriter failed writing")))
        folder = tmp_path
    else:
        folder = small_disk
    assert prng_train_lowmem.main([*args, "--results_dir", str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(rf"error: could not write {re.escape(str(folder))}/checkpoint_{base}_step\d+\.pt",
                                      err[0]), err
    steps = sorted(int(m.group(1)) for n in os.listdir(folder) if (m := re.search(r"_step(\d+)\.pt$", n)))
    assert steps and steps == list(range(0, 2 * len(steps), 2))
    for step in steps:
        assert load_checkpoint(str(folder / f"checkpoint_{base}_step{step}.pt"))["step"] == step  # all whole
    assert not [n for n in os.listdir(folder) if n.startswith(".tmp_")]


def test_a_full_disk_at_the_final_params_write_is_one_line(tmp_path, capsys, monkeypatch):
    base = single_base(RUN)
    real = prng_train_lowmem.save_torch
    monkeypatch.setattr(prng_train_lowmem, "save_torch", lambda obj, path: real(obj, path) if "params_" not in path
                        else real(obj, "/proc/no_such_dir/x.pth"))  # any OSError on the way
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not write"), err
    assert read_eval(tmp_path / f"eval_{base}.tab")["step"].tolist() == [0, 2, 4, 6, 8]
    assert load_checkpoint(str(tmp_path / f"checkpoint_{base}_step8.pt"))["step"] == 8
    manifest = json.loads((tmp_path / f"run_{base}.json").read_text())
    assert manifest["finished"] is None  # not done: --resume auto writes the final files


def test_a_failed_final_model_write_without_checkpoints_keeps_the_model_in_one(tmp_path, reference, capsys,
                                                                              monkeypatch):
    base = single_base(RUN)
    args = [a for a in RUN if a not in ("--save_checkpoints",)]
    real = prng_train_lowmem.save_torch
    with monkeypatch.context() as patch:
        patch.setattr(prng_train_lowmem, "save_torch", lambda obj, path: real(obj, path) if "params_" not in path
                      else real(obj, "/proc/no_such_dir/x.pth"))
        assert prng_train_lowmem.main([*args, "--results_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    kept = tmp_path / f"checkpoint_{base}_step8.pt"
    assert len(err) == 1 and err[0].startswith("error: could not write") and f"kept in the checkpoint {kept}" in err[0]
    assert prng_train_lowmem.main([*args, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    assert_same_as_reference(tmp_path, reference, base)


def test_a_full_disk_at_the_final_model_keeps_it_in_a_checkpoint_elsewhere(small_disk, tmp_path, capsys, monkeypatch):
    if small_disk is None:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root); the patched-writer test covers the rest")
    args = [*TINY, "--n_embd", "256", "--n_head", "4", "--num_steps", "2", "--eval_interval", "1", "--save_params",
            "--ignore_disk_check"]  # params ~3 MB > the 2 MB disk
    base = single_base(args)
    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    assert prng_train_lowmem.main([*args, "--results_dir", str(small_disk)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    kept = spare / f"checkpoint_{base}_step2.pt"
    assert len(err) == 1 and "No space left" in err[0] and f"kept in the checkpoint {kept}" in err[0], err
    # The user frees space (here: a folder on a larger disk) and moves the checkpoint there.
    roomy = tmp_path / "roomy"
    shutil.copytree(small_disk, roomy)
    shutil.move(kept, roomy / kept.name)
    assert prng_train_lowmem.main([*args, "--results_dir", str(roomy), "--resume", "auto"]) == 0
    reference = tmp_path / "reference"
    assert prng_train_lowmem.main([*args, "--results_dir", str(reference)]) == 0
    assert_same_as_reference(roomy, reference, base)


def test_enospc_at_the_final_params_write_on_a_full_disk(small_disk, capsys):
    if small_disk is None:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root); the patched-writer test covers the rest")
    args = [*TINY, "--n_embd", "256", "--n_head", "4", "--num_steps", "2", "--eval_interval", "1", "--save_params",
            "--ignore_disk_check"]  # params ~3 MB > 2 MB disk
    assert prng_train_lowmem.main([*args, "--results_dir", str(small_disk)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not write" in err[0] and "params_" in err[0] and "No space left" in err[0], err
    base = single_base(args)
    assert read_eval(small_disk / f"eval_{base}.tab")["step"].tolist() == [0, 1, 2]


def test_the_disk_check_counts_the_final_files(small_disk, capsys):
    if small_disk is None:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    args = [*TINY, "--n_embd", "256", "--n_head", "4", "--num_steps", "2", "--eval_interval", "1", "--save_params"]
    with pytest.raises(SystemExit) as stop:
        prng_train_lowmem.main([*args, "--results_dir", str(small_disk)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoints and final files" in err[0], err
    assert os.listdir(small_disk) == []


def test_a_plot_that_fails_is_a_warning_and_the_model_is_written(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ImportError("no usable matplotlib")

    monkeypatch.setattr(prng_train_lowmem, "plot_accuracy_by_position", broken)
    assert prng_train_lowmem.main([*RUN, "--save_correctness", "--results_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning: could not write the plot" in out and "no usable matplotlib" in out
    base = single_base([*RUN, "--save_correctness"])
    assert {f"params_{base}.pth", f"correctness_{base}.npz"} <= set(os.listdir(tmp_path))
    assert f"correctness_{base}.png" not in os.listdir(tmp_path)


# --------------------------------------------------------------------------------------------------
# 5. Signals at any moment: during training -> checkpoint, 75; during the final writes -> finish, 0.

@pytest.mark.slow  # a process stopped by a signal
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1])
def test_a_signal_during_training_checkpoints_and_exits_75(tmp_path, reference, sig):
    args = [*RUN, "--num_steps", "8"]
    proc = subprocess.Popen([sys.executable, "prng_train_lowmem.py", *args, "--results_dir", str(tmp_path)], cwd=REPO,
                            env=clean_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    for line in proc.stdout:
        if line.startswith("step      0"):
            break
    proc.send_signal(sig)  # Ctrl-C reaches the process as SIGINT, a closed terminal as SIGHUP, Ctrl-\\ as SIGQUIT
    out = proc.communicate(timeout=TIMEOUT)[0]
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")  # 8 tiny updates can outrun a signal
    assert proc.returncode == 75, out
    assert "Traceback" not in out and "stopped by signal" in out
    assert prng_train_lowmem.main([*args, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    base = single_base(args)
    pd.testing.assert_frame_equal(read_eval(tmp_path / f"eval_{base}.tab"), read_eval(reference / f"eval_{base}.tab"),
                                  check_exact=True)


def catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` (the SigCgt mask of /proc/<pid>/status)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            mask = next(int(line.split()[1], 16) for line in fh if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(mask >> (sig - 1) & 1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1])
def test_a_signal_while_the_script_starts_exits_75_and_writes_nothing(tmp_path, sig):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "prng_train_lowmem.py", *RUN, "--results_dir", str(out)], cwd=REPO,
                            env=clean_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not catches(proc.pid, signal.SIGHUP) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # the script's first lines catch the stop signals; its heavy imports come after
    proc.send_signal(sig)
    output = proc.communicate(timeout=TIMEOUT)[0]
    assert proc.returncode == 75, output
    assert "Traceback" not in output and "stopped by signal before the run started" in output
    assert not out.exists()


def test_the_scripts_start_without_the_packages_only_some_runs_need():
    """sympy factors a modulus that is not a power of two, pandas writes the first table: each costs about half
    a second of start-up, which a run that stops early (bad input, a signal) or never needs should not pay."""
    code = ("import sys, prng_train_lowmem, curriculum_lowmem, analyze; "
            "print(sorted(m for m in ('sympy', 'pandas', 'matplotlib', 'scipy', 'wandb') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_signal_while_data_and_model_are_built_exits_75_without_a_checkpoint(tmp_path, reference, monkeypatch,
                                                                                capsys):
    real = prng_train_lowmem.build_model

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(prng_train_lowmem, "build_model", signalled)
        assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)]) == 75
    assert "stopped by signal at step 0; nothing new to save" in capsys.readouterr().out
    assert not [n for n in os.listdir(tmp_path) if n.startswith(("checkpoint_", "eval_"))]
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    assert_same_as_reference(tmp_path, reference, single_base(RUN))


def test_a_stop_inside_an_update_drops_it_and_resume_is_exact(tmp_path, monkeypatch, capsys):
    args = [*RUN, "--grad_acc_steps", "4"]
    base = single_base(args)
    reference = tmp_path / "reference"
    assert prng_train_lowmem.main([*args, "--results_dir", str(reference)]) == 0
    # Reads: 2 before training, then 3 between the micro-batches of an update and 1 after it. Read 12 is
    # after the second micro-batch of update 3: that update is dropped, the checkpoint is update 2's.
    look = LOOKS_BEFORE_TRAINING + 4 * 2 + 2
    monkeypatch.setattr(run, "StopSignals", type("Stop", (StopAtLook,), {"look": look}))
    capsys.readouterr()
    assert prng_train_lowmem.main([*args, "--results_dir", str(tmp_path)]) == 75
    assert re.search(r"stopped by signal at step 2; checkpoint \S+_step2\.pt", capsys.readouterr().out)
    assert load_checkpoint(str(tmp_path / f"checkpoint_{base}_step2.pt"))["train_state"]["micro_step"] == 8
    monkeypatch.undo()
    assert prng_train_lowmem.main([*args, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    assert_same_as_reference(tmp_path, reference, base)


def test_sigterm_ends_a_run_of_huge_updates_within_a_micro_batch(tmp_path):
    args = [*TINY, "--num_steps", "2", "--grad_acc_steps", "1000000", "--results_dir", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "prng_train_lowmem.py", *args], cwd=REPO, env=clean_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in proc.stdout:
        if line.startswith("step      0"):
            break
    time.sleep(1)  # well inside the first update of a million micro-batches
    proc.send_signal(signal.SIGTERM)
    try:
        out = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()  # a run that ignored the signal must not outlive the test
    assert proc.returncode == 75, out
    assert re.search(r"stopped by signal at step 0; checkpoint \S+_step0\.pt", out), out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_during_the_final_writes_finishes_them_and_exits_0(tmp_path, reference, monkeypatch, sig):
    real = prng_train_lowmem.save_final_outputs

    def signalled(*args):
        os.kill(os.getpid(), sig)
        time.sleep(0.05)
        return real(*args)

    monkeypatch.setattr(prng_train_lowmem, "save_final_outputs", signalled)
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(reference))
    base = single_base(RUN)
    assert json.loads((tmp_path / f"run_{base}.json").read_text())["finished"]
    params = torch.load(tmp_path / f"params_{base}.pth", weights_only=True)
    for name, tensor in torch.load(reference / f"params_{base}.pth", weights_only=True).items():
        assert torch.equal(params[name], tensor), name


# --------------------------------------------------------------------------------------------------
# 6. Resume trusts nothing it can re-derive.

def tampered(reference, tmp_path, change):
    base = single_base(RUN)
    ckpt = load_checkpoint(str(reference / f"checkpoint_{base}_step4.pt"))
    change(ckpt)
    path = tmp_path / "tampered.pt"
    save_checkpoint({k: v for k, v in ckpt.items() if k != "format_version"}, str(path))
    return path


@pytest.mark.parametrize("case, change, message", [
    ("past_the_end", lambda c: (c.update(step=99), c["train_state"].update(update=99)), "outside this run's 0..8"),
    ("wrong_shape", lambda c: c["model_state_dict"].update({"lm_head.weight": torch.zeros(3, 32)}), "lm_head.weight"),
    ("extra_tensor", lambda c: c["model_state_dict"].update({"evil": torch.zeros(1)}), "does not fit the model"),
    ("other_identity", lambda c: c.update(identity="0123456789ab"), "different run"),
    ("no_loop_state", lambda c: c.pop("train_state"), "lacks train_state"),
    ("loop_state_key_missing", lambda c: c["train_state"].pop("started"), "loop state"),
    ("sums_of_another_width", lambda c: c["train_state"].update(accum=[[0.0] * 3]), "loop state"),
    ("step_not_an_int", lambda c: (c.update(step="4"), c["train_state"].update(update="4")), "outside this run"),
    ("rows_not_rows", lambda c: c.update(eval_results="x"), "eval_results"),
    ("rng_not_bytes", lambda c: c.update(torch_rng_state=[1, 2]), "torch_rng_state"),
    ("config_not_a_dict", lambda c: c.update(config=[1]), "config"),
    ("moment_of_another_shape", lambda c: c["optimizer_state_dict"]["state"][0].update(exp_avg=torch.zeros(3)),
     "exp_avg"),
    ("optimizer_without_groups", lambda c: c["optimizer_state_dict"].pop("param_groups"), "optimizer_state_dict"),
])
def test_a_tampered_checkpoint_is_one_line_exit_2(tmp_path, reference, capsys, case, change, message):
    path = tampered(reference, tmp_path, change)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        prng_train_lowmem.main([*RUN, "--results_dir", str(out), "--resume", str(path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()  # refused before results_dir is made: no empty folder left behind


def test_stored_paths_in_a_checkpoint_are_never_used(tmp_path, reference):
    outside = tmp_path / "outside"
    path = tampered(reference, tmp_path, lambda c: c.update(paths={"eval": str(outside / "eval.tab"),
                                                                    "base": "../../elsewhere"}))
    out = tmp_path / "out"
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(out), "--resume", str(path)]) == 0
    assert not outside.exists()
    base = single_base(RUN)
    pd.testing.assert_frame_equal(read_eval(out / f"eval_{base}.tab"), read_eval(reference / f"eval_{base}.tab"),
                                  check_exact=True)


# --------------------------------------------------------------------------------------------------
# 7. Names past 255 bytes: a legal three-moduli three-phase curriculum.

LONG_YAML = """
model: {n_layer: 1, n_head: 2, n_embd: 32}
data: {seq_len: 9, n_a: 4, n_c: 4, n_test_a: 2, n_test_c: 2}
curriculum:
  moduli: [256, 512, 1024]
  phases:
    - {phase_steps: 2, warmup_steps: 1, transition_steps: 2, transition: cosine, start_weights: [0.7, 0.2, 0.1], end_weights: [0.5, 0.3, 0.2]}
    - {phase_steps: 2, transition_steps: 2, start_weights: [0.5, 0.3, 0.2], end_weights: [0.2, 0.3, 0.5]}
    - {phase_steps: 2, lr_decay: cosine, start_weights: [0.2, 0.3, 0.5], end_weights: [0.1, 0.2, 0.7]}
training: {batch_size: 4, eval_interval: 2}
output: {save_checkpoints: true, checkpoint_interval: 2, save_params: true, save_correctness: true}
"""


def test_a_three_moduli_three_phase_curriculum_with_long_names_trains_and_resumes(tmp_path, capsys):
    yaml_path = tmp_path / "long.yaml"
    yaml_path.write_text(LONG_YAML)
    args = ["--config", str(yaml_path), "--device", "cpu", "--dtype", "float32"]
    with stopped_after(3):
        assert curriculum_lowmem.main([*args, "--results_dir", str(tmp_path / "a")]) == 75
    out = capsys.readouterr().out
    assert "name too long for the file system" in out
    assert curriculum_lowmem.main([*args, "--results_dir", str(tmp_path / "a"), "--resume", "auto"]) == 0
    assert curriculum_lowmem.main([*args, "--results_dir", str(tmp_path / "b")]) == 0
    names = os.listdir(tmp_path / "a")
    assert all(len(n.encode()) <= NAME_MAX for n in names)
    assert any(n.startswith("multi_curriculum_checkpoint_") and "~" in n for n in names)
    manifest = json.loads(next((tmp_path / "a").glob("run_*.json")).read_text())
    assert manifest["full_names"]["checkpoint"].startswith("multi_curriculum_checkpoint_LCG_premNone_moduli256_512_1024")
    assert len(manifest["full_names"]["checkpoint"].encode()) > NAME_MAX
    csv = lambda d: pd.read_csv(next(p for p in (tmp_path / d).glob("*.csv")))
    pd.testing.assert_frame_equal(csv("a"), csv("b"), check_exact=True)
    others = set(os.listdir(tmp_path / "b"))
    assert set(names) - others == {n for n in names if n.endswith("_step3.pt")}  # the signal's checkpoint


# --------------------------------------------------------------------------------------------------
# 8. Shared data files: one name, one content, even when two runs write it at the same instant.

def save_at_once(path, value, barrier, results):
    barrier.wait()
    results.put((value, save_shared(path, {"train_a": np.array([value])}, log=lambda *a: None)))


def test_two_runs_writing_other_content_under_one_shared_name_at_once_keep_both(tmp_path):
    context = multiprocessing.get_context("fork")  # the children need no fresh interpreter
    for trial in range(20):
        path = str(tmp_path / f"trainac_trial{trial}.npz")
        barrier, results = context.Barrier(2), context.Queue()
        procs = [context.Process(target=save_at_once, args=(path, value, barrier, results)) for value in (1, 2)]
        for proc in procs:
            proc.start()
        got = dict(results.get(timeout=TIMEOUT) for _ in procs)
        for proc in procs:
            proc.join(timeout=TIMEOUT)
        assert got[1] != got[2], (trial, got)  # each run has its own file, recorded as its own
        for value, written in got.items():
            with np.load(written) as data:
                assert data["train_a"].tolist() == [value], (trial, written)


@pytest.mark.parametrize("length", [NAME_MAX - 1, NAME_MAX + 40], ids=["just_fits", "too_long"])
def test_a_taken_shared_name_near_the_name_limit_gets_its_suffix_within_it(tmp_path, length):
    moduli = "_".join(str(2 ** k) for k in range(8, 22))  # a 14-modulus curriculum
    head = f"training_ac_values_moduli{moduli}_na1024_nc1024_nta128_ntc64_ne1_vs65536_sl513_dI1_I1_"
    name = head + "x" * (length - len(head) - 3) + ".pt"
    assert len(name.encode()) == length
    paths = [save_shared(str(tmp_path / name), {"value": v}, log=lambda *a: None) for v in (1, 2, 3, 1)]
    assert len(set(paths[:3])) == 3 and paths[3] == paths[0]  # the same content keeps its file
    for path, value in zip(paths, (1, 2, 3)):
        assert len(os.path.basename(path).encode()) <= NAME_MAX
        assert os.path.basename(path).startswith("training_ac_values_moduli256_512_")
        assert torch.load(path, weights_only=True) == {"value": value}
