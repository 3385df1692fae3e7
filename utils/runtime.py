"""What both entry scripts share around the loop: precision, compile, DDP wrapping, the saved config.
(Flags and the one-line error exit: utils/config.py; seeding: utils/seeds.py.)"""
from __future__ import annotations

import torch

from .distributed import DistInfo, launch_env
from .gpt2 import strip_compile_prefix
from .wandb_utils import SECRET_KEYS


def resolve_dtype(choice: str, device: torch.device, log=None) -> torch.dtype:
    """--dtype -> the autocast dtype. auto: bfloat16 on CUDA; on the CPU by the rule of
    utils/precision.py (bfloat16 only with AMX), printed at start-up (rank 0)."""
    if choice != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[choice]
    from .precision import auto_cpu_dtype, describe_auto
    dtype, why = (torch.bfloat16, "CUDA") if device.type == "cuda" else auto_cpu_dtype()
    if log is None:
        log = print if launch_env()[0] == 0 else (lambda *a, **k: None)
    log(describe_auto(device, dtype, why))
    return dtype


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
    """The model's state dict without `_orig_mod.`/`module.` prefixes and without non-persistent buffers,
    on the CPU (a file written on a GPU must load on a machine without one)."""
    out, copies = {}, {}
    for key, value in strip_compile_prefix(model.state_dict()).items():
        # tied tensors (wte and lm_head) stay one tensor in the file
        out[key] = copies.setdefault((value.data_ptr(), value.dtype, tuple(value.shape)), value.detach().cpu())
    return out


def _plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in value.items())
    return isinstance(value, (str, int, float, bool, type(None)))


def plain_config(cfg) -> dict:
    """The config's plain values (readable with torch.load(weights_only=True)); combos as labels.
    Secrets (the W&B API key, also inside the raw YAML) are left out: this dict goes into checkpoints
    and model files. Curriculum configs also hold the original's key names: `custom_phases` (= phases),
    `moduli_bits_to_keep` (the bits_to_keep list as given) and `_yaml_config` (the YAML as read)."""
    out = {}
    for key, value in vars(cfg).items():
        if key in SECRET_KEYS or key == "_names":  # _names: which flag or YAML key set a value (messages)
            continue
        if key == "combos":
            value = [c.label for c in value]
        if key == "_yaml_config" and isinstance(value, dict) and isinstance(value.get("wandb"), dict):
            value = {**value, "wandb": {k: v for k, v in value["wandb"].items() if k != "api_key"}}
        if _plain(value):
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


