"""Helpers shared by the tests: the repository's files, launching training processes, reading their files."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

import prng_train_lowmem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny run's sizes (seconds of training; 4 x 4 training and 2 x 2 test (a, c)): tests add the rest.
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--batch_size", "4",
        "--n_a", "4", "--n_c", "4", "--n_test_a", "2", "--n_test_c", "2"]
# The finished run the tests that only read a run's files share (tests/conftest.py, `finished_run`): every
# output flag; num_steps 7 is not a multiple of eval_interval 3, so training must still stop exactly at 7.
FINISHED_ARGS = ["--type", "LCG", "--m", "256", *TINY, "--num_steps", "7", "--eval_interval", "3", "--warm_steps",
                 "2", "--save_checkpoints", "--checkpoint_interval", "3", "--save_params", "--save_correctness",
                 "--save_test_values"]
FINISHED_BASE = "LCG_m256_kp8_vs256_sl9_b256_nd1_na4_nc4_ne1_n32_h2_d1_rope_dI1_I1_lr0.001000_Twarm2_T7_B4_wd0.5"
# Directories that hold no source of ours: outputs, caches, virtual environments (also any directory
# with a pyvenv.cfg) and hidden directories.
NOT_SOURCE = {"results", "out", "wandb", "__pycache__", "build", "dist", "site-packages"}


def repo_files(suffixes: tuple[str, ...], root: Path | str = REPO) -> list[Path]:
    """The files under `root` whose names end with one of `suffixes`, outside NOT_SOURCE."""
    files = []
    for folder, dirs, names in os.walk(root):
        # prune in place, so that a virtual environment's thousands of files are never listed
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in NOT_SOURCE
                         and not (Path(folder) / d / "pyvenv.cfg").exists())
        files.extend(Path(folder) / name for name in names if name.endswith(suffixes))
    return sorted(files)


def run_process(script: str, *args, **kwargs) -> subprocess.CompletedProcess:
    """`python script args` from the repository root, as a user runs it (its exit status, stdout, stderr)."""
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          **{"env": clean_env(), "timeout": 600, **kwargs})


def cpus_per_worker() -> int:
    """The CPUs one test may keep busy: this process's, shared among pytest-xdist's workers (pyproject.toml)."""
    return max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def clean_env(**extra) -> dict:
    """This environment without launcher variables, one thread per rank, unbuffered output."""
    launch = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in launch and not k.startswith("SLURM_")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def single_base(args) -> str:
    """The result base name prng_train_lowmem.py gives these flags (one process)."""
    cfg = prng_train_lowmem.build_parser().parse_args(list(map(str, args)))
    return prng_train_lowmem.base_name(prng_train_lowmem.setup_config(cfg, 1, log=lambda *a: None))


def read_eval(path):
    """A single-modulus eval table (tab-separated, index column first)."""
    return pd.read_csv(path, sep="\t", index_col=0)


def unfinish(manifest):
    """Mark a run's manifest as not finished (what it says until a run's very last write)."""
    record = json.loads(manifest.read_text())
    record["finished"] = None
    manifest.write_text(json.dumps(record))
