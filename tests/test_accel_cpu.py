"""The accelerator path, as far as it runs on a CPU, in the normal suite: device choice per
rank, the CPU pinning of the suite, torch.compile (inductor's CPU backend) and bf16 autocast end to end
with checkpoint -> resume, torchrun with compile, the fused AdamW update, and compiled checkpoints
loading into uncompiled models. The CUDA-only checks are in tests/test_cuda.py."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import sysconfig

import numpy as np
import pandas as pd
import pytest
import torch

import curriculum_lowmem
import prng_train_lowmem
from tests.helpers import clean_env
from utils import distributed
from utils.data import PRNGDataset, eval_shards, parse_combos
from utils.distributed import DistInfo
from utils.evaluation import evaluate
from utils.gpt2 import GPTConfig, build_model
from utils.params import split_ac

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

def multi_type_test_set():
    """A 27-sequence LCG+XSLRR (control bits 1, 2) test set at m = 1024 and a tiny untrained model."""
    m, seq_len = 1024, 9
    combos = parse_combos("LCG+XSLRR", "1,2", m, 10, log=lambda *a: None)
    split = split_ac(m, 4, 4, 3, 3, np.random.default_rng(1))
    test = PRNGDataset(m, combos, split.test_a, split.test_c, 1, seq_len, m, 1, data_seed=1)
    torch.manual_seed(0)
    model = build_model(GPTConfig(block_size=seq_len - 1, vocab_size=m, n_layer=1, n_head=2, n_embd=32), False)
    return test, model


def test_one_pass_per_type_metrics_equal_separate_passes():
    test, model = multi_type_test_set()
    kw = dict(info=DistInfo(), dtype=torch.float32, digits=1, positions=True)
    # batches of 4 over 27 sequences: batches mix types and the last one is short
    both = evaluate(model, test, list(eval_shards(len(test), 4)), per_combo=True, **kw)
    plain = evaluate(model, test, list(eval_shards(len(test), 4)), **kw)
    assert len(both["per_combo"]) == 3
    for key in ("loss", "acc", "last_acc"):  # the combined loss keeps its one batch reduction: bit for bit
        assert both[key] == plain[key]
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
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and not torch.cuda.is_available()
    assert os.environ["PCG_CPU_AUTO_DTYPE"] == "float32"
    # ... and so is every process a test launches
    code = ("import torch; from utils.runtime import resolve_dtype; "
            "print(torch.cuda.is_available(), resolve_dtype('auto', torch.device('cpu'), log=lambda *a: None))")
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=120,
                         cwd=REPO)
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


# --------------------------------------------------------------------------------------------------
# 4. Both scripts end to end with torch.compile (inductor's CPU backend, which needs a C compiler) and
#    bf16 autocast together, as on a GPU: checkpoint at N/2 -> resume gives the uninterrupted run's
#    tables exactly; the compiled run's checkpoint resumes in an uncompiled model; torchrun with two
#    gloo ranks and compile. Compiling costs tens of seconds per process on a 2-core machine, so one
#    compiled run per script serves several tests.

ACCEL = ["--device", "cpu", "--compile", "on", "--dtype", "bfloat16"]
LOOP = ["--eval_interval", "5", "--save_checkpoints", "--checkpoint_interval", "10", "--save_params"]
PRNG = ["--m", "256", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--batch_size", "4",
        "--n_a", "4", "--n_c", "4", "--n_test_a", "2", "--n_test_c", "2", "--num_steps", "20", "--warm_steps", "2", *LOOP]
CURRICULUM = ["--moduli", "256,1024", "--custom_phases",  # 20 updates
              '[{"phase_steps": 12, "warmup_steps": 2, "transition_steps": 8, "end_weights": [0.3, 1.0]}, '
              '{"phase_steps": 8, "lr_decay": "cosine", "end_weights": [0.3, 1.0]}]',
              "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--batch_size", "4",
              "--n_a", "4", "--n_c", "4", "--n_test_a", "2", "--n_test_c", "2", *LOOP]
SCRIPTS = {"prng": (prng_train_lowmem, PRNG), "curriculum": (curriculum_lowmem, CURRICULUM)}


def tables(folder) -> dict:
    """Every evaluation table of a results folder (eval_*.tab, *.csv), by file name."""
    out = {}
    for path in sorted(glob.glob(os.path.join(str(folder), "*.tab")) + glob.glob(os.path.join(str(folder), "*.csv"))):
        out[os.path.basename(path)] = pd.read_csv(path, sep="\t" if path.endswith(".tab") else ",")
    return out


def checkpoint_at(folder, step) -> str:
    found = glob.glob(os.path.join(str(folder), f"*checkpoint_*_step{step}.pt"))
    assert len(found) == 1, os.listdir(folder)
    return found[0]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def model_file(folder) -> dict:
    found = glob.glob(os.path.join(str(folder), "params_*.pth")) + \
        glob.glob(os.path.join(str(folder), "multi_curriculum_model_lazy_*.pt"))
    assert len(found) == 1, os.listdir(folder)
    state = load(found[0])
    return state.get("model_state_dict", state)


def compile_toolchain_missing() -> str | None:
    """What inductor's CPU backend lacks to build its kernels (the C++ compiler, Python's headers), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        compiler = get_cpp_compiler()
    except Exception:  # private API: its default otherwise
        compiler = "g++"
    if not shutil.which(compiler):
        return f"torch.compile on a CPU needs the C++ compiler {compiler} (Debian package g++)"
    header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not os.path.isfile(header):
        return f"torch.compile on a CPU needs the Python headers, {header} (Debian: python3-dev)"
    return None


@pytest.fixture(scope="module")
def compile_toolchain():
    """Fails, naming what is missing, where torch.compile cannot build kernels: the full suite needs it (the
    compiled tests are slow, so `pytest -m "not slow"` leaves them out and needs no compiler)."""
    missing = compile_toolchain_missing()
    if missing:
        pytest.fail(missing)


@pytest.mark.slow  # needs g++ and Python's headers
def test_torch_compile_on_the_cpu_has_its_cpp_compiler_and_python_headers():
    # Missing, every compiled test below would fail with a long build log instead of this line.
    assert compile_toolchain_missing() is None, compile_toolchain_missing()


@pytest.fixture(scope="module", params=sorted(SCRIPTS))
def compiled_run(request, tmp_path_factory, compile_toolchain):
    """(script, flags, folder) of one uninterrupted 20-update run, compiled, bf16, checkpoints at 0/10/20."""
    script, flags = SCRIPTS[request.param]
    folder = tmp_path_factory.mktemp(f"{request.param}_compiled")
    torch.set_num_threads(1)
    assert script.main([*flags, *ACCEL, "--results_dir", str(folder)]) == 0
    return script, flags, folder


@pytest.mark.slow  # torch.compile: needs g++, compiles for tens of seconds
def test_compiled_bf16_run_resumed_at_half_way_gives_the_same_tables(compiled_run, tmp_path):
    script, flags, reference = compiled_run
    mid = checkpoint_at(reference, 10)
    saved = load(mid)
    assert (saved["config"]["compile"], saved["config"]["dtype"]) == ("on", "bfloat16")
    assert script.main([*flags, *ACCEL, "--results_dir", str(tmp_path), "--resume", mid]) == 0
    want, got = tables(reference), tables(tmp_path)
    assert want and sorted(want) == sorted(got)
    for name in want:
        assert len(want[name]) == 5, name  # steps 0, 5, 10, 15, 20
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=True, obj=name)
    for key, value in model_file(reference).items():
        assert torch.equal(model_file(tmp_path)[key], value), key


@pytest.mark.slow  # torch.compile: needs g++, compiles for tens of seconds
def test_a_compiled_runs_checkpoint_loads_into_an_uncompiled_model(compiled_run, tmp_path):
    script, flags, reference = compiled_run
    mid = checkpoint_at(reference, 10)
    state = load(mid)["model_state_dict"]
    assert state and not any(k.startswith(("_orig_mod.", "module.")) for k in state)
    assert all(v.device.type == "cpu" for v in model_file(reference).values())
    config = GPTConfig(block_size=8, vocab_size=state["lm_head.weight"].shape[0], n_layer=1, n_head=2, n_embd=32)
    build_model(config, no_rope=False).load_state_dict(state, strict=True)
    # ... and the run continues from it without compile (eager bf16): the same tables up to the rounding
    # differences between inductor's fused kernels and eager bf16.
    eager = [a if a != "on" else "off" for a in ACCEL]
    assert script.main([*flags, *eager, "--results_dir", str(tmp_path), "--resume", mid]) == 0
    want, got = tables(reference), tables(tmp_path)
    assert sorted(want) == sorted(got)
    for name in want:
        for column in want[name].columns:
            tolerance = 0.02 if "loss" in column else 0.1  # one token of 32 is 0.03 of accuracy
            np.testing.assert_allclose(got[name][column].to_numpy(float), want[name][column].to_numpy(float),
                                       atol=tolerance, rtol=0, err_msg=f"{name}: {column}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # torch.compile in two torchrun processes: needs g++
def test_torchrun_two_gloo_ranks_with_compile_match_one_eager_rank(tmp_path, compile_toolchain):
    two, one_ = tmp_path / "two", tmp_path / "one"
    flags = [*PRNG, "--num_steps", "10", "--batch_size", "2", "--checkpoint_interval", "100"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
           "prng_train_lowmem.py", "--", *flags, "--device", "cpu", "--compile", "on", "--dtype", "float32",
           "--results_dir", str(two)]
    out = subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "torch.compile: on" in out.stdout and "world size 2" in out.stdout
    # the same global batch (2 x 2) on one rank, eager
    assert prng_train_lowmem.main([*flags, "--batch_size", "4", "--device", "cpu", "--compile", "off",
                                   "--dtype", "float32", "--results_dir", str(one_)]) == 0
    want, got = tables(one_), tables(two)
    assert want and sorted(want) == sorted(got)
    for name in want:
        assert len(want[name]) == 3  # steps 0, 5, 10
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=False, rtol=1e-4, atol=1e-5, obj=name)


# --------------------------------------------------------------------------------------------------
# 5. The fused AdamW update (what configure_optimizers picks on CUDA) equals the unfused one.

def test_fused_adamw_matches_the_unfused_update_on_cpu():
    config = GPTConfig(block_size=8, vocab_size=64, n_layer=2, n_head=2, n_embd=32)
    models, optimizers = [], []
    for device_type in ("cuda", "cpu"):  # only the fused flag differs; the parameters stay on the CPU
        torch.manual_seed(0)
        model = build_model(config, no_rope=False)
        models.append(model)
        optimizers.append(model.configure_optimizers(0.1, 3e-3, (0.9, 0.999), device_type))
    assert [o.defaults["fused"] for o in optimizers] == [True, False]
    start = {k: v.detach().clone() for k, v in models[1].named_parameters()}
    fused, plain = (dict(m.named_parameters()) for m in models)
    g = torch.Generator().manual_seed(1)
    for step in range(20):
        # The same gradients for both (the unfused model's), so only the update's arithmetic differs.
        x = torch.randint(0, 64, (4, 9), generator=g)
        _, loss = models[1](x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models[1].parameters(), 1.0)
        for name, p in fused.items():
            p.grad = plain[name].grad.clone()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for name in plain:
            # float32 arithmetic in another order: within 1e-7 after each of 20 updates of lr 3e-3
            torch.testing.assert_close(fused[name], plain[name], rtol=0, atol=1e-7, msg=f"update {step}: {name}")
    assert max(float((plain[k].detach() - start[k]).abs().max()) for k in plain) > 1e-2  # the weights did move


def test_a_compiled_model_is_not_compiled_again_for_a_short_last_eval_batch():
    test, model = multi_type_test_set()
    graphs = []

    def backend(gm, example_inputs):  # dynamo's graph, run as traced: counts compilations, no inductor
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    shards = list(eval_shards(len(test), 4))
    assert [len(s) for s in shards][-1] == 3  # 27 sequences: the last batch is short
    kw = dict(info=DistInfo(), dtype=torch.float32, digits=1, positions=True, per_combo=True)
    got, want = evaluate(compiled, test, shards, **kw), evaluate(model, test, shards, **kw)
    assert len(graphs) == 1 and (4, 8) in graphs[0]
    for key in ("acc", "last_acc"):
        assert got[key] == want[key]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
    np.testing.assert_array_equal(got["pos_acc"], want["pos_acc"])
    assert [p["acc"] for p in got["per_combo"]] == [p["acc"] for p in want["per_combo"]]
