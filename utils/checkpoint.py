"""The checkpoint format: its keys (KEYS, the one list of them), the payload, save and load, the checks of
everything a resume reads, a run's newest usable checkpoint, pruning, and a checkpoint's size.

A checkpoint is a dict of CPU tensors and plain values that `torch.load(path, weights_only=True)` reads.
Which run a checkpoint belongs to, and where a run's files are: utils/run.py.
"""
from __future__ import annotations

import os
import zipfile

import torch

from .results import first_line, save_torch

FORMAT_VERSION = 2
# Every key of a checkpoint and what it holds (docs/clusters.md, "Checkpoints", points here). train_state["accum"]
# holds one row per rank of the sums named in ACCUM.
KEYS = {
    "model_state_dict": "the model's weights (no `_orig_mod.`/`module.` prefixes)",
    "optimizer_state_dict": "AdamW's state; on resume the implementation (fused on CUDA) is the resuming machine's",
    "scheduler_state_dict": "{'update': u}: the LR is a function of the update alone",
    "step": "the update the checkpoint was written after",
    "eval_results": "the eval table's rows so far (lists, in the order of eval_columns)",
    "eval_columns": "the eval table's columns",
    "extra_results": "per-type rows (single modulus; [] for a curriculum)",
    "positions": "the rows of positions_<base>.npz so far",
    "train_state": "update, micro-batch counter, whether step 0 was evaluated, every rank's sums since the last "
                   "evaluation (accum)",
    "task_state": "always {}: no task keeps state of its own (the curriculum's draws are a function of the seed "
                  "and the micro-batch); kept so that the format, and the checkpoints written so far, stay version 2",
    "torch_rng_state": "torch's global RNG state",
    "amp_dtype": "the autocast dtype it was trained with",
    "cpu_threads": "the CPU thread count it computes with, kept on resume (utils/threads.py); None on a GPU; "
                   "absent from older checkpoints, which still load",
    "identity": "the run's identity (utils/run.py)",
    "config": "the run's configuration, a plain dict",
    "format_version": str(FORMAT_VERSION),
}
OPTIONAL_KEYS = frozenset({"scheduler_state_dict", "amp_dtype", "cpu_threads"})  # a resume does without them
REQUIRED_KEYS = frozenset(KEYS) - OPTIONAL_KEYS - {"format_version"}  # (the version is checked on load)
# What the training loop sums on each rank between evaluations (utils/trainer.py, IntervalSums), in the
# order of a train_state["accum"] row. Token-weighted loss, and grad norms counted once (on rank 0), so
# the totals mean the same at any world size and a run can resume at another scale.
ACCUM = ("loss_x_tokens", "correct_tokens", "correct_last", "tokens", "sequences", "grad_norm", "updates")


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
                       positions: list, train_state: dict, amp_dtype, cpu_threads: int | None, identity: str,
                       config: dict) -> dict:
    """A checkpoint: every key of KEYS but format_version (save_checkpoint adds it); torch's RNG state is
    taken here."""
    return {"model_state_dict": model, "optimizer_state_dict": optimizer, "scheduler_state_dict": {"update": step},
            "step": step, "eval_results": [list(row.values()) for row in rows],
            "eval_columns": list(rows[0]) if rows else [], "extra_results": extra_rows, "positions": positions,
            "train_state": train_state, "task_state": {}, "torch_rng_state": torch.get_rng_state(),
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


def checkpoint_identity(path: str) -> str | None:
    """The identity a checkpoint carries, None if it is not a whole checkpoint of this project. The
    tensors are mapped, not read, so this costs little even for a large model."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises many types for a damaged file: not a checkpoint to go by
        return None
    identity = ckpt.get("identity") if isinstance(ckpt, dict) else None
    return identity if isinstance(identity, str) else None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _problem(ckpt: dict, num_steps: int, shapes: dict, optimizer_shapes: list) -> str | None:
    """What makes a checkpoint of this run unusable (a wrong type, a missing key, a tensor that does not
    fit), or None: everything the resume reads is checked here, before anything is built."""
    missing = sorted(REQUIRED_KEYS - set(ckpt))
    if missing:
        return f"it lacks {', '.join(missing)}"
    step, loop = ckpt["step"], ckpt["train_state"]
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= num_steps:
        return f"it is at update {step!r}, outside this run's 0..{num_steps}"
    if (not isinstance(loop, dict) or loop.get("update") != step or not isinstance(loop.get("micro_step"), int)
            or not isinstance(loop.get("started"), bool) or not isinstance(loop.get("accum"), list)
            or not all(isinstance(row, list) and len(row) == len(ACCUM) and all(map(_number, row))
                       for row in loop["accum"])):
        return f"its loop state does not match its step {step!r} (update, micro_step, started, accum)"
    threads = ckpt.get("cpu_threads")
    if threads is not None and (type(threads) is not int or threads < 1):
        return f"its cpu_threads {threads!r} is not a thread count"
    columns, rows = ckpt["eval_columns"], ckpt["eval_results"]
    if (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or not isinstance(rows, list)
            or not all(isinstance(r, list) and len(r) == len(columns) for r in rows)):
        return "its eval_results/eval_columns are not rows of the columns"
    for key, kind in (("extra_results", list), ("positions", list), ("task_state", dict), ("config", dict)):
        if not isinstance(ckpt[key], kind):
            return f"its {key} is a {type(ckpt[key]).__name__}, not a {kind.__name__}"
    if not all(isinstance(r, dict) for r in ckpt["extra_results"] + ckpt["positions"]):
        return "its extra_results/positions rows are not dicts"
    rng = ckpt["torch_rng_state"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.dim() != 1:
        return "its torch_rng_state is not a byte tensor"
    state = ckpt["model_state_dict"]
    if not isinstance(state, dict) or set(state) != set(shapes):
        missing, extra = sorted(set(shapes) - set(state or {})), sorted(set(state or {}) - set(shapes))
        return f"it does not fit the model (missing {missing[:3]}, unexpected {extra[:3]})"
    for key, shape in shapes.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            return f"{key} is {got}, the model needs {tuple(shape)}"
    return _optimizer_problem(ckpt["optimizer_state_dict"], optimizer_shapes)


def _optimizer_problem(opt, shapes: list) -> str | None:
    """AdamW's state: two groups numbering the parameters 0..n-1 in the model's order, moments that fit."""
    if (not isinstance(opt, dict) or not isinstance(opt.get("state"), dict)
            or not isinstance(opt.get("param_groups"), list)):
        return "its optimizer_state_dict is not AdamW's (state, param_groups)"
    ids = [i for g in opt["param_groups"] if isinstance(g, dict) for i in g.get("params", [None])]
    if len(opt["param_groups"]) != 2 or ids != list(range(len(shapes))):
        return f"its optimizer does not hold this model's {len(shapes)} parameters in two groups"
    for i, entry in opt["state"].items():
        if i not in range(len(shapes)) or not isinstance(entry, dict):
            return f"its optimizer state has an entry {i!r} that is no parameter's"
        for key in ("exp_avg", "exp_avg_sq"):
            value = entry.get(key)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shapes[i]:
                return f"its optimizer's {key} of parameter {i} does not fit the model"
        if not (isinstance(entry.get("step"), torch.Tensor) or _number(entry.get("step"))):
            return f"its optimizer's step of parameter {i} is not a number"
    return None


def validate_checkpoint(ckpt: dict, path: str, num_steps: int, shapes: dict, optimizer_shapes: list) -> None:
    """Refuse a checkpoint past the end of this run, with a key missing or of a wrong type, or whose
    tensors do not fit the model (ValueError naming the file). Whose run it is: utils/run.py."""
    problem = _problem(ckpt, num_steps, shapes, optimizer_shapes)
    if problem:
        raise ValueError(f"checkpoint {path}: {problem}")


def newest_checkpoint(files, log=print, check=None) -> str | None:
    """Newest complete checkpoint among a run's (`files`: its utils/run.RunFiles); damaged ones (and, with
    `check`, ones it refuses with ValueError) are reported and passed over."""
    for _, path in files.checkpoints():
        try:
            ckpt = load_checkpoint(path)
            if check is not None:
                check(ckpt, path)
            return path
        except ValueError as err:
            log(f"skipping {err}")
    return None


def prune_checkpoints(files, keep: int | None) -> None:
    """Keep only a run's newest `keep` checkpoints (`files`: its utils/run.RunFiles; None keeps all)."""
    if keep is None:
        return
    for _, path in files.checkpoints()[keep:]:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def estimate_checkpoint_bytes(n_params: int) -> int:
    """Model + two AdamW moments, float32 (what a checkpoint holds, a little metadata aside)."""
    return 3 * 4 * int(n_params)
