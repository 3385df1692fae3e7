"""Helpers shared by the tests: the repository's files, launching training processes, reading their files."""
import json
import os
from pathlib import Path

import pandas as pd

import prng_train_lowmem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def clean_env(**extra) -> dict:
    """This environment without launcher variables, one thread per rank, unbuffered output."""
    launch = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in launch and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
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
