"""No run loses or clobbers data: run identity and stems, the run-long lock, start-up checks, write
failures, signals at any moment, resume that trusts nothing it can re-derive, long names.

Exit statuses: 0 done (or already done), 1 a write failure or crash, 2 bad input, 75 stopped by a signal
after a checkpoint.
"""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import curriculum_lowmem
import prng_train_lowmem
from tests.helpers import clean_env, read_eval, single_base
from utils import checkpoint, trainer
from utils.checkpoint import NAME_MAX, load_checkpoint, run_identity, save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300
TINY = ["--m", "256", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--batch_size", "4",
        "--n_a", "4", "--n_c", "4", "--n_test_a", "2", "--n_test_c", "2", "--device", "cpu", "--dtype", "float32"]
RUN = [*TINY, "--num_steps", "8", "--eval_interval", "2", "--warm_steps", "2", "--save_checkpoints",
       "--checkpoint_interval", "2", "--save_params"]


def listing(folder):
    return sorted(os.listdir(folder))


class StopAfter(trainer.StopSignals):
    """Stop signals whose flag is up from the `checks`-th look on: the loop looks once per update, so the
    run stops (checkpoint, exit 75) after update `checks` of this start."""
    checks = 3

    def __init__(self):
        self._seen = 0
        super().__init__()

    @property
    def received(self):
        self._seen += 1
        return signal.SIGTERM if self._seen >= self.checks else None

    @received.setter
    def received(self, value):
        pass


@contextlib.contextmanager
def stopped_after(module, checks):
    real = module.StopSignals
    module.StopSignals = type("Stop", (StopAfter,), {"checks": checks})
    try:
        yield
    finally:
        module.StopSignals = real


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

def test_identity_ignores_only_what_may_change_on_resume():
    cfg = prng_train_lowmem.plain_config(prng_train_lowmem.setup_config(
        prng_train_lowmem.build_parser().parse_args(RUN), 1, log=lambda *a: None))
    same = [{"results_dir": "elsewhere/"}, {"resume": "auto"}, {"keep_checkpoints": 3}, {"ignore_disk_check": True},
            {"device": "cuda"}, {"dtype": "bfloat16"}, {"compile": "on"}, {"batch_size": 2, "world_size": 2}]
    other = [{"lr_min": 1e-5}, {"beta2": 0.99}, {"eval_interval": 4}, {"checkpoint_interval": 4},
             {"exclude_ac_paths": ["x.npz"]}, {"batch_size": 2}, {"main_seed": 2}]
    for change in same:
        assert run_identity({**cfg, **change}) == run_identity(cfg), change
    for change in other:
        assert run_identity({**cfg, **change}) != run_identity(cfg), change


def test_two_runs_differing_only_in_lr_min_never_touch_each_others_files(tmp_path, reference, capsys):
    base = single_base(RUN)
    with stopped_after(prng_train_lowmem, 3):  # the first run stops after update 3 (checkpoint at 3)
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
    with stopped_after(prng_train_lowmem, 1):
        assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)]) == 75
    before = listing(tmp_path)
    with pytest.raises(SystemExit) as stop:
        prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume auto" in err[0] and "checkpoints up to update 1" in err[0], err
    assert listing(tmp_path) == before


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
        second = subprocess.run([sys.executable, "prng_train_lowmem.py", *args], cwd=REPO, env=clean_env(),
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and "already running" in err[0] and f"pid {first.pid}" in err[0], err
    finally:
        first.send_signal(signal.SIGTERM)
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
    with stopped_after(prng_train_lowmem, 3):
        assert prng_train_lowmem.main([*RUN, "--results_dir", "out"]) == 75
    with stopped_after(prng_train_lowmem, 2):  # resumed as out/, stopped again two updates later
        assert prng_train_lowmem.main([*RUN, "--results_dir", "out/", "--resume", "auto"]) == 75
    monkeypatch.chdir(elsewhere)  # a requeue from another working directory
    assert prng_train_lowmem.main([*RUN, "--results_dir", "../job/out", "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert "resume: from out/" in out.replace("out//", "out/") and "resume: from ../job/out/" in out
    assert not [n for n in os.listdir(job / "out") if f"{base}_2" in n]
    pd.testing.assert_frame_equal(read_eval(job / "out" / f"eval_{base}.tab"), read_eval(reference / f"eval_{base}.tab"),
                                  check_exact=True)


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
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_training_checkpoints_and_exits_75(tmp_path, reference, sig):
    args = [*RUN, "--num_steps", "8"]
    proc = subprocess.Popen([sys.executable, "prng_train_lowmem.py", *args, "--results_dir", str(tmp_path)], cwd=REPO,
                            env=clean_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    for line in proc.stdout:
        if line.startswith("step      0"):
            break
    proc.send_signal(sig)  # Ctrl-C reaches the process as SIGINT
    out = proc.communicate(timeout=TIMEOUT)[0]
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")  # 8 tiny updates can outrun a signal
    assert proc.returncode == 75, out
    assert "Traceback" not in out and "stopped by signal" in out
    assert prng_train_lowmem.main([*args, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    base = single_base(args)
    pd.testing.assert_frame_equal(read_eval(tmp_path / f"eval_{base}.tab"), read_eval(reference / f"eval_{base}.tab"),
                                  check_exact=True)


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
])
def test_a_tampered_checkpoint_is_one_line_exit_2(tmp_path, reference, capsys, case, change, message):
    path = tampered(reference, tmp_path, change)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        prng_train_lowmem.main([*RUN, "--results_dir", str(out), "--resume", str(path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert os.listdir(out) == []


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
    with stopped_after(curriculum_lowmem, 3):
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
