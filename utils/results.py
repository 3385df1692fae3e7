"""Output files: names of spec section 9, atomic writes (temp + fsync + rename), tables, checkpoints."""
from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile

import numpy as np
import pandas as pd
import torch


@contextlib.contextmanager
def atomic_write(path: str):
    """Yield a temporary path in the same folder; on success fsync it and rename it over `path`,
    so a crash never leaves a truncated file where a good one was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.basename(path)[-16:], dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def unique_path(path: str) -> str:
    """`path`, or `stem_2.ext`, `stem_3.ext`, ... if it exists (spec 9)."""
    if not os.path.exists(path):
        return path
    stem, ext = os.path.splitext(path)
    i = 2
    while os.path.exists(f"{stem}_{i}{ext}"):
        i += 1
    return f"{stem}_{i}{ext}"


def save_torch(obj, path: str) -> None:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def save_npz(path: str, **arrays) -> None:
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def save_table(rows: list[dict], columns: list[str], path: str, *, sep: str = ",", index: bool = False) -> None:
    df = pd.DataFrame(rows, columns=columns)
    with atomic_write(path) as tmp:
        df.to_csv(tmp, sep=sep, index=index)


# --------------------------------------------------------------------------------------------------
# Checkpoints

def checkpoint_path(results_dir: str, prefix: str, base: str, step: int) -> str:
    return os.path.join(results_dir, f"{prefix}{base}_step{step}.pt")


def list_checkpoints(results_dir: str, prefix: str, base: str) -> list[tuple[int, str]]:
    """(step, path) of this run's checkpoints, newest first."""
    pattern = re.compile(re.escape(prefix + base) + r"_step(\d+)\.pt$")
    found = []
    for path in glob.glob(os.path.join(glob.escape(results_dir), f"{glob.escape(prefix + base)}_step*.pt")):
        match = pattern.search(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint written by this project (weights_only: nothing in it executes code)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file; name the file once
        raise ValueError(f"checkpoint {path} is unreadable or incomplete: {err}") from None
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt or "step" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint of this project (no model_state_dict/step)")
    return ckpt


def newest_checkpoint(results_dir: str, prefix: str, base: str, log=print) -> str | None:
    """Newest complete checkpoint of this run; damaged ones are reported and passed over."""
    for _, path in list_checkpoints(results_dir, prefix, base):
        try:
            load_checkpoint(path)
            return path
        except ValueError as err:
            log(f"skipping {err}")
    return None


def prune_checkpoints(results_dir: str, prefix: str, base: str, keep: int | None) -> None:
    """Keep only the newest `keep` periodic checkpoints (None keeps all)."""
    if keep is None:
        return
    for _, path in list_checkpoints(results_dir, prefix, base)[keep:]:
        os.remove(path)
