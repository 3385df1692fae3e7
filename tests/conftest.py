"""Shared test set-up.

The suite runs on the CPU in float32 on every machine: on a GPU host the GPU is hidden
(CUDA_VISIBLE_DEVICES="" here and in every process a test launches) and `--dtype auto` is pinned to
float32 on the CPU (PCG_CPU_AUTO_DTYPE), because its exact comparisons hold only there (flash
attention's backward on a GPU is not deterministic, and bf16 changes every number). The CUDA tests
(marked `cuda`, tests/test_cuda.py) run only when selected, `pytest -m cuda`, which leaves the GPU
visible; otherwise, and on machines without a GPU, they are skipped with the reason.

Every run computes with one thread, set the way a user sets it (OMP_NUM_THREADS=1, here and in every
process a test launches), so that the scripts' start-up choice (utils/threads.py) takes it: exact
comparisons between runs need the same thread count, and the load of a shared machine must not change it.
"""
import collections
import os

import pytest
import torch

from tests.helpers import FINISHED_ARGS, run_process

CUDA_ONLY = "cuda"


def cuda_selected(config) -> bool:
    expr = config.getoption("markexpr") or ""
    return CUDA_ONLY in expr.split() and "not" not in expr.split()


def pytest_configure(config):
    if not cuda_selected(config):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before anything asks torch about CUDA
    os.environ["PCG_CPU_AUTO_DTYPE"] = "float32"
    os.environ["OMP_NUM_THREADS"] = "1"


def slow_files_first(items) -> None:
    """The files with the most tests marked slow first (pyproject.toml has each worker run whole files, in
    this order): the long ones start at once and the workers end together. Within a file, its own order."""
    slow = collections.Counter(item.module.__name__ for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.module.__name__])


def pytest_collection_modifyitems(config, items):
    slow_files_first(items)
    if not cuda_selected(config):
        reason = "CUDA test: the CPU suite hides the GPU; run `pytest -m cuda` on a GPU machine"
    elif not torch.cuda.is_available():
        reason = "CUDA test: torch sees no CUDA device on this machine"
    else:
        return
    for item in items:
        if CUDA_ONLY in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def one_thread():
    """In-process runs use one thread, like every process the tests launch with OMP_NUM_THREADS=1:
    exact comparisons between them need the same thread count, and on a shared 2-core machine two
    threads make a tiny model several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """(results folder, the process's result, the folder's listing when it ended) of one tiny single-modulus
    run with every output file (tests/helpers.py, FINISHED_ARGS), run as a user runs it. The tests that only
    read a finished run's files share it; none writes into its folder."""
    folder = tmp_path_factory.mktemp("finished_run")
    result = run_process("prng_train_lowmem.py", *FINISHED_ARGS, "--results_dir", folder)
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return folder, result, set(os.listdir(folder))
