"""A run's directory and its life: the run's identity, its file names (stems), the claim of a stem
(lock file, manifest, owner told by manifest or checkpoints), the start-up checks (writable, name
lengths, disk space), and the skeleton both scripts share around their data and model (`launch`, then
`RunScope`: start, W&B, fit, final files, clean-up).

A run's *identity* is a short hash of its validated configuration, leaving out what may change between
a run and its resumption and what changes only which files it writes (see IDENTITY_FREE). Each run
owns a *stem*: the original's base name, or base_2, base_3, ... when a run of another identity already
owns it (the original gave its tables `_2`, `_3` names too). Every file of the run, checkpoints
included, is named from its stem, so runs never overwrite, prune or resume from each other's files. A
stem's owner is told by its manifest `run_<stem>.json` (identity, full configuration and, once the run
is done, the files it wrote), or, where that is lost or damaged, by the identity its checkpoints carry.
The manifest is written like every other file (temporary file, fsync, rename); an advisory lock
(flock) on the stem's lock file `.run_<stem>.lock`, whose inode never changes, is held for the whole
run, so a second start of the same run is refused while the first one lives, and the OS releases it
when a process dies.

The checkpoint format itself: utils/checkpoint.py.
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
from dataclasses import dataclass

from . import distributed, settings, threads
from .checkpoint import (FORMAT_VERSION, checkpoint_identity, estimate_checkpoint_bytes, load_checkpoint,
                         newest_checkpoint, validate_checkpoint)
from .config import EXIT_BAD_INPUT, RunConfig, fail
from .distributed import DistInfo
from .gpt2 import GPTConfig, parameter_shapes
from .params import ACSplit
from .preemption import EXIT_PREEMPTED, StopSignals
from .results import NAME_MAX, PATH_MAX, WriteError, fit_stem, save_bytes
from .runtime import plain_config, resolve_dtype
from .seeds import seed_everything
from .trainer import Task, fit
from .wandb_utils import WandbRun


# Settings that may differ between a run and its resumption without changing what it trains. Device,
# dtype and compile are among them: a run may continue on another machine (a dtype change is reported
# when it resumes). batch_size and world_size enter as their product, the global batch. Output-only
# settings are left out too (which files are written, how often checkpoints are, cache_size, which is
# unused), so a requeue may add --save_params. The raw YAML (`_yaml_config`, kept for the original's
# readers) is left out: its values enter parsed. What stays in changes the numbers or the eval table:
# data, model, schedule, optimiser, seeds, eval_interval, exclusion files, pretrained weights.
IDENTITY_FREE = frozenset({
    "results_dir", "resume", "keep_checkpoints", "ignore_disk_check", "num_workers", "device", "dtype", "compile",
    "config", "_yaml_config", "experiment_name", "description", "batch_size", "world_size",
    "save_params", "save_correctness", "save_test_values", "save_checkpoints", "checkpoint_interval", "cache_size",
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
            out[key] = [os.path.realpath(v) for v in value] or None  # the flag without a file means none
    return out


def run_identity(config: dict) -> str:
    """12 hex digits of SHA-256 over the identity part of the config (canonical JSON)."""
    text = json.dumps(identity_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------
# Names

@dataclass(frozen=True)
class FileKind:
    prefix: str
    suffix: str  # may hold {step} (checkpoints)


LOCK = FileKind(".run_", ".lock")  # the stem's run-long lock file (kept: its inode is what is locked)


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

    def lock_path(self) -> str:
        return os.path.join(self.results_dir, LOCK.prefix + fit_stem(self.stem, LOCK.prefix, LOCK.suffix) + LOCK.suffix)

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
# Start-up checks: writable, name lengths, disk space

def check_writable(results_dir: str) -> None:
    """Create results_dir and write, sync and remove a test file there; ValueError says why it cannot
    (also when a file name of NAME_MAX bytes in it would make a path longer than PATH_MAX)."""
    if not results_dir:
        raise ValueError("results_dir must not be empty (use . for the current directory)")
    if len(os.path.join(results_dir, "x" * NAME_MAX).encode()) >= PATH_MAX:
        raise ValueError(f"results_dir is {len(results_dir.encode())} bytes long: with file names of up to {NAME_MAX} "
                         f"bytes its paths would pass the system's limit of {PATH_MAX - 1}; use a shorter path "
                         f"({results_dir[:40]}...)")
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


# --------------------------------------------------------------------------------------------------
# Claiming a stem: which files are this run's, and the run-long lock

@dataclass
class Claim:
    files: RunFiles
    manifest: dict  # the stem's manifest as read ({} when new, lost or damaged); rewritten when the run starts
    new: bool  # the stem was free: nothing of this run exists yet
    fd: int | None = None  # the lock file's open descriptor, flock'ed for the whole run
    made_lock: bool = False  # this start created the lock file (removed again if the start is refused)


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
    """The manifest at `path` if it is whole and well formed (identity a string; finished None or
    {time, files}); None if it is missing, unreadable, damaged or tampered with."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("identity"), str):
        return None
    done = data.get("finished")
    if done is not None and not (isinstance(done, dict) and isinstance(done.get("time"), str)
                                 and isinstance(done.get("files"), list)
                                 and all(isinstance(name, str) for name in done["files"])):
        return None
    return data


def stem_owner(files: RunFiles) -> tuple[str | None, dict | None]:
    """(identity of the run that owns this stem, its manifest): from the manifest, or where that is lost
    or damaged, from the newest checkpoint that carries one (None: no owner that can be told)."""
    manifest = _read_manifest(files.path("manifest"))
    if manifest is not None:
        return manifest["identity"], manifest
    for _, path in files.checkpoints():
        identity = checkpoint_identity(path)
        if identity is not None:
            return identity, None
    return None, None


def _lock(files: RunFiles, manifest: dict | None) -> tuple[int, bool]:
    """(descriptor, created) of the stem's lock file, flock'ed; ValueError if a live process holds it."""
    path = files.lock_path()
    created = not os.path.lexists(path)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)  # flock needs no write access
    if not _flock(fd, fcntl.LOCK_EX):
        os.close(fd)
        m = manifest or {}
        raise ValueError(f"this run is already running (pid {m.get('pid')} on {m.get('host')}, started "
                         f"{m.get('started')}; lock {path})")
    return fd, created


def claim_stem(results_dir: str, base: str, identity: str, kinds: dict[str, FileKind], num_steps: int,
               lock: bool = True) -> Claim:
    """Find the stem this run owns in results_dir: base, base_2, ... (the first whose owner, see
    stem_owner, is this run, or the first that nothing occupies), and lock it unless its run has
    finished. ValueError if the same run is running.

    Called under the directory lock (see DirLock), so two starts cannot claim one stem."""
    i = 1
    while True:
        stem = base if i == 1 else f"{base}_{i}"
        files = RunFiles(results_dir, stem, kinds, num_steps)
        owner, manifest = stem_owner(files)
        if owner == identity:
            if not lock or (manifest and manifest.get("finished")):
                return Claim(files, manifest or {}, new=False)
            fd, created = _lock(files, manifest)
            return Claim(files, manifest or {}, new=False, fd=fd, made_lock=created)
        if owner is None and not files.existing():
            if not lock:
                return Claim(files, {}, new=True)
            fd, created = _lock(files, None)
            return Claim(files, {}, new=True, fd=fd, made_lock=created)
        i += 1


def _unclaim(claim: Claim) -> None:
    """Undo a claim that is refused: release its lock, and remove the lock file if this start made it."""
    if claim.fd is not None:
        os.close(claim.fd)
        claim.fd = None
    if claim.made_lock:
        os.remove(claim.files.lock_path())


class DirLock:
    """An exclusive flock on results_dir itself while a run claims its stem (a short critical section)."""

    def __init__(self, results_dir: str):
        self.results_dir, self.fd = results_dir, None

    def __enter__(self):
        self.fd = os.open(self.results_dir, os.O_RDONLY)
        deadline = time.monotonic() + 60
        while not _flock(self.fd, fcntl.LOCK_EX):
            if time.monotonic() > deadline:
                os.close(self.fd)
                raise ValueError(f"results_dir {self.results_dir} stayed locked by another starting run for 60 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing the descriptor releases the lock


def write_manifest(claim: Claim, manifest: dict) -> None:
    """Write run_<stem>.json atomically (the run holds the stem's lock); WriteError names the file."""
    save_bytes(claim.files.path("manifest"), json.dumps(manifest, indent=1, sort_keys=True, default=str).encode())
    claim.manifest = manifest


def manifest_for(identity: str, base: str, stem: str, config: dict, files: RunFiles) -> dict:
    return {"format_version": FORMAT_VERSION, "identity": identity, "base": base, "stem": stem,
            "pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "full_names": files.shortened(), "config": config, "finished": None}


# --------------------------------------------------------------------------------------------------
# Start and end of a run (both scripts)

def check_resumable(ckpt: dict, path: str, identity: str, config: dict, num_steps: int, shapes: dict,
                    optimizer_shapes: list) -> None:
    """Refuse a checkpoint of another run (naming up to four settings that differ), then whatever
    checkpoint.validate_checkpoint refuses (ValueError naming the file)."""
    if ckpt.get("identity") != identity:
        theirs = ckpt.get("config")
        theirs = identity_config(theirs) if isinstance(theirs, dict) else {}
        ours = identity_config(config)
        diff = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)][:4]
        shown = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in diff)
        shown = shown or f"identity {ckpt.get('identity')}"
        raise ValueError(f"--resume {path} belongs to a different run ({shown})")
    validate_checkpoint(ckpt, path, num_steps, shapes, optimizer_shapes)


@dataclass
class RunStart:
    files: RunFiles
    identity: str
    ckpt: dict | None
    claim: Claim | None  # rank 0 only
    finished: dict | None  # the manifest's record when this run had finished already


def _claim_and_check(cfg, config: dict, identity: str, base: str, kinds, shapes: tuple, final_bytes: int,
                     log) -> tuple[Claim, str | None, dict | None]:
    """Rank 0's start-up: results_dir usable, stem claimed and locked, the checkpoint to resume chosen and
    validated, the disk checked; the manifest is written last, so a refusal leaves nothing behind. A
    finished run is told even where results_dir cannot be written (read-only)."""
    state_shapes, n_params, optimizer_shapes = shapes

    def check(ckpt, path):
        check_resumable(ckpt, path, identity, config, cfg.num_steps, state_shapes, optimizer_shapes)

    named = cfg.resume not in (None, "auto")
    named_ckpt = None
    if named:  # checked first, even if the run is done: a wrong file leaves no results_dir behind
        if not os.path.isfile(cfg.resume):
            raise ValueError(f"--resume: no such file {cfg.resume}")
        named_ckpt = load_checkpoint(cfg.resume)
        check(named_ckpt, cfg.resume)
    try:
        check_writable(cfg.results_dir)
    except ValueError:
        done = os.path.isdir(cfg.results_dir) and claim_stem(cfg.results_dir, base, identity, kinds, cfg.num_steps,
                                                             lock=False)
        if not done or not done.manifest.get("finished"):
            raise
        return done, None, None
    with DirLock(cfg.results_dir):
        claim = claim_stem(cfg.results_dir, base, identity, kinds, cfg.num_steps)
        try:
            files = claim.files
            path, ckpt = (cfg.resume, named_ckpt) if named else (None, None)
            if claim.manifest.get("finished"):
                return claim, None, None
            if cfg.resume == "auto":
                path = newest_checkpoint(files, log, check)
                log(f"resume: {'from ' + path if path else 'no checkpoint of this run yet, starting fresh'}")
                ckpt = load_checkpoint(path) if path else None
            elif not named and files.checkpoints():
                step = files.checkpoints()[0][0]
                raise ValueError(f"this run has checkpoints up to update {step} in {cfg.results_dir}: continue "
                                 f"it with --resume auto (or delete them to start it over)")
            update, started = 0, False
            if ckpt is not None:
                update, started = ckpt["train_state"]["update"], ckpt["train_state"]["started"]
            n_ckpt = checkpoints_to_write(cfg.save_checkpoints, cfg.checkpoint_interval, cfg.num_steps, update, started)
            problem = check_disk(cfg.results_dir, n_ckpt, estimate_checkpoint_bytes(n_params), final_bytes,
                                 cfg.keep_checkpoints, cfg.ignore_disk_check, log)
            if problem:
                raise ValueError(problem)
            if claim.new and claim.files.stem != base:
                log(f"results_dir {cfg.results_dir} holds files of another run named {base}; this run's files "
                    f"are named {claim.files.stem} (identity {identity})")
            if not claim.new and not claim.manifest:
                log(f"the manifest of this run in {cfg.results_dir} is missing or damaged; its checkpoints carry "
                    f"its identity ({identity}), so they are this run's; the manifest is written again")
            for kind, full in claim.files.shortened().items():
                log(f"name too long for the file system: {kind} file {full} is written as "
                    f"{claim.files.name(kind, cfg.num_steps if '{step}' in kinds[kind].suffix else None)}")
            write_manifest(claim, manifest_for(identity, base, claim.files.stem, config, claim.files))
        except BaseException:
            _unclaim(claim)
            raise
    return claim, path, ckpt


def start_run(cfg, config: dict, base: str, kinds: dict[str, FileKind], info, shapes: tuple, final_bytes: int,
              log=print) -> RunStart:
    """Everything a run settles before it builds data or a model. Bad input raises ValueError on every
    rank (rank 0 decides, the others follow), so the caller exits with one line. `shapes` is what
    gpt2.parameter_shapes gives for the run's model."""
    identity = run_identity(config)
    decision, ckpt = None, None
    if info.master:
        try:
            try:
                claim, path, ckpt = _claim_and_check(cfg, config, identity, base, kinds, shapes, final_bytes, log)
            except WriteError as err:  # the manifest (or the lock file) could not be written
                raise ValueError(f"{err} (results_dir cannot hold this run's files)") from None
            except OSError as err:
                where = f" ({err.filename})" if err.filename else ""
                raise ValueError(f"results_dir {cfg.results_dir} cannot hold this run's files: "
                                 f"{err.strerror or err}{where}") from None
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


# --------------------------------------------------------------------------------------------------
# The skeleton both scripts share: launch, then a RunScope around data, model, fit and the final files

@dataclass
class Launch:
    """A run before it claims its files: its validated configuration, every modulus's (a, c) split, this
    process (rank, world size, device) and the CPU thread count asked for (OMP_NUM_THREADS, or None)."""
    cfg: RunConfig
    splits: dict[int, ACSplit]
    info: DistInfo
    threads: int | None

    def log(self, *args, **kwargs) -> None:
        """print, on rank 0 only."""
        if self.info.master:
            print(*args, **kwargs)


def launch(parse, setup) -> Launch:
    """Parse the configuration (`parse()`), check it and derive the rest (`setup`, the script's start-up in
    utils/settings.py), draw the (a, c) splits and join the process group. Bad input is one line and exit
    status 2, before anything is written."""
    try:
        cfg = parse()
        setup(cfg, distributed.launch_env()[2])
        requested = threads.requested_threads()
        splits = settings.ac_splits(cfg)
        info = distributed.setup(cfg.device)
    except ValueError as err:
        fail(str(err))
    return Launch(cfg, splits, info, requested)


class RunScope:
    """The life of one run around its data and model, the same for both scripts: stop signals caught
    throughout; `start` (a stop before it: exit 75, nothing written; bad input: one line, exit 2; a
    finished run says so), then the thread count and the seeds; the W&B run; `fit`; `finish` (the final
    files, the manifest's record, the summary); and, whatever happens, W&B finished, the run's lock
    released and the process group left."""

    def __init__(self, launched: Launch, base: str, kinds: dict[str, FileKind]):
        self.launch, self.cfg, self.info, self.log = launched, launched.cfg, launched.info, launched.log
        self.base, self.kinds = base, kinds
        self.model_config = GPTConfig.for_run(launched.cfg)
        self.signals = StopSignals()
        self.started: RunStart | None = None  # set by start, with the four below
        self.files: RunFiles | None = None
        self.identity: str | None = None
        self.ckpt: dict | None = None  # the checkpoint to resume from (validated), or None
        self.finished = False  # the run had finished before this start: nothing to do
        self.wandb_run: WandbRun | None = None
        self.state, self.t_train = None, None  # the loop's final state and when fit began

    def __enter__(self):
        self.signals.__enter__()
        return self

    def start(self) -> None:
        """Settle everything before data and model are built (start_run, for a model of model_config
        measured on the meta device; the final files are counted as one float32 copy of the model when
        the run saves it); then, unless the run had finished, take the thread count and seed the RNGs."""
        cfg, info, log = self.cfg, self.info, self.log
        cfg.amp_dtype = resolve_dtype(cfg.dtype, info.device)
        if distributed.any_rank(self.signals.received is not None, info):
            log("stopped by signal before the run started: nothing written; start it again (with --resume auto)")
            raise SystemExit(EXIT_PREEMPTED)
        shapes = parameter_shapes(self.model_config, cfg.no_rope)
        final_bytes = 4 * shapes[1] if cfg.save_params else 0
        try:
            self.started = start_run(cfg, plain_config(cfg), self.base, self.kinds, info, shapes, final_bytes, log)
        except ValueError as err:
            if info.master:
                fail(str(err))
            raise SystemExit(EXIT_BAD_INPUT)
        self.files, self.identity, self.ckpt = self.started.files, self.started.identity, self.started.ckpt
        done = self.started.finished
        self.finished = done is not None
        if done:
            log(f"this run finished already ({done['time']}, identity {self.identity}); nothing to do. Its files "
                f"in {cfg.results_dir}:\n" + "\n".join(f"  {name}" for name in done["files"]))
            return
        threads.use_threads(info, self.launch.threads, self.ckpt, log)
        seed_everything(cfg.main_seed)

    def wandb(self, name: str) -> WandbRun:
        """The run's W&B run (on rank 0 when --use_wandb; a no-op otherwise), `name` unless --wandb_name."""
        config = {**plain_config(self.cfg), "device": str(self.info.device), "ddp": self.info.enabled}
        self.wandb_run = WandbRun(self.cfg, config, name, self.info.master)
        return self.wandb_run

    def fit(self, task: Task, model) -> tuple[int, object]:
        """Train (utils/trainer.fit, from the checkpoint chosen at start): (exit status, the model to
        evaluate with); the status is 0 when training is done, else the run's exit status."""
        self.t_train = time.perf_counter()
        code, eval_model, self.state = fit(task, model, self.cfg, self.info, self.ckpt, self.signals, log=self.log)
        return code, eval_model

    def finish(self, task: Task, write_final) -> int:
        """Rank 0 writes the final files (`write_final()`, which returns their paths), records in the
        manifest that the run finished and which files it wrote (the task's tables and last checkpoint
        too), and prints the final evaluation; the other ranks are done. A file that cannot be written
        leaves the trained model in a checkpoint (Task.final_write_failed): status 1."""
        if not self.info.master:
            return 0
        written = task.table_paths()
        if self.cfg.save_checkpoints:
            written.append(self.files.path("checkpoint", self.cfg.num_steps))
        try:
            written += write_final()
            finish_run(self.started, written)
        except WriteError as err:
            return task.final_write_failed(err, self.state)
        self.wandb_run.summary({"training/total_time_seconds": time.perf_counter() - self.t_train,
                                "training/final_step": self.state.update})
        print("\nfinal evaluation (unseen a and c):")
        for line in task.summary():
            print(line)
        print("files written:\n" + "\n".join(f"  {p}" for p in written))
        return 0

    def __exit__(self, exc_type, *exc):
        if self.wandb_run is not None:
            self.wandb_run.finish()
        if self.started is not None:
            release(self.started)
        # A normal end, a stop and a one-line exit happen on every rank alike; a crash may not.
        distributed.cleanup(self.info, agreed=exc_type is None or issubclass(exc_type, SystemExit))
        self.signals.__exit__(exc_type, *exc)
