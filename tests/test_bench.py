"""bench/ is a package, run from the repository root as `python -m bench.<name>`: every module imports as
`bench.<name>`, its docstring's usage says so, and run as a file (`python bench/<name>.py`, where Python puts
bench/ on sys.path instead of the root) it says how to run it in one line, before importing anything of ours.
The data, baseline and thread benchmarks run end to end at tiny sizes (the training and seed benchmarks in
tests/test_quickstart.py; faults and ranks are trial harnesses over the behaviour that tests/test_faults.py
and tests/test_distributed.py test)."""
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, clean_env

BENCH = sorted(p.stem for p in Path(REPO, "bench").glob("*.py") if p.stem != "__init__")


def test_there_are_bench_modules():
    assert {"bench_train", "quickstart_seeds"} <= set(BENCH)


@pytest.mark.parametrize("name", BENCH)
def test_each_bench_module_imports_as_bench_dot_its_name_and_documents_that_form(name):
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main)
    assert f"python -m bench.{name}" in module.__doc__ and "python bench/" not in module.__doc__


@pytest.mark.parametrize("name", BENCH)
def test_run_as_a_file_a_bench_script_says_how_to_run_it(name):
    result = subprocess.run([sys.executable, f"bench/{name}.py", "--help"], cwd=REPO, env=clean_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"error: run it from the repository root as a module: python -m bench.{name}\n"


def test_a_bench_module_runs_as_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "bench.quickstart_seeds", "--help"], cwd=REPO, env=clean_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--seeds" in result.stdout, result.stderr


# --------------------------------------------------------------------------------------------------
# The benchmarks themselves, end to end at tiny sizes (their full sizes take minutes): what a user runs
# must not break between two measurements.

def test_the_data_benchmark_runs_end_to_end_at_a_tiny_size(monkeypatch, capsys):
    from bench import bench_data
    for name, value in {"BATCH": 16, "SEQ_LEN": 33, "N_A": 16, "N_C": 16, "N_TEST_A": 4, "N_TEST_C": 4,
                        "BATCH_REPEATS": 1, "LOOP_REPEATS": 1}.items():
        monkeypatch.setattr(bench_data, name, value)
    bench_data.main()  # checks the batch path against tests/reference.py on every type as it measures
    out = capsys.readouterr().out.splitlines()
    kinds = {combo.kind for combo in bench_data.COMBOS}
    rows = {words[0]: words for words in map(str.split, out) if words and words[0] in kinds}
    assert set(rows) == kinds
    for kind, words in rows.items():
        # the three rates (numpy, torch, loop) in sequences per second; the ratios after them are rounded to
        # whole numbers, and at this size the batch path is no faster than the loop, so they may read 0x
        assert all(float(rate.replace(",", "")) > 0 for rate in words[3:6]), kind
        assert all(ratio.endswith("x") for ratio in words[6:8]), kind
    assert any(line.strip().startswith("wall time") for line in out)
    assert any(line.strip().startswith("extra RSS") for line in out)


def test_the_baseline_benchmark_runs_end_to_end_at_a_tiny_size(monkeypatch, capsys):
    from bench import bench_baselines
    for name, value in {"MODULI": (2**10,), "N_TEST_A": 2, "N_TEST_C": 2, "SEQ_LEN": 12}.items():
        monkeypatch.setattr(bench_baselines, name, value)
    assert bench_baselines.main() == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[1:] if line.split() and line.split()[0] == "1024"]
    assert len(rows) == 8  # seven types, LCG with both baselines
    lcg = next(words for words in rows if words[1:3] == ["LCG", "lcg"])
    assert float(lcg[5]) == 1.0  # last-position accuracy: the LCG solver knows each number after the first few
    assert out[-1] == f"m=1024 under {bench_baselines.TARGET_S:.0f} s: yes"


def test_a_thread_benchmark_cell_runs_end_to_end_in_this_process(capsys):
    """The worker of one cell, as `python -m bench.bench_threads` starts it: the rule reads OMP_NUM_THREADS=1
    (tests/conftest.py), so this process keeps its one thread."""
    from bench import bench_threads
    bench_threads.main(["--worker", "auto", "--case", "quickstart", "--steps", "1"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["threads"] == 1 == torch.get_num_threads() and row["reason"] == "OMP_NUM_THREADS=1"
    assert row["step_s"] > 0
