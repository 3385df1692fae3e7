"""Distributed training on CPU with gloo: torchrun and srun launches, the same experiment at any
scale, gradient accumulation without needless all-reduces, and preemption of a 2-rank run.

Every multi-process run is a real launch: torchrun is `python -m torch.distributed.run`, srun is
simulated by starting one process per rank with SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS and
MASTER_ADDR / MASTER_PORT set, as srun would. Launches cost seconds of imports each on these
machines, so one uninterrupted 2-rank run serves several tests.
"""

import os
import re
import signal
import socket
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import curriculum_lowmem
import prng_train_lowmem
from utils import distributed, trainer
from utils.run import run_identity
from utils.distributed import DistInfo
from utils.gpt2 import GPTConfig, build_model
from tests.helpers import clean_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300  # seconds for one launch; a hung rendezvous fails the test instead of hanging it
MODEL = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def torchrun(script, args, nproc=2, **popen):
    # `--` ends torchrun's own options: without it torchrun reads the script's `--m` as an ambiguous
    # abbreviation of its --master-addr/--max-restarts/... and refuses to start.
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port",
           str(free_port()), script, "--", *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO, env=clean_env(), text=True, **popen)


def srun(script, args, ntasks=2):
    """One process per rank with the variables srun sets (single node), like `srun -n 2 python script`."""
    port = str(free_port())
    return [subprocess.Popen([sys.executable, script, *map(str, args)], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=clean_env(SLURM_PROCID=str(r), SLURM_LOCALID=str(r), SLURM_NTASKS=str(ntasks),
                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
            for r in range(ntasks)]


def wait_all(procs):
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    return [p.returncode for p in procs], outs


def read_eval(path):
    return pd.read_csv(path, sep="\t", index_col=0)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def one(folder, pattern):
    found = sorted(n for n in os.listdir(folder) if re.fullmatch(pattern, n))
    assert len(found) == 1, (pattern, os.listdir(folder))
    return os.path.join(folder, found[0])


def assert_params_close(a, b, exact=False):
    assert set(a) == set(b)
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)




# --------------------------------------------------------------------------------------------------
# 1. Who is rank what: torchrun first, then srun, else one process.

@pytest.mark.parametrize("env, expected", [
    ({}, (0, 0, 1)),
    ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}, (3, 1, 4)),
    ({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8"}, (5, 1, 8)),
    ({"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "1"}, (0, 0, 1)),
    # torchrun started by srun (one task per node): torchrun's numbering is the one that counts
    ({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "4", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, (2, 0, 4)),
    # an srun step in a real job: the step's task count, not the job's
    ({"SLURM_JOB_ID": "77", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8",
      "SLURM_STEP_NUM_TASKS": "2"}, (1, 1, 2)),
    # plain `python script.py` inside an sbatch script with --ntasks 4: one process, not rank 0 of 4
    ({"SLURM_JOB_ID": "77", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "4"}, (0, 0, 1)),
], ids=["plain", "torchrun", "srun", "srun_one_task", "torchrun_under_srun", "srun_step", "sbatch_script"])
def test_launch_env(env, expected):
    assert distributed.launch_env(env) == expected


def test_rendezvous_defaults():
    assert distributed.rendezvous({"MASTER_ADDR": "node7", "MASTER_PORT": "1234"}) == ("node7", "1234")
    assert distributed.rendezvous({}) == ("127.0.0.1", "29500")
    # two jobs sharing a node get different ports
    assert distributed.rendezvous({"SLURM_JOB_ID": "123456"}) == ("127.0.0.1", str(20000 + 123456 % 10000))
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        distributed.rendezvous({"SLURM_JOB_ID": "1", "SLURM_STEP_NUM_NODES": "2"})


@pytest.mark.parametrize("visible, local_rank, expected", [(4, 2, 2), (1, 3, 0), (2, 3, None)],
                         ids=["gpu_per_local_rank", "srun_gpus_per_task", "too_few_gpus"])
def test_each_rank_gets_its_own_gpu(monkeypatch, visible, local_rank, expected):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    if expected is None:
        with pytest.raises(ValueError, match="local rank 3"):
            distributed.resolve_device("cuda", local_rank)
    else:
        assert distributed.resolve_device("cuda", local_rank) == torch.device("cuda", expected)
        assert chosen == [expected]


def test_resume_may_change_batch_size_and_world_size_together():
    ckpt = {"batch_size": 4, "world_size": 2, "lr_trgt": 1e-3}
    assert run_identity({"batch_size": 8, "world_size": 1, "lr_trgt": 1e-3}) == run_identity(ckpt)  # same global batch
    assert run_identity({"batch_size": 8, "world_size": 2, "lr_trgt": 1e-3}) != run_identity(ckpt)


def test_the_ranks_meet_before_the_group_is_torn_down(monkeypatch):
    # Rank 1 used to leave while rank 0 still wrote the final files: gloo then aborted it at exit
    # (SIGABRT, status 134) in about 1 of 6 runs. bench.ranks counts the exit statuses of real runs.
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    info = DistInfo(rank=1, world_size=2)
    distributed.cleanup(info)
    assert calls == ["barrier", "destroy"]
    calls.clear()
    distributed.cleanup(info, agreed=False)  # after a crash the other rank may wait in another collective
    assert calls == ["destroy"]


EXIT = """
import sys
from utils.preemption import exit_with, skip_teardown_at_exit
if sys.argv[1] == "left_a_group":
    skip_teardown_at_exit()
print("done", flush=False)  # still buffered when the process ends
exit_with(lambda: int(sys.argv[2]) if sys.argv[3] == "returns" else sys.exit(int(sys.argv[2])))
"""


@pytest.mark.parametrize("how", ["returns", "raises"])
@pytest.mark.parametrize("group", ["left_a_group", "never_in_one"])
def test_a_script_exits_with_its_status_and_its_output_whatever_the_teardown(how, group):
    for status in (0, 2, 75):
        result = subprocess.run([sys.executable, "-c", EXIT, group, str(status), how], cwd=REPO, env=clean_env(),
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == status and result.stdout == "done\n", (status, result)


# --------------------------------------------------------------------------------------------------
# 2. Gradient accumulation all-reduces once per update, not once per micro-batch.

class CountingTask(trainer.Task):
    """Random tokens; only what train() needs."""

    def __init__(self, batch, context):
        self.batch, self.context = batch, context

    def lr(self, update):
        return 1e-3

    def micro_batch(self, micro_step, update):
        g = torch.Generator().manual_seed(micro_step)
        tokens = torch.randint(0, 16, (self.batch, self.context + 1), generator=g)
        return tokens[:, :-1], tokens[:, 1:]

    def evaluate(self, model):
        return {}

    def record(self, step, train, test, lr):
        pass

    def progress(self, *args):
        return ""


def test_accumulation_all_reduces_once_per_update(tmp_path):
    # A one-process gloo group is enough to see DDP's reducer: the comm hook runs once per bucket
    # for every backward that synchronises.
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        calls = {}
        for G in (1, 3):
            torch.manual_seed(0)
            model = build_model(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=32), False)
            ddp = DistributedDataParallel(model)
            calls[G] = 0

            def hook(state, bucket, G=G):
                calls[G] += 1
                # What an all-reduce over one rank gives, as a future completed here: torch's allreduce_hook
                # finishes with a Python callback on gloo's thread, and if the test ends while that thread
                # still waits for the GIL to free it, DDP's teardown (holding the GIL) waits for the thread.
                done = torch.futures.Future()
                done.set_result(bucket.buffer())
                return done

            ddp.register_comm_hook(None, hook)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            loop = trainer.LoopConfig(num_steps=4, grad_acc_steps=G, eval_interval=100, checkpoint_interval=100,
                                      save_checkpoints=False, dtype=torch.float32, digits=1)
            state = trainer.train(model, ddp, optimizer, CountingTask(4, 8), loop, DistInfo(), trainer.TrainState(),
                                  log=lambda *a: None)
            assert state.update == 4 and state.micro_step == 4 * G
        assert calls[1] > 0 and calls[1] % 4 == 0  # whole buckets, every update
        assert calls[3] == calls[1]  # 12 micro-batches, still 4 all-reduces
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# 3. The same experiment at any scale: 2 ranks x batch 4 == 1 rank x batch 8 (both with G = 2), so
#    the effective batch and every file name are the same. The test sets (27 sequences, 9 per type
#    or modulus) do not divide into 2 x 4, so every rank's last evaluation batch is partial.

SINGLE = ["--type", "LCG+XSLRR", "--control_bits", "1,2", "--m", "1024", *MODEL, "--n_a", "4", "--n_c", "4",
          "--n_test_a", "3", "--n_test_c", "3", "--num_steps", "100", "--eval_interval", "10", "--warm_steps", "5",
          "--grad_acc_steps", "2", "--save_checkpoints", "--checkpoint_interval", "50", "--save_params"]
SINGLE_BASE = ("LCG+XSLRR_m1024_cb1_2_kp10_vs1024_sl9_b1024_nd1_na4_nc4_ne1_n32_h2_d1_rope_dI1_I1_lr0.001000"
               "_Twarm5_T100_B16_wd0.5")


@pytest.fixture(scope="module")
def ddp_single(tmp_path_factory):
    """The uninterrupted 2-rank run under torchrun (also the reference of the preemption test)."""
    out = tmp_path_factory.mktemp("ddp_single")
    proc = torchrun("prng_train_lowmem.py", [*SINGLE, "--batch_size", "4", "--results_dir", out],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stdout = proc.communicate(timeout=TIMEOUT)[0]
    assert proc.returncode == 0, stdout
    return out, stdout


@pytest.mark.slow  # torchrun: three processes
def test_torchrun_two_ranks_match_one_rank_with_twice_the_batch(ddp_single, tmp_path):
    out, stdout = ddp_single
    assert "world size 2" in stdout
    assert prng_train_lowmem.main([*SINGLE, "--batch_size", "8", "--results_dir", str(tmp_path)]) == 0
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path))  # same names: _B16_ in both
    two, one_ = read_eval(out / f"eval_{SINGLE_BASE}.tab"), read_eval(tmp_path / f"eval_{SINGLE_BASE}.tab")
    assert two["step"].tolist() == list(range(0, 101, 10))
    pd.testing.assert_frame_equal(two, one_, check_exact=False, rtol=1e-4, atol=1e-6)
    per_type = [pd.read_csv(d / f"per_type_eval_{SINGLE_BASE}.csv") for d in (out, tmp_path)]
    pd.testing.assert_frame_equal(*per_type, check_exact=False, rtol=1e-4, atol=1e-6)
    assert_params_close(load(out / f"params_{SINGLE_BASE}.pth"), load(tmp_path / f"params_{SINGLE_BASE}.pth"))
    # The model learns something, so agreeing tables are not two flat lines.
    assert two["train_loss"].iloc[-1] < two["train_loss"].iloc[1] - 0.5


def curriculum_yaml(path, results_dir, batch_size):
    path.write_text(f"""
model: {{n_layer: 1, n_head: 2, n_embd: 32}}
data: {{type: LCG, seq_len: 9, n_a: 4, n_c: 4, n_test_a: 3, n_test_c: 3}}
curriculum:
  moduli: [256, 1024]
  sampler_update_interval: 4
  phases:
    - {{phase_steps: 12, warmup_steps: 2, transition_steps: 12, transition: linear,
       start_weights: [1.0, 0.1], end_weights: [0.2, 1.0]}}
    - {{phase_steps: 8, lr_decay: cosine, end_weights: [0.2, 1.0]}}
training: {{batch_size: {batch_size}, grad_acc_steps: 2, lr_trgt: 1.0e-3, eval_interval: 5}}
output: {{results_dir: {results_dir}, save_params: true}}
""")
    return path


@pytest.mark.slow  # two processes
def test_srun_two_ranks_match_one_rank_for_the_curriculum(tmp_path):
    two, one_ = tmp_path / "two", tmp_path / "one"
    procs = srun("curriculum_lowmem.py", ["--config", curriculum_yaml(tmp_path / "two.yaml", two, 4)])
    assert curriculum_lowmem.main(["--config", str(curriculum_yaml(tmp_path / "one.yaml", one_, 8))]) == 0
    codes, outs = wait_all(procs)
    assert codes == [0, 0], outs
    assert "world size 2" in outs[0] and "step" not in outs[1]  # rank 1 stays quiet
    assert sorted(os.listdir(two)) == sorted(os.listdir(one_))
    table = [pd.read_csv(one(d, r".*_B16_.*\.csv")) for d in (two, one_)]
    assert table[0]["step"].tolist() == [0, 5, 10, 15, 20]
    assert {f"test_acc_m{m}" for m in (256, 1024)} <= set(table[0].columns)
    pd.testing.assert_frame_equal(*table, check_exact=False, rtol=1e-4, atol=1e-6)
    models = [load(one(d, r"multi_curriculum_model_lazy_.*\.pt"))["model_state_dict"] for d in (two, one_)]
    assert_params_close(*models)


# --------------------------------------------------------------------------------------------------
# 4. Preemption of a 2-rank run. SIGTERM goes to the torchrun agent, which forwards it to both
#    workers (its default --signals-to-handle); the workers finish the update, write a checkpoint and
#    exit 75, and torchrun itself reports the shutdown with status 1. The run is then resumed with
#    srun-style launching (any launcher continues any other) and matches the uninterrupted run exactly;
#    resumed on one rank with twice the batch it matches within float tolerance.

@pytest.mark.slow  # torchrun and srun-style processes, stopped and resumed
def test_sigterm_to_torchrun_checkpoints_and_resume_is_exact(ddp_single, tmp_path):
    out = tmp_path / "run"
    proc = torchrun("prng_train_lowmem.py", [*SINGLE, "--batch_size", "4", "--results_dir", out],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        match = re.match(r"step\s+(\d+)/100", line)
        if match and int(match.group(1)) > 0:
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stdout.readlines()
    stdout = "".join(lines)
    assert proc.wait(timeout=TIMEOUT) != 0, stdout
    stop = re.search(r"stopped by signal at step (\d+); checkpoint (\S+); continue with --resume auto", stdout)
    assert stop, stdout
    step = int(stop.group(1))
    assert 10 <= step < 100 and os.path.isfile(stop.group(2))
    assert not os.path.exists(out / f"params_{SINGLE_BASE}.pth")

    codes, outs = wait_all(srun("prng_train_lowmem.py", [*SINGLE, "--batch_size", "4", "--results_dir", out,
                                                         "--resume", "auto"]))
    assert codes == [0, 0], outs
    assert f"resume: from {stop.group(2)}" in outs[0]
    reference = ddp_single[0]
    pd.testing.assert_frame_equal(read_eval(out / f"eval_{SINGLE_BASE}.tab"),
                                  read_eval(reference / f"eval_{SINGLE_BASE}.tab"), check_exact=True)
    assert_params_close(load(out / f"params_{SINGLE_BASE}.pth"), load(reference / f"params_{SINGLE_BASE}.pth"),
                        exact=True)

    # The same checkpoint resumed by one process with batch 8 (in another folder: the run in `out` is
    # finished): the global batches are the same.
    other = out.parent / (out.name + "_one_process")
    assert prng_train_lowmem.main([*SINGLE, "--batch_size", "8", "--results_dir", str(other),
                                   "--resume", stop.group(2)]) == 0
    pd.testing.assert_frame_equal(read_eval(other / f"eval_{SINGLE_BASE}.tab"),
                                  read_eval(reference / f"eval_{SINGLE_BASE}.tab"), check_exact=False,
                                  rtol=1e-4, atol=1e-6)
    assert_params_close(load(other / f"params_{SINGLE_BASE}.pth"), load(reference / f"params_{SINGLE_BASE}.pth"))
