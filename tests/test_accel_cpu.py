"""The accelerator path, as far as it runs on a CPU, in the normal suite (issue 14): device choice per
rank, the CPU pinning of the suite, torch.compile (inductor's CPU backend) and bf16 autocast end to end
with checkpoint -> resume, torchrun with compile, the fused AdamW update, and compiled checkpoints
loading into uncompiled models. The CUDA-only checks are in tests/test_cuda.py."""

import pytest
import torch

from utils import distributed


# --------------------------------------------------------------------------------------------------
# 1. One GPU per rank: two ranks on a one-GPU host are an error before NCCL sees them.

def fake_gpus(monkeypatch, visible):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_torchrun_with_more_local_ranks_than_gpus_is_a_one_line_error(monkeypatch):
    chosen = fake_gpus(monkeypatch, 1)
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    assert distributed.local_world_size(env) == 2
    with pytest.raises(ValueError, match=r"^2 processes on this node need a GPU each, but it shows 1 .*"
                                         r"--nproc_per_node=1"):
        distributed.resolve_device("cuda", 1, distributed.local_world_size(env))
    with pytest.raises(ValueError, match="2 processes"):  # rank 0 stops too: it would wait for rank 1
        distributed.resolve_device("auto", 0, 2)
    assert chosen == []  # no GPU was claimed


def test_srun_gpus_per_task_still_takes_its_only_gpu(monkeypatch):
    chosen = fake_gpus(monkeypatch, 1)
    # srun gives no local world size: a task that sees one GPU takes it, whatever its local rank.
    env = {"SLURM_PROCID": "3", "SLURM_LOCALID": "3", "SLURM_NTASKS": "4"}
    assert distributed.local_world_size(env) is None
    assert distributed.resolve_device("cuda", 3, distributed.local_world_size(env)) == torch.device("cuda", 0)
    # torchrun with one process per GPU is fine
    assert distributed.resolve_device("cuda", 0, 1) == torch.device("cuda", 0)
    assert chosen == [0, 0]


def test_four_gpus_four_local_ranks(monkeypatch):
    chosen = fake_gpus(monkeypatch, 4)
    assert [distributed.resolve_device("cuda", r, 4) for r in range(4)] == [torch.device("cuda", r) for r in range(4)]
    assert chosen == [0, 1, 2, 3]


def test_ranks_sharing_a_gpu_are_found_by_host_and_gpu():
    assert distributed.duplicate_gpus(["GPU-a", "GPU-b"], ["n1", "n1"]) is None
    assert distributed.duplicate_gpus(["GPU-a", "GPU-a"], ["n1", "n2"]) is None  # same model id, two nodes
    message = distributed.duplicate_gpus(["GPU-a", "GPU-b", "GPU-a"], ["n1", "n1", "n1"])
    assert message.startswith("ranks 0 and 2 both use GPU GPU-a on n1") and "--gpus-per-task=1" in message


def test_the_gpu_check_reads_every_rank_through_the_store(monkeypatch, tmp_path):
    # A one-process gloo group; "rank 1" is played by writing its key as another process would.
    import socket
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(distributed, "gpu_id", lambda device: "GPU-0f")
        store = dist.distributed_c10d._get_default_store()
        store.set("learn_pcg/gpu/1", f"{socket.gethostname()}|GPU-1a")
        distributed.check_distinct_gpus(0, 2, torch.device("cuda", 0))  # two GPUs: fine
        store.set("learn_pcg/gpu/1", f"{socket.gethostname()}|GPU-0f")
        with pytest.raises(ValueError, match="ranks 0 and 1 both use GPU GPU-0f"):
            distributed.check_distinct_gpus(0, 2, torch.device("cuda", 0))
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# 2. One evaluation pass gives every type's metrics: equal to evaluating each type's set on its own.

def test_one_pass_per_type_metrics_equal_separate_passes():
    import numpy as np
    from utils.data import PRNGDataset, eval_shards, parse_combos
    from utils.distributed import DistInfo
    from utils.evaluation import evaluate
    from utils.gpt2 import GPTConfig, build_model
    from utils.params import split_ac
    m, seq_len = 1024, 9
    combos = parse_combos("LCG+XSLRR", "1,2", m, 10, log=lambda *a: None)
    split = split_ac(m, 4, 4, 3, 3, np.random.default_rng(1))
    test = PRNGDataset(m, combos, split.test_a, split.test_c, 1, seq_len, m, 1, data_seed=1)
    torch.manual_seed(0)
    model = build_model(GPTConfig(block_size=seq_len - 1, vocab_size=m, n_layer=1, n_head=2, n_embd=32), False)
    kw = dict(info=DistInfo(), dtype=torch.float32, digits=1, positions=True)
    # batches of 4 over 27 sequences: batches mix types and the last one is short
    both = evaluate(model, test, list(eval_shards(len(test), 4)), per_combo=True, **kw)
    plain = evaluate(model, test, list(eval_shards(len(test), 4)), **kw)
    assert len(both["per_combo"]) == 3
    for key in ("acc", "last_acc"):
        assert both[key] == plain[key]
    assert both["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    for j, got in enumerate(both["per_combo"]):
        alone = test.for_combo(j)
        want = evaluate(model, alone, list(eval_shards(len(alone), 4)), **kw)
        assert got["acc"] == want["acc"] and got["last_acc"] == want["last_acc"], j
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)  # float32 sums in another order
        np.testing.assert_array_equal(got["pos_acc"], want["pos_acc"])
        np.testing.assert_array_equal(got["num_acc"], want["num_acc"])
    # the combined set is the three types' sets: its accuracy is their mean (9 sequences each)
    assert both["acc"] == pytest.approx(np.mean([p["acc"] for p in both["per_combo"]]), rel=1e-12)


# --------------------------------------------------------------------------------------------------
# 3. The suite runs on the CPU in float32 everywhere; --dtype auto on a CPU.

def test_the_suite_is_pinned_to_the_cpu_in_float32():
    import os
    import subprocess
    import sys
    from tests.helpers import clean_env
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and not torch.cuda.is_available()
    assert os.environ["PCG_CPU_AUTO_DTYPE"] == "float32"
    # ... and so is every process a test launches
    code = ("import torch; from utils.runtime import resolve_dtype; "
            "print(torch.cuda.is_available(), resolve_dtype('auto', torch.device('cpu'), log=lambda *a: None))")
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.split() == ["False", "torch.float32"], out.stderr


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 avx512f", torch.float32),
    ("fpu avx2 avx512f avx512_bf16", torch.float32),  # the test machine: bf16 measured no faster
    ("fpu avx512f avx512_bf16 amx_bf16 amx_tile", torch.bfloat16),
], ids=["no_bf16_units", "avx512_bf16", "amx"])
def test_auto_dtype_on_a_cpu_follows_its_bf16_units(monkeypatch, flags, expected):
    from utils import precision
    monkeypatch.delenv(precision.CPU_AUTO_DTYPE_ENV)
    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
    dtype, why = precision.auto_cpu_dtype(cpuinfo)
    assert dtype == expected and why
    monkeypatch.setenv(precision.CPU_AUTO_DTYPE_ENV, "bfloat16")  # the override wins
    assert precision.auto_cpu_dtype(cpuinfo) == (torch.bfloat16, "set by PCG_CPU_AUTO_DTYPE")
    monkeypatch.setenv(precision.CPU_AUTO_DTYPE_ENV, "float16")
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        precision.auto_cpu_dtype(cpuinfo)


def test_auto_dtype_is_printed_and_explicit_dtypes_are_kept():
    from utils.runtime import resolve_dtype
    lines = []
    assert resolve_dtype("auto", torch.device("cpu"), log=lines.append) == torch.float32
    assert lines == ["dtype auto on cpu: float32 (set by PCG_CPU_AUTO_DTYPE)"]
    assert resolve_dtype("auto", torch.device("cuda", 0), log=lines.append) == torch.bfloat16
    assert lines[-1] == "dtype auto on cuda: bfloat16 (CUDA)"
    assert resolve_dtype("bfloat16", torch.device("cpu"), log=lines.append) == torch.bfloat16
    assert resolve_dtype("float32", torch.device("cuda", 0), log=lines.append) == torch.float32
    assert len(lines) == 2  # explicit choices print nothing here (the model line names the dtype)
