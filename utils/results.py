"""Output files: names of spec section 9, atomic writes (temp + fsync + rename), tables, checkpoints."""
from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
import zipfile

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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are shared like any other file
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


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (torch's load errors run to many lines)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
        with open(tmp, "wb") as fh:  # a file object keeps the archive's inner name fixed: same run, same bytes
            torch.save(obj, fh)


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
    pattern = re.compile(re.escape(prefix + base) + r"_step(\d+)\.pt")
    found = []
    for path in glob.glob(os.path.join(glob.escape(results_dir), f"{glob.escape(prefix + base)}_step*.pt")):
        match = pattern.fullmatch(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint written by this project (weights_only: nothing in it executes code)."""
    if not zipfile.is_zipfile(path):  # torch's own message for this case talks about weights_only
        raise ValueError(f"checkpoint {path} is unreadable or incomplete: not a whole torch archive (truncated?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file; name the file once
        raise ValueError(f"checkpoint {path} is unreadable or incomplete: {first_line(err)}") from None
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


# --------------------------------------------------------------------------------------------------
# Pretrained weights (D17)

def load_foreign(path: str, what: str):
    """torch.load(weights_only=True) of a file this project or the original wrote: besides tensors and
    plain values, only numpy scalars (numpy 2 and 1.x names) and argparse.Namespace are allowed, so
    nothing in the file can execute code. Any failure is a ValueError naming the file."""
    import argparse
    if not os.path.isfile(path):
        raise ValueError(f"{what} not found: {path}")
    if not zipfile.is_zipfile(path):  # torch's own message for this case talks about weights_only
        raise ValueError(f"{what} {path} could not be loaded safely: not a whole torch archive (truncated?)")
    scalar = np._core.multiarray.scalar
    allowed = [argparse.Namespace, scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, np.dtypes.Int64DType,
               np.dtypes.Float64DType]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise ValueError(f"{what} {path} could not be loaded safely: {first_line(err)}") from None


def read_state_dict(path: str) -> dict:
    """Model weights from this project's params/checkpoint/curriculum-model files or the original's
    (a pickled argparse.Namespace config and numpy scalars are allowed; `_orig_mod.` is stripped)."""
    from .gpt2 import strip_compile_prefix
    obj = load_foreign(path, "pretrained file")
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"pretrained file {path} holds no state dict")
    state = strip_compile_prefix(obj)
    if "transformer.wte.weight" not in state:
        raise ValueError(f"pretrained file {path} has no transformer.wte.weight (not a model of this project)")
    return state


def load_pretrained(model: torch.nn.Module, path: str, log=print) -> int:
    """Load weights into `model`, copying the first min(old, new) token-embedding rows when the
    vocabulary changes (spec 7.3). Every other tensor must match by name and shape. Returns the
    pretrained vocabulary size."""
    state = read_state_dict(path)
    wte = state.pop("transformer.wte.weight")
    state.pop("lm_head.weight", None)  # tied to wte
    own = {k: v for k, v in model.state_dict().items() if k not in ("transformer.wte.weight", "lm_head.weight")}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"pretrained file {path} does not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise ValueError(f"pretrained file {path}: {key} has shape {tuple(value.shape)}, the model needs "
                             f"{tuple(own[key].shape)}")
    target = model.transformer.wte.weight
    if wte.shape[1] != target.shape[1]:
        raise ValueError(f"pretrained file {path}: embedding width {wte.shape[1]} != n_embd {target.shape[1]}")
    model.load_state_dict(state, strict=False)
    rows = min(wte.shape[0], target.shape[0])
    if wte.shape[0] > target.shape[0]:
        log(f"warning: pretrained vocabulary {wte.shape[0]} is larger than {target.shape[0]}; extra rows dropped")
    with torch.no_grad():
        target[:rows].copy_(wte[:rows])
    assert model.lm_head.weight is model.transformer.wte.weight
    log(f"pretrained: loaded {path} (vocabulary {wte.shape[0]} -> {target.shape[0]}, {rows} rows copied)")
    return int(wte.shape[0])
