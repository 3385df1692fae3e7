"""What both entry scripts share around the loop: run flags, precision, compile, DDP wrapping, seeding,
resume lookup and the one-line error exit."""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys

import numpy as np
import torch

from .distributed import DistInfo, launch_env
from .gpt2 import strip_compile_prefix
from .results import newest_checkpoint
from .wandb_utils import SECRET_KEYS

EXIT_BAD_INPUT = 2

# Flags that may differ between a run and its resumption.
RESUME_FREE = {"resume", "keep_checkpoints", "ignore_disk_check", "num_workers", "use_wandb", "wandb_project",
               "wandb_entity", "wandb_name", "wandb_tags", "wandb_notes", "wandb_offline", "wandb_api_key"}


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("runtime (this project)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda if available")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="autocast dtype; auto: bfloat16 on CUDA, float32 on CPU")
    g.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile the model; auto: on for CUDA, off on CPU")
    g.add_argument("--resume", default=None,
                   help="checkpoint path, or 'auto' for the newest complete checkpoint of this run in results_dir")
    g.add_argument("--keep_checkpoints", type=int, default=None,
                   help="keep only the newest N periodic checkpoints (default: keep all)")
    g.add_argument("--ignore_disk_check", action="store_true",
                   help="start even if the checkpoints the run will write exceed the free disk space")
    # A malformed flag is bad input like any other: one line and exit 2, not argparse's usage block.
    parser.error = lambda message: fail(f"{message} (see --help)")


def add_optimizer_args(parser: argparse.ArgumentParser, *, lr_trgt: float, batch_size: int, weight_decay: float,
                       eval_interval: int) -> None:
    """The optimisation flags both scripts share; their defaults differ per script (spec 5.8, 6.3)."""
    parser.add_argument("--lr_trgt", type=float, default=lr_trgt, help="peak LR")
    parser.add_argument("--lr_min", type=float, default=1e-7, help="cosine floor")
    parser.add_argument("--batch_size", type=int, default=batch_size, help="per-process micro-batch")
    parser.add_argument("--grad_acc_steps", type=int, default=1)
    parser.add_argument("--weight_decay", type=float, default=weight_decay, help="on matrices and embeddings")
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.999)
    parser.add_argument("--eval_interval", type=int, default=eval_interval, help="updates between evaluations")


def fail(message: str) -> None:
    """Exit with one line naming the problem (bad input: flags, YAML, files) before any compute."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[choice]


def seed_everything(seed: int) -> None:
    """Model init draws from torch's RNG; numpy and random are seeded for any user code."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_model(model: torch.nn.Module, info: DistInfo, compile_choice: str, log=print):
    """(eval_model, train_model): compiled where asked, DDP-wrapped for training when distributed."""
    model.to(info.device)
    if info.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_compile = compile_choice == "on" or (compile_choice == "auto" and info.device.type == "cuda")
    eval_model = torch.compile(model) if use_compile else model
    if use_compile:
        log("torch.compile: on")
    train_model = eval_model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        # The only buffers are the RoPE tables, the same on every rank: nothing to sync in forward.
        train_model = DDP(eval_model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                          forward_sync_buffers=False, gradient_as_bucket_view=True)
    return eval_model, train_model


def clean_state_dict(model: torch.nn.Module) -> dict:
    """The model's state dict without `_orig_mod.`/`module.` prefixes and without non-persistent buffers."""
    return strip_compile_prefix(model.state_dict())


def estimate_checkpoint_bytes(model: torch.nn.Module) -> int:
    """Model + two AdamW moments, float32 (what a checkpoint holds, a little metadata aside)."""
    return 3 * sum(p.numel() * 4 for p in model.parameters())


def human_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_disk(results_dir: str, n_checkpoints: int, bytes_each: int, keep: int | None, override: bool,
               log=print) -> str | None:
    """Print what the checkpoints will take; return why the run must not start (None if it may)."""
    if n_checkpoints == 0:
        log(f"checkpoints: off ({human_bytes(bytes_each)} written only if the run is stopped by a signal)")
        return None
    os.makedirs(results_dir, exist_ok=True)
    total = n_checkpoints * bytes_each
    # With --keep_checkpoints N, a new checkpoint exists beside N older ones until the oldest is removed.
    needed = min(n_checkpoints, keep + 1) * bytes_each if keep else total
    free = shutil.disk_usage(results_dir).free
    kept = f", at most {human_bytes(needed)} at once (--keep_checkpoints {keep})" if keep else ""
    log(f"checkpoints: {human_bytes(bytes_each)} each, {n_checkpoints} to write, {human_bytes(total)} in all{kept} "
        f"({human_bytes(free)} free in {results_dir})")
    if needed > free and not override:
        return (f"the run's checkpoints need {human_bytes(needed)} but {results_dir} has {human_bytes(free)} free; "
                f"use --keep_checkpoints N, a larger --checkpoint_interval, or --ignore_disk_check")
    return None


def _plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in value.items())
    return isinstance(value, (str, int, float, bool, type(None)))


def plain_config(cfg) -> dict:
    """The config's plain values (readable with torch.load(weights_only=True)); combos as labels.
    Secrets (the W&B API key) are left out: this dict goes into checkpoints and model files."""
    out = {}
    for key, value in vars(cfg).items():
        if key in SECRET_KEYS:
            continue
        if key == "combos":
            value = [c.label for c in value]
        if _plain(value):
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def find_resume(cfg, prefix: str, base: str) -> str | None:
    """The checkpoint --resume names: a path, or with 'auto' the newest complete one of this run."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        log = print if launch_env()[0] == 0 else (lambda *a, **k: None)  # every rank looks, one reports
        path = newest_checkpoint(cfg.results_dir, prefix, base, log)
        log(f"resume: {'from ' + path if path else 'no checkpoint of this run yet, starting fresh'}")
        return path
    if not os.path.isfile(cfg.resume):
        raise ValueError(f"--resume: no such file {cfg.resume}")
    return cfg.resume


def check_same_run(ckpt_cfg: dict, cfg, path: str) -> None:
    """Refuse to resume a checkpoint written with other settings (resume-free flags aside).

    batch_size and world_size may change together: the batches are slices of a global batch of
    batch_size x world_size sequences, so the same product continues the same run at another scale."""
    now = plain_config(cfg)
    free = set(RESUME_FREE)
    scale = ("batch_size", "world_size")
    if all(k in now and k in ckpt_cfg for k in scale) and \
            now["batch_size"] * now["world_size"] == ckpt_cfg["batch_size"] * ckpt_cfg["world_size"]:
        free |= set(scale)
    diff = [k for k in sorted(set(now) | set(ckpt_cfg)) if k not in free and now.get(k) != ckpt_cfg.get(k)]
    if diff:
        shown = ", ".join(f"{k}: {ckpt_cfg.get(k)!r} -> {now.get(k)!r}" for k in diff[:4])
        raise ValueError(f"--resume {path} belongs to a different run ({shown})")
