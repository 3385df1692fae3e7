"""curriculum_finetune.sh on a real Slurm cluster (docs/clusters.md, "Sweeps on SLURM").

The test starts a one-node cluster on this machine (slurmctld and slurmd with a config in a temporary
directory), submits the sweep the way docs/clusters.md says, with command-line options that fit it to the
test node and FT_* variables that shrink the README example to a tiny model, and checks what the four
array tasks wrote: one run per (lr, wd) point, each trained by two srun processes forming one DDP
group, and no temporary YAML left behind, after success and after failure. A second set of jobs (two
overlapping arrays and a single job, in a partition that lets them share the node's CPUs) holds all its
DDP groups at the same moment, so that their rendezvous ports must all differ.

Slurm is required: a missing binary or a daemon that does not come up fails the test with the reason.
"""

import json
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from utils.distributed import rendezvous

pytestmark = pytest.mark.slow  # a Slurm cluster, started here

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "curriculum_finetune.sh"
PARTITION = "test"
OVERLAP_PARTITION = "overlap"  # the node's CPUs shared by up to OVERLAP_JOBS jobs at once
OVERLAP_JOBS = 12
START_TIMEOUT_S = 60
JOB_TIMEOUT_S = 600

# The sweep: task t -> (lrs[(t / 2) % 2], wds[t % 2]), as they appear in file names.
GRID = {0: ("0.0001", "0.0"), 1: ("0.0001", "0.1"), 2: ("0.0005", "0.0"), 3: ("0.0005", "0.1")}
BATCH = 4
TINY_PHASES = [
    {"name": "transition", "phase_steps": 3, "warmup_steps": 1, "transition_steps": 3, "transition": "exp",
     "start_weights": [0.5, 0.5], "end_weights": [0.0, 1.0]},
    {"name": "decay", "phase_steps": 2, "lr_decay": "cosine", "end_weights": [0.0, 1.0]},
]
TINY = (f"--n_layer 1 --n_head 2 --n_embd 32 --seq_len 9 --n_a 4 --n_c 4 --n_test_a 2 --n_test_c 2 "
        f"--batch_size {BATCH} --eval_interval 2 --device cpu --custom_phases {shlex.quote(json.dumps(TINY_PHASES))}")
# Fit the directives to the test node: no GPUs, its partition, one CPU per task, little memory.
SBATCH_OVERRIDES = ["--gpus-per-node=0", f"--partition={PARTITION}", "--cpus-per-task=1", "--mem=500M",
                    "--time=00:15:00"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no file)"
    return f"--- {path.name}:\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    root: Path
    env: dict
    daemons: dict

    def run(self, *args, env=None, cwd=None, check=True) -> subprocess.CompletedProcess:
        result = subprocess.run(args, env=env or self.env, cwd=cwd, capture_output=True, text=True, timeout=60)
        if check and result.returncode:
            pytest.fail(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}\n{self.logs()}")
        return result

    def logs(self) -> str:
        return "\n".join(tail(self.root / f"{name}.log") for name in self.daemons)

    def check_daemons(self) -> None:
        for name, proc in self.daemons.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}\n{self.logs()}")

    def query(self, *args) -> str | None:
        """The output of a Slurm query command, or None if it failed or hung this time (slurmctld busy on
        a loaded machine): the caller asks again, and never reads a failed query as an empty answer."""
        try:
            result = self.run(*args, check=False)
        except subprocess.TimeoutExpired:
            return None
        return result.stdout if result.returncode == 0 else None

    def job_states(self, job_id: str) -> list[dict] | None:
        """`scontrol show job` fields of every task of array job `job_id` (one record for the tasks not
        started yet), or None if slurmctld did not answer."""
        out = self.query("scontrol", "-o", "show", "job", job_id)
        if out is None:
            return None
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]

    def job_records(self, job_id: str) -> dict[int, dict]:
        """Array task id -> `scontrol show job` fields of every task of array job `job_id`."""
        for _ in range(10):
            records = self.job_states(job_id)
            if records is not None:
                return {int(r["ArrayTaskId"]): r for r in records}
            time.sleep(3)
        pytest.fail(f"scontrol show job {job_id} kept failing\n{self.logs()}")


def slurm_conf(root: Path, host: str) -> str:
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    return "\n".join([
        "ClusterName=prngtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        # auth/none (no munge daemon to run) is still shipped with Debian 12's Slurm 22.05.
        "AuthType=auth/none",
        "CredType=cred/none",
        "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "JobAcctGatherType=jobacct_gather/none",
        "SlurmdParameters=config_overrides",  # the node may declare more CPUs than this machine has
        f"SlurmdSpoolDir={root}/spool",
        f"StateSaveLocation={root}/state",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log",
        f"SlurmdLogFile={root}/slurmd.log",
        "MailProg=/bin/true",  # the script asks for mail on failure
        "MinJobAge=3600",  # keep finished jobs visible to scontrol
        "ReturnToService=2",
        # The script's MASTER_PORT comes from the job id: other test clusters on this host must not
        # hand out the same ids.
        f"FirstJobId={random.randrange(1000, 29000, 10)}",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={max(2, os.cpu_count() or 1)} RealMemory=4000 State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        f"PartitionName={OVERLAP_PARTITION} Nodes={host} MaxTime=INFINITE State=UP OverSubscribe=FORCE:{OVERLAP_JOBS}",
        ""])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
               if shutil.which(b) is None]
    if missing:
        pytest.fail(f"Slurm is not installed ({', '.join(missing)} not found): apt-get install -y slurm-wlm munge, "
                    f"as .ci/run does")
    root = tmp_path_factory.mktemp("slurm")
    (root / "spool").mkdir()
    (root / "state").mkdir()
    host = socket.gethostname().split(".")[0]
    (root / "slurm.conf").write_text(slurm_conf(root, host))
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf"), "OMP_NUM_THREADS": "1"}
    c = Cluster(root, env, {})
    try:
        for name in ("slurmctld", "slurmd"):
            with open(root / f"{name}.out", "w") as out:
                c.daemons[name] = subprocess.Popen([name, "-D"], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            c.check_daemons()
            state = c.run("sinfo", "-h", "-N", f"--partition={PARTITION}", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                break
            if time.monotonic() > deadline:
                node = c.run("scontrol", "show", "node", check=False).stdout
                pytest.fail(f"the test node did not become idle in {START_TIMEOUT_S} s (state {state!r})\n{node}\n"
                            f"{c.logs()}\n{tail(root / 'slurmctld.out')}\n{tail(root / 'slurmd.out')}")
            time.sleep(0.5)
        yield c
    finally:
        if c.daemons.get("slurmctld") and c.daemons["slurmctld"].poll() is None:
            for partition in (PARTITION, OVERLAP_PARTITION):
                c.run("scancel", f"--partition={partition}", check=False)
            deadline = time.monotonic() + 30
            while c.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(1)
        for proc in reversed(list(c.daemons.values())):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Sweep:
    work: Path  # the submit directory
    results: Path
    job_id: str
    records: dict
    failing_job_id: str
    failing_records: dict


def submit(c: Cluster, work: Path, *extra: str, env: dict, options=tuple(SBATCH_OVERRIDES)) -> str:
    """sbatch from `work` (the job's SLURM_SUBMIT_DIR); the array job id."""
    result = c.run("sbatch", "--parsable", *options, *extra, str(SCRIPT), env=env, cwd=work)
    return result.stdout.strip().split(";")[0]


# Job states after which a task runs no more (COMPLETING, for one, is not among them).
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}


def wait_for(c: Cluster, job_ids: list[str], timeout_s: float, what: str, logs: Path | None = None) -> None:
    """Until every task of the array jobs `job_ids` has ended, as slurmctld records it."""
    deadline = time.monotonic() + timeout_s
    while True:
        c.check_daemons()
        states = [c.job_states(job_id) for job_id in job_ids]
        if all(s is not None and s and all(r.get("JobState") in ENDED for r in s) for s in states):
            return
        if time.monotonic() > deadline:
            queue = c.query("squeue") or "(squeue failed)"
            tails = "\n".join(tail(p, 5) for p in sorted(logs.glob("*"))) if logs else ""
            pytest.fail(f"{what} did not finish in {timeout_s} s:\n{queue}\n{c.logs()}\n{tails}")
        time.sleep(2)


def copy_code(work: Path, *names: str) -> None:
    """Copies, not links: the tasks start over minutes, and each must run the code as it was when the
    test began, not a file that is being edited in the working tree meanwhile."""
    for name in names:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, work / name)


@pytest.fixture(scope="module")
def sweep(cluster, tmp_path_factory):
    """Submit the sweep (and a task that fails) from a directory laid out like the repository root."""
    work = tmp_path_factory.mktemp("submit")
    (work / "configs").mkdir()
    copy_code(work, "curriculum_lowmem.py", "utils", "configs/curriculum.yaml")
    (work / "out" / "FT").mkdir(parents=True)  # docs/clusters.md's `mkdir -p out/FT` before the first sbatch
    results = work / "results_FT"
    env = {**cluster.env, "FT_PYTHON": sys.executable, "FT_RESULTS_DIR": str(results), "FT_OVERRIDES": TINY}
    job_id = submit(cluster, work, env=env)
    failing = submit(cluster, work, "--array=0", env={**env, "FT_RESULTS_DIR": str(work / "results_bad"),
                                                     "FT_OVERRIDES": TINY + " --n_layer 0"})
    wait_for(cluster, [job_id, failing], JOB_TIMEOUT_S, "the sweep", work / "out" / "FT")
    return Sweep(work, results, job_id, cluster.job_records(job_id), failing, cluster.job_records(failing))


def task_logs(sweep: Sweep, task: int) -> str:
    return "\n".join(tail(sweep.work / "out" / "FT" / f"{sweep.job_id}_{task}.{ext}") for ext in ("out", "err"))


# Two arrays and a single job at once. What each task runs is a stand-in for curriculum_lowmem.py
# that only joins the task's DDP group the way the training does (utils.distributed.setup: env://
# rendezvous on MASTER_ADDR:MASTER_PORT as the script sets them, gloo on CPU), so that eighteen
# processes fit on a small machine. Each rank then waits until every rank of every job has joined its group: all
# the groups, and the rendezvous servers on their ports, exist at the same moment. Two tasks given one
# port cannot both get there (the second server cannot listen; a rank may join the wrong group).
OVERLAP_RANKS = 2 * (4 + 4 + 1)  # two srun processes per task: two whole arrays and a single job
OVERLAP_WAIT_S = 180  # for the last rank to join (each imports torch; the node's CPUs are shared)
OVERLAP_TIMEOUT_S = 300
OVERLAP_STAND_IN = f"""\
import json, os, sys, time

import torch
import yaml

from utils import distributed

results = yaml.safe_load(open(sys.argv[sys.argv.index("--config") + 1]))["output"]["results_dir"]
os.makedirs(results, exist_ok=True)
info = distributed.setup("cpu")
job = os.environ["SLURM_JOB_ID"]
open(os.path.join(results, f"joined_{{job}}_{{info.rank}}"), "w").close()
deadline = time.monotonic() + {OVERLAP_WAIT_S}
while True:
    joined = sum(name.startswith("joined_") for name in os.listdir(results))
    if joined >= {OVERLAP_RANKS} or time.monotonic() > deadline:
        break
    time.sleep(0.5)
total = distributed.all_reduce_sum(torch.tensor([info.rank + 1.0], dtype=torch.float64), info).item()
record = dict(job=job, task=os.environ.get("SLURM_ARRAY_TASK_ID"), rank=info.rank, world_size=info.world_size,
              port=os.environ["MASTER_PORT"], joined_when_all_waited=joined, rank_sum=total)
with open(os.path.join(results, f"record_{{job}}_{{info.rank}}.json"), "w") as fh:
    json.dump(record, fh)
distributed.cleanup(info)
"""


@dataclass
class Overlap:
    work: Path
    results: Path
    records: dict  # job id -> `scontrol show job` fields, for every task of the three submissions


@pytest.fixture(scope="module")
def overlap(cluster, tmp_path_factory):
    """Submit two whole arrays and a single job to the partition whose node they can share."""
    work = tmp_path_factory.mktemp("overlap")
    (work / "configs").mkdir()
    copy_code(work, "utils", "configs/curriculum.yaml")
    (work / "curriculum_lowmem.py").write_text(OVERLAP_STAND_IN)
    (work / "out" / "FT").mkdir(parents=True)
    results = work / "results"
    env = {**cluster.env, "FT_PYTHON": sys.executable, "FT_RESULTS_DIR": str(results)}
    options = [o for o in SBATCH_OVERRIDES if not o.startswith("--partition=")] + [f"--partition={OVERLAP_PARTITION}"]
    ids = [submit(cluster, work, env=env, options=options), submit(cluster, work, env=env, options=options),
           submit(cluster, work, "--array=0", env=env, options=options)]
    wait_for(cluster, ids, OVERLAP_TIMEOUT_S, "the overlapping jobs", work / "out" / "FT")
    records = {r["JobId"]: r for job_id in ids for r in cluster.job_records(job_id).values()}
    return Overlap(work, results, records)


# --------------------------------------------------------------------------------------------------

def test_directives_are_the_originals_with_an_array_over_the_whole_grid():
    directives = [line.split(None, 1)[1] for line in SCRIPT.read_text().splitlines() if line.startswith("#SBATCH")]
    assert directives == ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=8", "--time=18:00:00", "--job-name=FT",
                          "--output=out/FT/%A_%a.out", "--error=out/FT/%A_%a.err", "--mem=64G",
                          "--gpus-per-node=a100:2", "--partition=gpu", "--mail-user=", "--mail-type=FAIL",
                          "--array=0-3"]


def test_all_four_array_tasks_complete(sweep):
    assert sorted(sweep.records) == [0, 1, 2, 3]
    for task, record in sweep.records.items():
        assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), task_logs(sweep, task)
        assert (sweep.work / "out" / "FT" / f"{sweep.job_id}_{task}.out").is_file()


def test_each_task_trains_its_lr_wd_point_with_an_effective_batch_of_two_processes(sweep):
    csvs = sorted(p.name for p in sweep.results.glob("XSLRR_*.csv"))
    assert len(csvs) == 4, csvs
    for task, (lr, wd) in GRID.items():
        [name] = [n for n in csvs if f"_lr{lr}_wd{wd}_" in n]
        assert f"_B{2 * BATCH}_" in name and "_moduli65536_262144_" in name


def test_the_two_srun_processes_form_one_ddp_group(sweep):
    models = sorted(sweep.results.glob("multi_curriculum_model_lazy_*.pt"))
    assert len(models) == 4
    points = set()
    for path in models:
        config = torch.load(path, map_location="cpu", weights_only=True)["config"]
        assert (config["world_size"], config["effective_batch"]) == (2, 2 * BATCH), path.name
        points.add((str(config["lr_trgt"]), str(config["weight_decay"])))
    assert points == set(GRID.values())
    for task in GRID:
        assert "world size 2" in (sweep.work / "out" / "FT" / f"{sweep.job_id}_{task}.out").read_text()


def test_the_generated_yaml_is_the_base_config_with_the_sweep_values(sweep):
    """What the runs read: the README example's settings, the swept values, the FT outputs."""
    model = next(sweep.results.glob("multi_curriculum_model_lazy_*_lr0.0005_wd0.1_*.pt"))
    config = torch.load(model, map_location="cpu", weights_only=True)["config"]
    assert (config["experiment_name"], config["type"], config["moduli"], config["vocab_size"]) == \
        ("xslrr_65536_to_262144", "XSLRR", [65536, 262144], 1024)
    assert (config["lr_trgt"], config["weight_decay"], config["lr_min"]) == (5e-4, 0.1, 1e-7)
    assert (config["results_dir"], config["save_params"], config["save_correctness"]) == (str(sweep.results), True, True)
    assert (config["save_checkpoints"], config["checkpoint_interval"]) == (True, 1000)  # read under output:
    assert (config["use_wandb"], config["wandb_project"]) == (False, "prng_curriculum")
    assert (config["n_layer"], config["seq_len"], config["num_steps"]) == (1, 9, 5)  # FT_OVERRIDES win
    stem = model.name.removeprefix("multi_curriculum_model_lazy_").removesuffix(".pt")
    assert (sweep.results / f"multi_curriculum_checkpoint_{stem}_step5.pt").is_file()


def test_rendezvous_port_comes_from_the_task_s_own_job_id(sweep):
    """The port srun's ranks would pick by themselves (utils/distributed.py) for the task's job id."""
    ports = set()
    for task, record in sweep.records.items():
        port = rendezvous({"SLURM_JOB_ID": record["JobId"]})[1]
        assert port == str(20000 + int(record["JobId"]) % 10000)
        out = (sweep.work / "out" / "FT" / f"{sweep.job_id}_{task}.out").read_text()
        assert re.search(rf"rendezvous \S+:{port}\n", out), out
        ports.add(port)
    assert len(ports) == 4


def test_two_overlapping_arrays_and_a_single_job_all_complete(overlap):
    assert len(overlap.records) == 2 * 4 + 1
    for job_id, record in overlap.records.items():
        name = f"{record['ArrayJobId']}_{record['ArrayTaskId']}"
        logs = "\n".join(tail(overlap.work / "out" / "FT" / f"{name}.{ext}") for ext in ("out", "err"))
        assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), logs


def test_the_overlapping_tasks_held_their_groups_at_once_on_ports_of_their_own(overlap):
    records = [json.loads(p.read_text()) for p in sorted(overlap.results.glob("record_*.json"))]
    assert len(records) == OVERLAP_RANKS
    by_job = {}
    for r in records:
        # every rank saw all the others joined before leaving: the groups overlapped in time
        assert r["joined_when_all_waited"] == OVERLAP_RANKS, r
        # each task formed a group of its own two ranks (1 + 2), with no rank of another task
        assert (r["world_size"], r["rank_sum"]) == (2, 3.0), r
        by_job.setdefault(r["job"], []).append(r)
    assert set(by_job) == set(overlap.records)
    ports = {}
    for job, ranks in by_job.items():
        assert sorted(r["rank"] for r in ranks) == [0, 1]
        assert {r["port"] for r in ranks} == {rendezvous({"SLURM_JOB_ID": job})[1]}
        ports[job] = ranks[0]["port"]
    assert len(set(ports.values())) == len(ports), ports


def test_no_temporary_yaml_is_left_after_success_or_failure(sweep):
    assert sorted(p.name for p in (sweep.work / "configs").iterdir()) == ["curriculum.yaml"]
    [record] = sweep.failing_records.values()
    assert record["JobState"] == "FAILED" and record["ExitCode"] == "2:0", record
    err = (sweep.work / "out" / "FT" / f"{sweep.failing_job_id}_0.err").read_text()
    assert "n_layer must be >= 1" in err
