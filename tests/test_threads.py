"""The CPU thread count: the rule as a pure function of the machine (affinity, load, cgroup quota, local
ranks, Slurm) and the environment, how each input is read, and a resumed run keeping the count it
started with, so that it continues bit for bit whatever the load when it resumes."""
import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import prng_train_lowmem
from tests.helpers import clean_env, read_eval, unfinish
from utils import distributed, threads
from utils.checkpoint import load_checkpoint
from utils.distributed import DistInfo
from utils.threads import Machine, auto_threads, choose_threads

RUN = ["--m", "256", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--batch_size", "4",
       "--n_a", "4", "--n_c", "4", "--n_test_a", "2", "--n_test_c", "2", "--device", "cpu", "--dtype", "float32",
       "--num_steps", "12", "--eval_interval", "4", "--warm_steps", "2", "--save_checkpoints",
       "--checkpoint_interval", "4", "--save_params"]
BASE = "LCG_m256_kp8_vs256_sl9_b256_nd1_na4_nc4_ne1_n32_h2_d1_rope_dI1_I1_lr0.001000_Twarm2_T12_B4_wd0.5"


# --------------------------------------------------------------------------------------------------
# 1. The rule, one input at a time.

def test_a_quiet_machine_gets_one_thread_per_core_of_the_affinity():
    assert auto_threads(Machine(cores=8)) == (8, "8 cores")
    assert auto_threads(Machine(cores=1)) == (1, "1 core")


@pytest.mark.parametrize("busy, expected", [(0.0, 2), (0.4, 2), (0.6, 1), (1.0, 1), (1.3, 1), (2.0, 1), (5.0, 1)])
def test_cores_at_least_half_busy_with_other_processes_are_left_to_them(busy, expected):
    count, why = auto_threads(Machine(cores=2, busy=busy))
    assert count == expected
    assert ("busy with other processes" in why) == (busy >= 0.5)


def test_an_unmeasurable_load_is_said():
    assert auto_threads(Machine(cores=4, busy=None)) == (4, "4 cores, load not measured (no /proc/stat)")


@pytest.mark.parametrize("quota, expected", [(2.5, 2), (0.5, 1), (1.0, 1), (8.0, 8), (64.0, 8)])
def test_a_cgroup_quota_caps_the_count_rounded_down(quota, expected):
    count, why = auto_threads(Machine(cores=8, quota=quota))
    assert count == expected
    assert ("cgroup CPU quota" in why) == (quota < 8)


@pytest.mark.parametrize("ranks, expected", [(1, 8), (2, 4), (3, 2), (8, 1), (16, 1)])
def test_the_processes_of_a_run_on_one_machine_share_its_cores(ranks, expected):
    count, why = auto_threads(Machine(cores=8, local_ranks=ranks))
    assert count == expected
    assert ("shared by" in why) == (ranks > 1)


def test_slurm_cpus_per_task_caps_each_process():
    assert auto_threads(Machine(cores=16, slurm_cpus=4)) == (4, "16 cores, SLURM_CPUS_PER_TASK=4")
    assert auto_threads(Machine(cores=2, slurm_cpus=4)) == (2, "2 cores")


def test_srun_tasks_bound_to_cpus_of_their_own_do_not_divide_them_again():
    # srun --ntasks-per-node=4 --cpus-per-task=4: bound, each task sees its 4 CPUs; unbound, all 16.
    assert auto_threads(Machine(cores=4, local_ranks=4, slurm_cpus=4))[0] == 4
    assert auto_threads(Machine(cores=16, local_ranks=4, slurm_cpus=4))[0] == 4
    assert auto_threads(Machine(cores=16, local_ranks=4, slurm_cpus=8))[0] == 4


def test_inputs_combine_load_then_quota_then_sharing_then_slurm():
    assert auto_threads(Machine(cores=8, busy=3.0, quota=6.0)) == (5, "8 cores, 3.0 busy with other processes")
    assert auto_threads(Machine(cores=8, busy=1.0, quota=4.0)) == (
        4, "8 cores, 1.0 busy with other processes, cgroup CPU quota 4")
    assert auto_threads(Machine(cores=8, quota=4.0, local_ranks=2)) == (
        2, "8 cores, cgroup CPU quota 4, shared by 2 processes of this run")
    assert auto_threads(Machine(cores=32, busy=8.0, local_ranks=2, slurm_cpus=6))[0] == 6
    assert auto_threads(Machine(cores=2, busy=2.0, quota=0.5, local_ranks=4, slurm_cpus=1))[0] == 1


# --------------------------------------------------------------------------------------------------
# 2. Precedence: OMP_NUM_THREADS, then the count a resumed run started with, then the rule.

def test_omp_num_threads_wins_over_everything():
    busy = Machine(cores=2, busy=2.0)
    assert choose_threads(busy, requested=3) == (3, "OMP_NUM_THREADS=3")
    assert choose_threads(None, requested=3) == (3, "OMP_NUM_THREADS=3")  # the machine is not even read
    count, reason = choose_threads(busy, requested=1, started_with=2, resumed=True)
    assert count == 1 and "started with 2" in reason and "not continue bit for bit" in reason
    assert choose_threads(busy, requested=2, started_with=2, resumed=True) == (2, "OMP_NUM_THREADS=2")


def test_a_resumed_run_keeps_its_count_and_says_what_the_rule_would_take_now():
    count, reason = choose_threads(Machine(cores=2, busy=1.0), started_with=2, resumed=True)
    assert count == 2
    assert reason == ("kept from the run's start, so it continues exactly; auto would take 1 now (2 cores, 1.0 busy "
                      "with other processes); OMP_NUM_THREADS=N sets it")
    assert choose_threads(Machine(cores=2), started_with=2, resumed=True)[1] == (
        "kept from the run's start, so it continues exactly; OMP_NUM_THREADS=N sets it")


def test_a_fresh_run_and_a_resume_from_a_checkpoint_without_a_count_use_the_rule():
    assert choose_threads(Machine(cores=2, busy=1.0)) == (
        1, "auto: 2 cores, 1.0 busy with other processes; OMP_NUM_THREADS=N sets it")
    count, reason = choose_threads(Machine(cores=2), resumed=True)
    assert count == 2 and "does not say which count the run started with" in reason


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("  ", None), ("1", 1), (" 4 ", 4), ("08", 8)])
def test_omp_num_threads_is_read_as_a_count(value, expected):
    assert threads.requested_threads({} if value is None else {"OMP_NUM_THREADS": value}) == expected


@pytest.mark.parametrize("value", ["abc", "0", "-1", "2.5", "4,2", "1e3", "٣"])
def test_an_omp_num_threads_that_is_no_count_is_an_error_naming_it(value):
    with pytest.raises(ValueError, match=re.escape(f"OMP_NUM_THREADS={value!r} is not a thread count")):
        threads.requested_threads({"OMP_NUM_THREADS": value})


# --------------------------------------------------------------------------------------------------
# 3. Reading the inputs.

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
SRUN = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "7"}


@pytest.mark.parametrize("env, expected", [
    ({}, 1),
    ({"LOCAL_WORLD_SIZE": "4", "SLURM_STEP_TASKS_PER_NODE": "2"}, 1),  # no launch: one process
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": "2"}, 2),
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": "8"}, 4),  # never more than the world
    ({**TORCHRUN}, 4),  # the launcher does not say: all of them, the safe guess
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": "two"}, 4),
    ({**SRUN, "SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "0"}, 2),
    ({**SRUN, "SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "3"}, 1),
    ({**SRUN, "SLURM_STEP_TASKS_PER_NODE": "3(x2)"}, 3),
    ({**SRUN, "SLURM_NTASKS_PER_NODE": "4"}, 4),
    ({**SRUN, "SLURM_TASKS_PER_NODE": "5", "SLURM_STEP_TASKS_PER_NODE": "garbage(x"}, 5),
    ({**SRUN}, 7),
    ({"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_TASKS_PER_NODE": "4"}, 1),  # sbatch
])
def test_local_ranks_from_the_launchers_variables(env, expected):
    assert distributed.local_ranks(env) == expected


@pytest.mark.parametrize("value, expected", [(None, None), ("4", 4), (" 2 ", 2), ("0", None), ("abc", None)])
def test_slurm_cpus_per_task(value, expected):
    assert distributed.cpus_per_task({} if value is None else {"SLURM_CPUS_PER_TASK": value}) == expected


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_the_tightest_of_the_process_cgroup_and_its_parents(tmp_path):
    cgroup = tmp_path / "self_cgroup"
    write(cgroup, "0::/user.slice/job\n")
    write(tmp_path / "fs" / "user.slice" / "job" / "cpu.max", "max 100000\n")
    assert threads.cgroup_quota(str(tmp_path / "fs"), str(cgroup)) is None
    write(tmp_path / "fs" / "user.slice" / "cpu.max", "250000 100000\n")
    assert threads.cgroup_quota(str(tmp_path / "fs"), str(cgroup)) == 2.5
    write(tmp_path / "fs" / "user.slice" / "job" / "cpu.max", "150000 100000\n")
    assert threads.cgroup_quota(str(tmp_path / "fs"), str(cgroup)) == 1.5


def test_cgroup_v1_quota_and_a_container_that_sees_only_its_own_cgroup(tmp_path):
    cgroup = tmp_path / "self_cgroup"
    write(cgroup, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    fs = tmp_path / "fs"
    write(fs / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")  # the container's root: no quota
    write(fs / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_quota(str(fs), str(cgroup)) is None
    write(fs / "cpu,cpuacct" / "cpu.cfs_quota_us", "200000\n")
    assert threads.cgroup_quota(str(fs), str(cgroup)) == 2.0


@pytest.mark.parametrize("content", ["", "garbage", "100000", "-5 100000", "100000 0", "max"])
def test_an_unreadable_quota_is_no_quota(tmp_path, content):
    write(tmp_path / "self_cgroup", "0::/\n")
    write(tmp_path / "fs" / "cpu.max", content)
    assert threads.cgroup_quota(str(tmp_path / "fs"), str(tmp_path / "self_cgroup")) is None
    assert threads.cgroup_quota(str(tmp_path / "fs"), str(tmp_path / "missing")) is None


def test_hyperthread_siblings_count_as_one_core(tmp_path):
    for cpu, siblings in enumerate(["0,2", "1,3", "0,2", "1,3"]):
        write(tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list", siblings)
    assert threads.physical_cores([0, 1, 2, 3], str(tmp_path)) == 2
    assert threads.physical_cores([0, 2], str(tmp_path)) == 1
    assert threads.physical_cores([0, 1, 2, 3], str(tmp_path / "none")) == 4  # no sysfs: every CPU


STAT = """cpu  100 0 100 800 0 0 0 0 0 0
cpu0 50 0 50 400 0 0 0 0 0 0
cpu1 50 0 50 400 10 5 5 2 0 0
intr 1 2 3
"""


def test_proc_stat_ticks_count_iowait_as_free_and_steal_as_busy():
    assert threads.cpu_ticks(STAT, [0, 1]) == {0: (100, 500), 1: (112, 522)}
    assert threads.cpu_ticks(STAT, [1]) == {1: (112, 522)}


def test_the_load_of_others_is_the_busy_share_less_this_process():
    before = {0: (0, 0), 1: (0, 0)}
    after = {0: (30, 30), 1: (0, 30)}  # one CPU busy all the time, one idle: 1 CPU busy
    assert threads.others_busy(before, after, own_cpu_s=0.0, wall_s=0.3) == pytest.approx(1.0)
    assert threads.others_busy(before, after, own_cpu_s=0.15, wall_s=0.3) == pytest.approx(0.5)
    assert threads.others_busy(before, after, own_cpu_s=0.6, wall_s=0.3) == 0.0
    assert threads.others_busy(before, before, own_cpu_s=0.0, wall_s=0.3) is None


def test_one_other_process_spinning_shows_at_once():
    """What the 1-minute load average misses: a process started a moment ago, busy on one core."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        assert threads.busy_cpus(sorted(os.sched_getaffinity(0))) >= 0.9
    finally:
        spinner.kill()
        spinner.wait()


# --------------------------------------------------------------------------------------------------
# 4. At start-up: applied on the CPU, agreed by every rank, printed with its reason.

def test_use_threads_sets_the_count_and_prints_it(monkeypatch):
    monkeypatch.setattr(threads, "read_machine", lambda *a, **k: Machine(cores=2, busy=1.0))
    lines = []
    reason = "auto: 2 cores, 1.0 busy with other processes; OMP_NUM_THREADS=N sets it"
    assert threads.use_threads(DistInfo(), None, log=lines.append) == (1, reason)
    assert torch.get_num_threads() == 1 and lines == [f"threads: 1 ({reason})"]
    assert threads.use_threads(DistInfo(), 2, log=lines.append) == (2, "OMP_NUM_THREADS=2")
    assert torch.get_num_threads() == 2 and lines[-1] == "threads: 2 (OMP_NUM_THREADS=2)"


def test_on_cuda_torch_keeps_its_default_unless_omp_num_threads_says(monkeypatch):
    monkeypatch.setattr(threads, "read_machine", lambda *a, **k: pytest.fail("the machine is not read on CUDA"))
    lines, before = [], torch.get_num_threads()
    cuda = DistInfo(device=torch.device("cuda", 0))
    assert threads.use_threads(cuda, None, log=lines.append)[0] == before == torch.get_num_threads()
    assert lines == [f"threads: {before} (torch default; on cuda the CPU only feeds the device)"]
    assert threads.use_threads(cuda, 3, log=lines.append)[0] == 3 == torch.get_num_threads()
    assert lines[-1] == "threads: 3 (OMP_NUM_THREADS=3; on cuda the CPU only feeds the device)"


def test_the_suite_pins_one_thread_the_way_a_user_does(tmp_path, capsys):
    """tests/conftest.py sets OMP_NUM_THREADS=1, so an in-process run computes with one thread whatever the
    load (its checkpoints say so), as every process the tests launch."""
    assert os.environ["OMP_NUM_THREADS"] == "1" and clean_env()["OMP_NUM_THREADS"] == "1"
    assert prng_train_lowmem.main([*RUN, "--num_steps", "2", "--results_dir", str(tmp_path)]) == 0
    assert "threads: 1 (OMP_NUM_THREADS=1)" in capsys.readouterr().out.splitlines()
    ckpt = next(p for p in os.listdir(tmp_path) if p.startswith("checkpoint_"))
    assert load_checkpoint(str(tmp_path / ckpt))["cpu_threads"] == 1


# A bad OMP_NUM_THREADS as a user sees it (one error line before any work, exit 2): tests/test_inputs.py,
# test_bad_input_from_the_command_line.


# --------------------------------------------------------------------------------------------------
# 5. A resumed run keeps the count it started with: bit for bit as the uninterrupted run, whatever the load.

QUIET, BUSY = Machine(cores=2), Machine(cores=2, busy=1.0)


def interrupt_after_update_4(folder):
    """Leave `folder` as a run killed just after its checkpoint at update 4 leaves it."""
    for name in (f"eval_{BASE}.tab", f"params_{BASE}.pth", f"positions_{BASE}.npz",
                 f"checkpoint_{BASE}_step8.pt", f"checkpoint_{BASE}_step12.pt"):
        os.remove(folder / name)
    unfinish(folder / f"run_{BASE}.json")


def params(folder):
    return torch.load(folder / f"params_{BASE}.pth", weights_only=True)


def same_params(a, b) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_resumed_on_a_busier_machine_keeps_its_count_and_continues_bit_for_bit(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS")
    machine = {"now": QUIET}
    monkeypatch.setattr(threads, "read_machine", lambda *a, **k: machine["now"])
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)]) == 0  # quiet: 2 threads
    assert "threads: 2 (auto: 2 cores; OMP_NUM_THREADS=N sets it)" in capsys.readouterr().out
    table, weights = read_eval(tmp_path / f"eval_{BASE}.tab"), params(tmp_path)
    assert load_checkpoint(str(tmp_path / f"checkpoint_{BASE}_step4.pt"))["cpu_threads"] == 2

    interrupt_after_update_4(tmp_path)
    machine["now"] = BUSY  # one core taken by another process when the run resumes: the rule alone would take 1
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert "threads: 2 (kept from the run's start, so it continues exactly; auto would take 1 now" in out
    pd.testing.assert_frame_equal(read_eval(tmp_path / f"eval_{BASE}.tab"), table, check_exact=True)
    assert same_params(params(tmp_path), weights)
    assert load_checkpoint(str(tmp_path / f"checkpoint_{BASE}_step12.pt"))["cpu_threads"] == 2

    # The thread count does matter here (else the comparison above would prove nothing): resumed with one
    # thread, as OMP_NUM_THREADS asks and the start-up line warns, the run ends elsewhere.
    interrupt_after_update_4(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    assert "threads: 1 (OMP_NUM_THREADS=1; the run started with 2, so it does not continue bit for bit" in \
        capsys.readouterr().out
    assert not same_params(params(tmp_path), weights)


def test_a_checkpoint_without_a_thread_count_still_resumes(tmp_path, monkeypatch, capsys):
    """Checkpoints written before the count was kept (or on a GPU) resume with the rule's count, and say so."""
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)]) == 0
    interrupt_after_update_4(tmp_path)
    path = tmp_path / f"checkpoint_{BASE}_step4.pt"
    old = load_checkpoint(str(path))
    del old["cpu_threads"]
    torch.save(old, path)
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "read_machine", lambda *a, **k: Machine(cores=1))
    capsys.readouterr()
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path), "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert "threads: 1 (auto: 1 core; OMP_NUM_THREADS=N sets it; the checkpoint does not say which count" in out
    assert read_eval(tmp_path / f"eval_{BASE}.tab")["step"].tolist() == [0, 4, 8, 12]


def test_a_checkpoint_whose_thread_count_is_no_count_is_refused(tmp_path, capsys):
    assert prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path)]) == 0
    interrupt_after_update_4(tmp_path)
    path = tmp_path / f"checkpoint_{BASE}_step4.pt"
    bad = {**load_checkpoint(str(path)), "cpu_threads": "two"}
    torch.save(bad, path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        prng_train_lowmem.main([*RUN, "--results_dir", str(tmp_path), "--resume", str(path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: checkpoint {path}: its cpu_threads 'two' is not a thread count"
