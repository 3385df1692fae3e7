"""A run's identity, its file names, and its checkpoints: format, save, load and validation, pruning,
resume lookup, size estimate and disk check.

A run's *identity* is a short hash of its whole validated configuration, leaving out what may change
between a run and its resumption (see IDENTITY_FREE). Each run owns a *stem*: the original's base
name, or base_2, base_3, ... when a run of another identity already owns it (the original gave its
tables `_2`, `_3` names too). Every file of the run, checkpoints included, is named from its stem, so
runs never overwrite, prune or resume from each other's files. The stem's manifest
`run_<stem>.json` records the identity, the full configuration and, once the run is done, the files
it wrote; an advisory lock on the manifest (flock) is held for the whole run, so a second start of
the same run is refused while the first one lives, and the OS releases it when a process dies.

Checkpoint keys (FORMAT_VERSION 2): model_state_dict, optimizer_state_dict, scheduler_state_dict
({'update': u}; the LR is a pure function of u), step, eval_results and eval_columns (the eval rows),
extra_results (per-type or other rows), positions (per-position accuracy rows), train_state (loop
counters and the interval's sums), task_state, torch_rng_state, config (plain dict), identity,
amp_dtype, cpu_threads (the CPU thread count the run computes with, kept by a resume: utils/threads.py;
None on a GPU, absent from older checkpoints), format_version. Every tensor is on the CPU.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import time
import zipfile
from dataclasses import dataclass

import torch

from . import distributed
from .gpt2 import parameter_shapes
from .results import WriteError, first_line, save_torch
from .runtime import EXIT_BAD_INPUT, fail, plain_config

FORMAT_VERSION = 2
REQUIRED_KEYS = frozenset({"model_state_dict", "optimizer_state_dict", "step", "eval_results", "eval_columns",
                           "extra_results", "positions", "train_state", "task_state", "torch_rng_state", "identity",
                           "config"})
NAME_MAX = 255  # bytes in one file name on Linux file systems

# Settings that may differ between a run and its resumption without changing what it computes.
# Device, dtype and compile are among them: a run may continue on another machine (a dtype change is
# reported when it resumes). batch_size and world_size enter as their product, the global batch. The raw
# YAML (`_yaml_config`, kept for the original's readers) is left out: its values enter parsed.
IDENTITY_FREE = frozenset({
    "results_dir", "resume", "keep_checkpoints", "ignore_disk_check", "num_workers", "device", "dtype", "compile",
    "config", "_yaml_config", "experiment_name", "description", "batch_size", "world_size",
    "use_wandb", "wandb_project", "wandb_entity", "wandb_name", "wandb_tags", "wandb_notes", "wandb_offline",
    "wandb_api_key"})
PATH_KEYS = ("pretrained_path", "exclude_ac_paths")  # compared by real path, so a requeue from elsewhere agrees


def identity_config(config: dict) -> dict:
    """The part of a plain config that defines a run."""
    out = {k: v for k, v in config.items() if k not in IDENTITY_FREE}
    if "batch_size" in config and "world_size" in config:
        out["global_batch"] = config["batch_size"] * config["world_size"]
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value:
            out[key] = os.path.realpath(value)
        elif isinstance(value, list):
            out[key] = [os.path.realpath(v) for v in value]
    return out


def run_identity(config: dict) -> str:
    """12 hex digits of SHA-256 over the identity part of the config (canonical JSON)."""
    text = json.dumps(identity_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------
# Names

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


@dataclass(frozen=True)
class FileKind:
    prefix: str
    suffix: str  # may hold {step} (checkpoints)


class RunFiles:
    """The paths of one run's files: kind -> results_dir/prefix + stem + suffix, each within NAME_MAX."""

    def __init__(self, results_dir: str, stem: str, kinds: dict[str, FileKind], num_steps: int):
        self.results_dir, self.stem, self.kinds = results_dir, stem, kinds
        self.max_step = int(num_steps)

    def name(self, kind: str, step: int | None = None) -> str:
        k = self.kinds[kind]
        widest = k.suffix.format(step=self.max_step)  # checkpoints of one run share one (shortened) stem
        stem = fit_stem(self.stem, k.prefix, widest)
        return k.prefix + stem + (k.suffix.format(step=step) if step is not None else k.suffix)

    def path(self, kind: str, step: int | None = None) -> str:
        return os.path.join(self.results_dir, self.name(kind, step))

    def shortened(self) -> dict[str, str]:
        """Kinds whose name had to be shortened, with the full name it stands for."""
        out = {}
        for kind, k in self.kinds.items():
            full = k.prefix + self.stem + k.suffix.format(step=self.max_step)
            if self.name(kind, self.max_step if "{step}" in k.suffix else None) != full:
                out[kind] = full
        return out

    def checkpoints(self) -> list[tuple[int, str]]:
        """(step, path) of this run's checkpoints, newest first."""
        k = self.kinds["checkpoint"]
        head = k.prefix + fit_stem(self.stem, k.prefix, k.suffix.format(step=self.max_step))
        tail = k.suffix.split("{step}")
        pattern = re.compile(re.escape(head + tail[0]) + r"(\d+)" + re.escape(tail[1]))
        found = []
        for path in glob.glob(os.path.join(glob.escape(self.results_dir), glob.escape(head + tail[0]) + "*")):
            match = pattern.fullmatch(os.path.basename(path))
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    def existing(self) -> list[str]:
        """Files of this stem that exist already (checkpoints included)."""
        paths = [self.path(kind) for kind, k in self.kinds.items() if "{step}" not in k.suffix]
        return [p for p in paths if os.path.exists(p)] + [p for _, p in self.checkpoints()]


# --------------------------------------------------------------------------------------------------
# Checkpoint files

def cpu_tree(obj):
    """A copy of a (nested) state dict with every tensor on the CPU, so any machine can load it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: cpu_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_tree(v) for v in obj)
    return obj


def checkpoint_payload(*, model: dict, optimizer: dict, step: int, rows: list[dict], extra_rows: list,
                       positions: list, train_state: dict, task_state: dict, amp_dtype, cpu_threads: int | None,
                       identity: str, config: dict) -> dict:
    """A checkpoint's keys (see the module docstring); torch's RNG state is taken here."""
    return {"model_state_dict": model, "optimizer_state_dict": optimizer, "scheduler_state_dict": {"update": step},
            "step": step, "eval_results": [list(row.values()) for row in rows],
            "eval_columns": list(rows[0]) if rows else [], "extra_results": extra_rows, "positions": positions,
            "train_state": train_state, "task_state": task_state, "torch_rng_state": torch.get_rng_state(),
            "amp_dtype": str(amp_dtype).replace("torch.", ""), "cpu_threads": cpu_threads, "identity": identity,
            "config": config}


def save_checkpoint(payload: dict, path: str) -> None:
    """Write a checkpoint atomically (CPU tensors, format version added); WriteError names the file."""
    save_torch(cpu_tree({**payload, "format_version": FORMAT_VERSION}), path)


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
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {ckpt.get('format_version')}, this code reads "
                         f"{FORMAT_VERSION}")
    return ckpt


def validate_checkpoint(ckpt: dict, path: str, identity: str, num_steps: int, shapes: dict,
                        config: dict | None = None) -> None:
    """Refuse a checkpoint of another run, past the end of this one, or whose tensors do not fit the model."""
    if ckpt.get("identity") != identity:
        theirs = identity_config(ckpt.get("config") or {})
        ours = identity_config(config) if config else {}
        diff = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)][:4]
        shown = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in diff)
        shown = shown or f"identity {ckpt.get('identity')}"
        raise ValueError(f"--resume {path} belongs to a different run ({shown})")
    missing = sorted(REQUIRED_KEYS - set(ckpt))
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing)}")
    step, loop = ckpt["step"], ckpt["train_state"]
    if not isinstance(loop, dict) or loop.get("update") != step or not isinstance(loop.get("accum"), list):
        raise ValueError(f"checkpoint {path}: its loop state does not match its step {step!r}")
    if not isinstance(step, int) or not 0 <= step <= num_steps:
        raise ValueError(f"checkpoint {path} is at update {step!r}, outside this run's 0..{num_steps}")
    threads = ckpt.get("cpu_threads")
    if threads is not None and (type(threads) is not int or threads < 1):
        raise ValueError(f"checkpoint {path}: its cpu_threads {threads!r} is not a thread count")
    state = ckpt["model_state_dict"]
    if not isinstance(state, dict) or set(state) != set(shapes):
        missing, extra = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
        raise ValueError(f"checkpoint {path} does not fit the model (missing {missing[:3]}, unexpected {extra[:3]})")
    for key, shape in shapes.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"checkpoint {path}: {key} is {got}, the model needs {tuple(shape)}")


def newest_checkpoint(files: RunFiles, log=print) -> str | None:
    """Newest complete checkpoint of this run; damaged ones are reported and passed over."""
    for _, path in files.checkpoints():
        try:
            load_checkpoint(path)
            return path
        except ValueError as err:
            log(f"skipping {err}")
    return None


def prune_checkpoints(files: RunFiles, keep: int | None) -> None:
    """Keep only this run's newest `keep` checkpoints (None keeps all)."""
    if keep is None:
        return
    for _, path in files.checkpoints()[keep:]:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------------------------------
# Disk

def estimate_checkpoint_bytes(n_params: int) -> int:
    """Model + two AdamW moments, float32 (what a checkpoint holds, a little metadata aside)."""
    return 3 * 4 * int(n_params)


def human_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def checkpoints_to_write(save_checkpoints: bool, checkpoint_interval: int, num_steps: int, update: int,
                         started: bool) -> int:
    """How many checkpoints the loop writes from `update` on: step 0 (when not yet evaluated), every
    checkpoint_interval updates, and the last update."""
    if not save_checkpoints:
        return 0
    first = int(not started)
    periodic = num_steps // checkpoint_interval - update // checkpoint_interval
    last = int(num_steps % checkpoint_interval != 0 and update < num_steps)
    return first + periodic + last


def check_disk(results_dir: str, n_checkpoints: int, checkpoint_bytes: int, final_bytes: int, keep: int | None,
               override: bool, log=print) -> str | None:
    """Print what the run will write; return why it must not start (None if it may)."""
    # With --keep_checkpoints N, a new checkpoint exists beside N older ones until the oldest is removed.
    ckpt_peak = (min(n_checkpoints, keep + 1) if keep else n_checkpoints) * checkpoint_bytes
    needed = ckpt_peak + final_bytes
    free = shutil.disk_usage(results_dir).free
    if n_checkpoints:
        kept = f", at most {human_bytes(ckpt_peak)} at once (--keep_checkpoints {keep})" if keep else ""
        log(f"checkpoints: {human_bytes(checkpoint_bytes)} each, {n_checkpoints} to write, "
            f"{human_bytes(n_checkpoints * checkpoint_bytes)} in all{kept}; final files {human_bytes(final_bytes)} "
            f"({human_bytes(free)} free in {results_dir})")
    if needed > free and not override:
        return (f"the run needs {human_bytes(needed)} (checkpoints and final files) but {results_dir} has "
                f"{human_bytes(free)} free; use --keep_checkpoints N, a larger --checkpoint_interval, or "
                f"--ignore_disk_check")
    return None


def check_writable(results_dir: str) -> None:
    """Create results_dir and write, sync and remove a test file there; ValueError says why it cannot."""
    if not results_dir:
        raise ValueError("results_dir must not be empty (use . for the current directory)")
    if os.path.exists(results_dir) and not os.path.isdir(results_dir):
        raise ValueError(f"results_dir {results_dir} exists and is not a directory")
    try:
        os.makedirs(results_dir, exist_ok=True)
        probe = os.path.join(results_dir, f".write_test_{os.getpid()}")
        with open(probe, "wb") as fh:
            fh.write(b"ok")
            fh.flush()
            os.fsync(fh.fileno())
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"results_dir {results_dir} is not writable: {err.strerror or err}") from None


# --------------------------------------------------------------------------------------------------
# Claiming a stem: which files are this run's, and the run-long lock

@dataclass
class Claim:
    files: RunFiles
    manifest: dict  # what run_<stem>.json holds (written when the run starts)
    new: bool  # the stem was free: nothing of this run exists yet
    fd: int | None = None  # the manifest's open descriptor, flock'ed for the whole run


def _flock(fd: int, how: int) -> bool:
    """flock; False if another process holds it. File systems without locks count as unlocked."""
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL):
            return True
        raise


def _read_manifest(path: str) -> dict | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def claim_stem(results_dir: str, base: str, identity: str, kinds: dict[str, FileKind], num_steps: int) -> Claim:
    """Find the stem this run owns in results_dir: base, base_2, ... (the first whose manifest has this
    identity, or the first that nothing occupies), and lock it. ValueError if the same run is running.

    Called under the directory lock (see DirLock), so two starts cannot claim one stem."""
    i = 1
    while True:
        stem = base if i == 1 else f"{base}_{i}"
        files = RunFiles(results_dir, stem, kinds, num_steps)
        mpath = files.path("manifest")
        if os.path.exists(mpath):
            manifest = _read_manifest(mpath)
            if manifest is not None and manifest.get("identity") == identity:
                fd = os.open(mpath, os.O_RDWR)
                if not _flock(fd, fcntl.LOCK_EX):
                    os.close(fd)
                    raise ValueError(f"this run is already running (pid {manifest.get('pid')} on "
                                     f"{manifest.get('host')}, started {manifest.get('started')}; lock {mpath})")
                return Claim(files, manifest, new=False, fd=fd)
        elif not files.existing():
            return Claim(files, {}, new=True)
        i += 1


class DirLock:
    """An exclusive flock on results_dir itself while a run claims its stem (a short critical section)."""

    def __init__(self, results_dir: str):
        self.results_dir, self.fd = results_dir, None

    def __enter__(self):
        self.fd = os.open(self.results_dir, os.O_RDONLY)
        deadline = time.monotonic() + 60
        while not _flock(self.fd, fcntl.LOCK_EX):
            if time.monotonic() > deadline:
                raise ValueError(f"results_dir {self.results_dir} stayed locked by another starting run for 60 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing the descriptor releases the lock


def write_manifest(claim: Claim, manifest: dict) -> None:
    """Write run_<stem>.json (in place, under the run's lock) and keep its descriptor locked."""
    text = json.dumps(manifest, indent=1, sort_keys=True, default=str).encode()
    path = claim.files.path("manifest")
    try:
        if claim.fd is None:
            claim.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            if not _flock(claim.fd, fcntl.LOCK_EX):
                raise ValueError(f"{path} is locked by another process")
        os.ftruncate(claim.fd, 0)
        os.pwrite(claim.fd, text, 0)
        os.fsync(claim.fd)
    except OSError as err:
        raise WriteError(path, err) from None
    claim.manifest = manifest


def manifest_for(identity: str, base: str, stem: str, config: dict, files: RunFiles) -> dict:
    return {"format_version": FORMAT_VERSION, "identity": identity, "base": base, "stem": stem,
            "pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "full_names": files.shortened(), "config": config, "finished": None}



# --------------------------------------------------------------------------------------------------
# Start and end of a run (both scripts)

@dataclass
class RunStart:
    files: RunFiles
    identity: str
    ckpt: dict | None
    claim: Claim | None  # rank 0 only
    finished: dict | None  # the manifest's record when this run had finished already


def _claim_and_check(cfg, config: dict, identity: str, base: str, kinds, shapes: dict, n_params: int,
                     final_bytes: int, log) -> tuple[Claim, str | None, dict | None]:
    """Rank 0's start-up: results_dir usable, stem claimed and locked, the checkpoint to resume chosen and
    validated, the disk checked; the manifest is written last, so a refusal leaves nothing behind."""
    if cfg.resume not in (None, "auto") and not os.path.isfile(cfg.resume):
        raise ValueError(f"--resume: no such file {cfg.resume}")
    check_writable(cfg.results_dir)
    with DirLock(cfg.results_dir):
        claim = claim_stem(cfg.results_dir, base, identity, kinds, cfg.num_steps)
        try:
            files, path, ckpt = claim.files, None, None
            if cfg.resume not in (None, "auto"):  # a named checkpoint is checked even if the run is done
                path, ckpt = cfg.resume, load_checkpoint(cfg.resume)
                validate_checkpoint(ckpt, path, identity, cfg.num_steps, shapes, config)
            if claim.manifest.get("finished"):
                os.close(claim.fd)
                claim.fd = None
                return claim, None, None
            if cfg.resume == "auto":
                path = newest_checkpoint(files, log)
                log(f"resume: {'from ' + path if path else 'no checkpoint of this run yet, starting fresh'}")
                if path:
                    ckpt = load_checkpoint(path)
                    validate_checkpoint(ckpt, path, identity, cfg.num_steps, shapes, config)
            elif cfg.resume is None:
                path = None
                if files.checkpoints():
                    step = files.checkpoints()[0][0]
                    raise ValueError(f"this run has checkpoints up to update {step} in {cfg.results_dir}: continue "
                                     f"it with --resume auto (or delete them to start it over)")
            update, started = 0, False
            if ckpt is not None:
                update, started = int(ckpt["train_state"]["update"]), bool(ckpt["train_state"]["started"])
            n_ckpt = checkpoints_to_write(cfg.save_checkpoints, cfg.checkpoint_interval, cfg.num_steps, update, started)
            problem = check_disk(cfg.results_dir, n_ckpt, estimate_checkpoint_bytes(n_params), final_bytes,
                                 cfg.keep_checkpoints, cfg.ignore_disk_check, log)
            if problem:
                raise ValueError(problem)
            if claim.new and claim.files.stem != base:
                log(f"results_dir {cfg.results_dir} holds files of another run named {base}; this run's files "
                    f"are named {claim.files.stem} (identity {identity})")
            for kind, full in claim.files.shortened().items():
                log(f"name too long for the file system: {kind} file {full} is written as "
                    f"{claim.files.name(kind, cfg.num_steps if '{step}' in kinds[kind].suffix else None)}")
            write_manifest(claim, manifest_for(identity, base, claim.files.stem, config, claim.files))
        except BaseException:
            if claim.fd is not None:
                os.close(claim.fd)
            raise
    return claim, path, ckpt


def start_run(cfg, config: dict, base: str, kinds: dict[str, FileKind], info, shapes: dict, n_params: int,
              final_bytes: int, log=print) -> RunStart:
    """Everything a run settles before it builds data or a model. Bad input raises ValueError on every
    rank (rank 0 decides, the others follow), so the caller exits with one line."""
    identity = run_identity(config)
    decision, ckpt = None, None
    if info.master:
        try:
            claim, path, ckpt = _claim_and_check(cfg, config, identity, base, kinds, shapes, n_params, final_bytes, log)
            decision = {"stem": claim.files.stem, "path": path, "finished": claim.manifest.get("finished")}
        except ValueError as err:
            decision = {"error": str(err)}
    decision = distributed.broadcast_object(decision, info)
    if "error" in decision:
        raise ValueError(decision["error"])
    files = RunFiles(cfg.results_dir, decision["stem"], kinds, cfg.num_steps)
    if decision["path"] and not info.master:
        ckpt = load_checkpoint(decision["path"])
    if ckpt is not None:
        saved = ckpt.get("amp_dtype")
        now = str(cfg.amp_dtype).replace("torch.", "")
        if saved != now:
            log(f"note: the checkpoint was trained with {saved} autocast; it continues with {now} (--dtype)")
    return RunStart(files, identity, ckpt, claim if info.master else None, decision["finished"])


def finish_run(start: RunStart, written: list[str]) -> None:
    """Record in the manifest that the run finished and which files it wrote; release its lock."""
    claim = start.claim
    if claim is None:
        return
    manifest = dict(claim.manifest)
    manifest["finished"] = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "files": [os.path.basename(p) for p in written]}
    write_manifest(claim, manifest)
    release(start)


def release(start: RunStart) -> None:
    if start.claim is not None and start.claim.fd is not None:
        os.close(start.claim.fd)
        start.claim.fd = None


class RunScope:
    """The life of one run around data, model and training, for both scripts: start_run (bad input ->
    one line, exit 2), and whatever happens afterwards, W&B finished, the run's lock released and the
    process group left."""

    def __init__(self, info):
        self.info, self.run, self.wandb_run = info, None, None

    def __enter__(self):
        return self

    def start(self, cfg, base: str, kinds: dict[str, FileKind], model_config, log=print) -> RunStart:
        """start_run for a model of `model_config` (measured on the meta device, nothing allocated); the
        final files are counted as one float32 copy of the model when the run saves it."""
        shapes, n_params = parameter_shapes(model_config, cfg.no_rope)
        final_bytes = 4 * n_params if cfg.save_params else 0
        try:
            self.run = start_run(cfg, plain_config(cfg), base, kinds, self.info, shapes, n_params, final_bytes, log)
        except ValueError as err:
            if self.info.master:
                fail(str(err))
            raise SystemExit(EXIT_BAD_INPUT)
        done = self.run.finished
        if done:
            log(f"this run finished already ({done['time']}, identity {self.run.identity}); nothing to do. Its files "
                f"in {cfg.results_dir}:\n" + "\n".join(f"  {name}" for name in done["files"]))
        return self.run

    def wandb(self, wandb_run):
        self.wandb_run = wandb_run
        return wandb_run

    def finish(self, written: list[str]) -> None:
        finish_run(self.run, written)

    def __exit__(self, *exc):
        if self.wandb_run is not None:
            self.wandb_run.finish()
        if self.run is not None:
            release(self.run)
        distributed.cleanup(self.info)
