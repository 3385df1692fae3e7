"""bench/ is a package, run from the repository root as `python -m bench.<name>`: every module imports as
`bench.<name>`, its docstring's usage says so, and run as a file (`python bench/<name>.py`, where Python puts
bench/ on sys.path instead of the root) it says how to run it in one line, before importing anything of ours."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

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
