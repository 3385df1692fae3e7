"""How many CPU threads a process computes with: chosen once, at start-up, from the CPUs really free to it.

Every operation of a small model waits for its slowest thread. With one core taken by another process
(a browser, a second run, a co-worker on a shared node), a thread the scheduler parks behind it makes
each update several times slower than one thread fewer would. So the count follows what the process
can use (`auto_threads`, a pure function of a `Machine`):

- its cores: the CPUs of its affinity (taskset, cpusets, Slurm's binding), hyperthread siblings counted
  once, as torch's own default counts physical cores;
- the cores other processes keep busy, from /proc/stat sampled over LOAD_SAMPLE_S seconds less this
  process's own CPU time, a core counted as taken when at least half busy. Not the load average: its
  1-minute mean shows a process that started a few seconds ago as a small fraction of a core;
- a cgroup CPU quota (containers: cgroup v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us), rounded
  down;
- the processes of this run on this machine (utils/distributed.py local_ranks), which share all of the
  above, unless Slurm bound each task to CPUs of its own (its affinity no larger than
  SLURM_CPUS_PER_TASK);
- Slurm's SLURM_CPUS_PER_TASK, an upper bound for each process.

OMP_NUM_THREADS, when set, is the count; a value that is not a whole number >= 1 is an error. A resumed
run keeps the count it started with (its checkpoint's `cpu_threads`): float32 sums on the CPU depend on
the thread count, and a resumed run continues exactly as the uninterrupted one would.

The count is not re-checked during a run, for the same reason: a count that followed the machine's load
would make a run's numbers depend on what else ran beside it. A run that finds the machine busier later
can be stopped (Ctrl-C writes a checkpoint) and resumed with OMP_NUM_THREADS set, trading that
exactness for speed.

On CUDA the CPU only feeds the GPU: torch's default stays (OMP_NUM_THREADS still sets it). Inter-op
threads are left alone: the training loop does not use them, and torch lets a process set their number
only once.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass

import torch

from .distributed import DistInfo, broadcast_object, cpus_per_task, local_ranks, whole_count

THREADS_ENV = "OMP_NUM_THREADS"
LOAD_SAMPLE_S = 0.3  # long enough for 30 scheduler ticks per CPU at 100 Hz, short beside torch's import
CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class Machine:
    """What the rule reads about the machine (read_machine)."""
    cores: int  # physical cores among the CPUs this process may run on
    busy: float | None = 0.0  # CPUs kept busy by other processes; None: not measurable here
    quota: float | None = None  # cgroup CPU quota, in CPUs
    local_ranks: int = 1  # processes of this run on this machine
    slurm_cpus: int | None = None  # SLURM_CPUS_PER_TASK


def auto_threads(machine: Machine) -> tuple[int, str]:
    """(count, why): the cores not kept busy by others, within the quota, shared among this run's processes
    on the machine, at most SLURM_CPUS_PER_TASK, at least 1. `why` names what decided it."""
    taken = math.floor((machine.busy or 0.0) + 0.5)
    pool, why = machine.cores - taken, [f"{machine.cores} core{'s' * (machine.cores != 1)}"]
    if machine.busy is None:
        why.append("load not measured (no /proc/stat)")
    elif taken:
        why.append(f"{machine.busy:.1f} busy with other processes")
    if machine.quota is not None and math.floor(machine.quota) < pool:
        pool = math.floor(machine.quota)
        why.append(f"cgroup CPU quota {machine.quota:g}")
    own_cpus = machine.slurm_cpus is not None and machine.cores <= machine.slurm_cpus  # srun bound this task
    if machine.local_ranks > 1 and not own_cpus:
        pool //= machine.local_ranks
        why.append(f"shared by {machine.local_ranks} processes of this run")
    if machine.slurm_cpus is not None and machine.slurm_cpus < pool:
        pool = machine.slurm_cpus
        why.append(f"SLURM_CPUS_PER_TASK={machine.slurm_cpus}")
    return max(pool, 1), ", ".join(why)


def choose_threads(machine: Machine | None, requested: int | None = None, started_with: int | None = None,
                   resumed: bool = False) -> tuple[int, str]:
    """(count, reason) for a CPU process: OMP_NUM_THREADS (`requested`) when set, else the count a resumed run
    started with, else auto_threads. `machine` may be None only when `requested` is given; `resumed` says
    that the run continues from a checkpoint (whose count, if it kept one, is `started_with`)."""
    if requested is not None:
        if started_with not in (None, requested):
            return requested, (f"{THREADS_ENV}={requested}; the run started with {started_with}, so it does not "
                               f"continue bit for bit as the uninterrupted run would")
        return requested, f"{THREADS_ENV}={requested}"
    auto, why = auto_threads(machine)
    if started_with is not None:
        now = "" if auto == started_with else f"; auto would take {auto} now ({why})"
        return started_with, f"kept from the run's start, so it continues exactly{now}; {THREADS_ENV}=N sets it"
    unknown = ("; the checkpoint does not say which count the run started with (written on a GPU or by an older "
               "version), so it may not continue bit for bit") if resumed else ""
    return auto, f"auto: {why}; {THREADS_ENV}=N sets it{unknown}"


def requested_threads(env=None) -> int | None:
    """OMP_NUM_THREADS as a count (None when unset or empty); ValueError naming it when it is no count."""
    env = os.environ if env is None else env
    text = env.get(THREADS_ENV, "").strip()
    count = whole_count(text)
    if text and count is None:
        raise ValueError(f"{THREADS_ENV}={text!r} is not a thread count (a whole number >= 1); unset it to let "
                         f"the run choose")
    return count


# --------------------------------------------------------------------------------------------------
# Reading the machine

def physical_cores(cpus: list[int], sysfs: str = "/sys/devices/system/cpu") -> int:
    """Cores among `cpus`, hyperthread siblings counted once (sysfs thread_siblings_list); the CPUs
    themselves where sysfs does not say."""
    cores = set()
    for cpu in cpus:
        try:
            with open(os.path.join(sysfs, f"cpu{cpu}", "topology", "thread_siblings_list")) as fh:
                cores.add(fh.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(len(cores), 1)


def _words(path: str) -> list[str] | None:
    try:
        with open(path) as fh:
            return fh.read().split()
    except OSError:
        return None


def _quota_in(folder: str, version: int) -> float | None:
    """The CPU quota set on one cgroup folder, in CPUs (None: none, or unreadable)."""
    if version == 2:
        words = _words(os.path.join(folder, "cpu.max"))
        if not words or len(words) != 2 or words[0] == "max":
            return None
        quota, period = words
    else:
        quota, period = (_words(os.path.join(folder, name)) for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
        if not quota or not period:
            return None
        quota, period = quota[0], period[0]
    quota, period = whole_count(quota), whole_count(period)
    if quota is None or period is None:
        return None  # -1 (v1's "no quota") and anything unreadable
    return quota / period


def cgroup_quota(root: str = CGROUP_ROOT, self_cgroup: str = "/proc/self/cgroup") -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its parents, v2 or v1; None without one.
    A cgroup path that is not under `root` (a container that sees only its own cgroup) is looked for from
    its nearest existing parent."""
    try:
        with open(self_cgroup) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            base, version = root, 2
        elif "cpu" in controllers.split(","):
            base = next((os.path.join(root, name) for name in (controllers, "cpu")
                         if os.path.isdir(os.path.join(root, name))), None)
            version = 1
            if base is None:
                continue
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            quota = _quota_in(os.path.join(base, *parts[:depth]), version)
            if quota is not None:
                quotas.append(quota)
    return min(quotas) if quotas else None


def cpu_ticks(stat_text: str, cpus: list[int]) -> dict[int, tuple[int, int]]:
    """{cpu: (busy ticks, all ticks)} of `cpus` from /proc/stat's per-CPU lines. Busy: user, nice, system,
    irq, softirq and steal (time the hypervisor gave to others); idle and iowait are free."""
    wanted, out = set(cpus), {}
    for line in stat_text.splitlines():
        match = re.match(r"cpu(\d+)\s+(.*)", line)
        if not match or int(match.group(1)) not in wanted:
            continue
        values = [int(v) for v in match.group(2).split()[:8]]
        values += [0] * (8 - len(values))
        user, nice, system, idle, iowait, irq, softirq, steal = values
        busy = user + nice + system + irq + softirq + steal
        out[int(match.group(1))] = (busy, busy + idle + iowait)
    return out


def others_busy(before: dict, after: dict, own_cpu_s: float, wall_s: float) -> float | None:
    """CPUs kept busy by other processes between two cpu_ticks samples `wall_s` apart, during which this
    process used `own_cpu_s` of CPU time: the busy share of the ticks times the CPUs, less this process."""
    cpus = [c for c in after if c in before]
    total = sum(after[c][1] - before[c][1] for c in cpus)
    if total <= 0 or wall_s <= 0:
        return None
    busy = sum(after[c][0] - before[c][0] for c in cpus) / total * len(cpus)
    return max(busy - own_cpu_s / wall_s, 0.0)


def busy_cpus(cpus: list[int], sample_s: float = LOAD_SAMPLE_S) -> float | None:
    """CPUs of `cpus` kept busy by other processes over the next `sample_s` seconds (None where /proc/stat
    cannot be read)."""
    def sample():
        try:
            with open("/proc/stat") as fh:
                return cpu_ticks(fh.read(), cpus), time.process_time(), time.monotonic()
        except OSError:
            return {}, 0.0, 0.0

    before, own_before, t_before = sample()
    time.sleep(sample_s)
    after, own_after, t_after = sample()
    return others_busy(before, after, own_after - own_before, t_after - t_before)


def read_machine(env=None, sample_s: float = LOAD_SAMPLE_S) -> Machine:
    """This process's Machine (takes `sample_s` seconds: the load is sampled)."""
    env = os.environ if env is None else env
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return Machine(cores=physical_cores(cpus), busy=busy_cpus(cpus, sample_s), quota=cgroup_quota(),
                   local_ranks=local_ranks(env), slurm_cpus=cpus_per_task(env))


def use_threads(info: DistInfo, requested: int | None, ckpt: dict | None = None, log=print) -> tuple[int, str]:
    """Choose the thread count (rank 0 decides, every rank takes it), set it, log it with its reason and return
    both. `requested`: requested_threads(); `ckpt`: the checkpoint a run resumes from."""
    if info.device.type != "cpu":
        if requested is not None:
            torch.set_num_threads(requested)
        source = f"{THREADS_ENV}={requested}" if requested else "torch default"
        count, reason = torch.get_num_threads(), f"{source}; on {info.device.type} the CPU only feeds the device"
    else:
        decision = None
        if info.master:
            started_with = ckpt.get("cpu_threads") if ckpt is not None else None
            decision = choose_threads(read_machine() if requested is None else None, requested, started_with,
                                      resumed=ckpt is not None)
        count, reason = broadcast_object(decision, info)
        torch.set_num_threads(count)
    log(f"threads: {count} ({reason})")
    return count, reason
