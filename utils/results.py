"""Output files: names that fit the file system, atomic writes (temp + fsync + rename) that fail with one
WriteError naming the file, tables, npz and torch files, shared data files created at most once; safe
loading of files this project or the original wrote."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import zipfile

import numpy as np
import torch


NAME_MAX = 255  # bytes in one file name on Linux file systems
PATH_MAX = 4096  # bytes in a path the Linux kernel takes, its final NUL included


def fit_stem(stem: str, prefix: str, suffix: str) -> str:
    """`stem` if prefix + stem + suffix fits in NAME_MAX bytes; otherwise a readable prefix of the stem
    plus `~` and 10 hex digits of its hash, so that it fits (deterministic: same stem, same name)."""
    if len((prefix + stem + suffix).encode()) <= NAME_MAX:
        return stem
    tag = "~" + hashlib.sha256(stem.encode()).hexdigest()[:10]
    room = NAME_MAX - len((prefix + suffix + tag).encode())
    head = stem.encode()[:max(room, 0)].decode(errors="ignore")
    return head + tag


def fit_name(name: str) -> str:
    """A whole file name shortened as fit_stem does, keeping its extension."""
    stem, ext = os.path.splitext(name)
    return fit_stem(stem, "", ext) + ext


class WriteError(RuntimeError):
    """A file could not be written (disk full, read-only, ...): names the file and the cause."""

    def __init__(self, path: str, cause: BaseException):
        reason = getattr(cause, "strerror", None) or first_line(cause)
        super().__init__(f"could not write {path}: {reason}")
        self.path, self.cause = path, cause


@contextlib.contextmanager
def atomic_write(path: str, *, exclusive: bool = False):
    """Yield a temporary path in the same folder; on success fsync it and rename it over `path`,
    so a crash never leaves a truncated file where a good one was. Any failure (OSError, or the
    RuntimeError torch.save raises on a full disk) becomes a WriteError naming `path`.

    exclusive: create `path` only if nothing has that name (a hard link, which fails if the name is
    taken: two writers at once cannot both succeed); FileExistsError if it is taken."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp, taken = None, False
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.basename(path)[-16:], dir=folder)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are shared like any other file
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                taken = True
        else:
            os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, RuntimeError) as err:
        if isinstance(err, WriteError):
            raise
        if not isinstance(err, OSError) and _disk_full(folder):  # torch.save's message does not say why
            err = OSError(28, f"No space left on device ({first_line(err)})")
        raise WriteError(path, err) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass
    if taken:
        raise FileExistsError(errno.EEXIST, "File exists", path)


def _disk_full(folder: str) -> bool:
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (torch's load errors run to many lines)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def save_bytes(path: str, data: bytes) -> None:
    """Write `data` atomically, checking that every byte reached the file before it takes the name."""
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
        if os.path.getsize(tmp) != len(data):
            raise OSError(errno.EIO, f"short write: {os.path.getsize(tmp)} of {len(data)} bytes")


def save_torch(obj, path: str) -> None:
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object keeps the archive's inner name fixed: same run, same bytes
            torch.save(obj, fh)


def save_npz(path: str, **arrays) -> None:
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def save_table(rows: list[dict], columns: list[str], path: str, *, sep: str = ",", index: bool = False) -> None:
    import pandas as pd  # here, not at the top: a run that ends before its first table starts half a second sooner
    df = pd.DataFrame(rows, columns=columns)
    with atomic_write(path) as tmp:
        df.to_csv(tmp, sep=sep, index=index)


# --------------------------------------------------------------------------------------------------
# Loading files this project or the original wrote (model files: utils/pretrained.py)

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


def load_npz(path: str, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file this project or the original wrote (no pickled objects: nothing in it
    executes code). A missing, empty, damaged or foreign file is a ValueError naming it as `what`."""
    if not os.path.isfile(path):
        raise ValueError(f"{what} not found: {path}")
    try:
        data = np.load(path)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a single .npy array under an .npz name
            raise ValueError("a single array, not an .npz archive")
        with data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # EOFError: an empty file
        raise ValueError(f"{what} {path} is not a readable .npz: {err}") from None


def save_shared(path: str, obj: dict, log=print) -> str:
    """Write a file whose name several runs can share (the original's trainac/testac/training_ac_values
    names hold only data settings): keep an existing file with the same content, and never overwrite
    one with other content; that run's file keeps its name and this one gets `_2`, `_3`, ... Returns
    the path used. `obj` maps npz array names (for .npz) or is the dict saved with torch (for .pt).

    `path` is the full name: each candidate (`_2` added first) is then shortened to fit NAME_MAX. A
    name is taken only by an exclusive create, so of two processes writing other content under one
    name at once, one gets it and the other moves on to the next name."""
    npz = path.endswith(".npz")

    def same(existing: str) -> bool:
        try:
            if npz:
                old = load_npz(existing, "file")
                return set(old) == set(obj) and all(np.array_equal(old[k], np.asarray(obj[k])) for k in obj)
            return load_foreign(existing, "file") == obj
        except ValueError:
            return False

    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    i = 1
    while True:
        candidate = os.path.join(folder, fit_name(name if i == 1 else f"{stem}_{i}{ext}"))
        if os.path.lexists(candidate):
            if same(candidate):
                return candidate
        else:
            try:
                with atomic_write(candidate, exclusive=True) as tmp:
                    with open(tmp, "wb") as fh:
                        if npz:
                            np.savez(fh, **obj)
                        else:
                            torch.save(obj, fh)
                if i > 1:
                    log(f"{fit_name(name)} exists with other content (another run's data); writing {candidate}")
                return candidate
            except FileExistsError:  # taken meanwhile: by the same content, or by another run's
                if same(candidate):
                    return candidate
        i += 1


def plot_or_warn(plot, path: str, *args, log=print, **kwargs) -> bool:
    """Draw a plot file; a failure (no usable matplotlib, a full disk) is one warning, never a lost run."""
    try:
        plot(path, *args, **kwargs)
        return True
    except Exception as err:  # plotting is the last and least valuable output: report it and go on
        log(f"warning: could not write the plot {path}: {first_line(err)}")
        return False


def save_positions(path: str, rows: list[dict]) -> None:
    """Per-position accuracy at every evaluation: `step` (S,) and one (S, positions) array per curve."""
    if not rows:
        return
    keys = [k for k in rows[0] if k != "step"]
    save_npz(path, step=np.array([r["step"] for r in rows], dtype=np.int64),
             **{k: np.array([r[k] for r in rows], dtype=np.float64) for k in keys})
