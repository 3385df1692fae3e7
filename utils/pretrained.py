"""Model files of this project (params, checkpoint and curriculum-model files) and of the original:
reading one (for analyze.py too), and loading one as the curriculum's pretrained weights. A load failure
is an error, never a silent random start."""
from __future__ import annotations

import argparse

import torch

from .gpt2 import strip_compile_prefix
from .results import load_foreign

TIED = ("transformer.wte.weight", "lm_head.weight")  # one tensor: the token table is the output layer


def read_model_file(path: str, what: str = "model file") -> tuple[dict, dict | None]:
    """(state dict, config as a dict or None) of a model file: a bare state dict or a dict with
    `model_state_dict` (a pickled argparse.Namespace config and numpy scalars are allowed; the
    `_orig_mod.`/`module.` prefixes are stripped). `what` names the file in messages."""
    obj = load_foreign(path, what)
    config = None
    if isinstance(obj, dict) and "model_state_dict" in obj:
        config = obj.get("config")
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{what} {path} holds no state dict")
    state = strip_compile_prefix(obj)
    if "transformer.wte.weight" not in state:
        raise ValueError(f"{what} {path} has no transformer.wte.weight (not a model of this project)")
    for key in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.abacus.weight"):
        if key in state and (state[key].dim() != 2 or 0 in state[key].shape):
            raise ValueError(f"{what} {path}: {key} has shape {tuple(state[key].shape)}, not (rows, width)")
    if isinstance(config, argparse.Namespace):
        config = vars(config)
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"{what} {path}: config is a {type(config).__name__}, not a dict or Namespace")
    return state, config


def load_pretrained(model: torch.nn.Module, path: str, log=print) -> int:
    """Load weights into `model` as the original did (`load_state_dict(strict=False)`): tensors present
    in both load, the model's other tensors keep their initialisation, the file's extra tensors are
    ignored, and one line lists what was loaded, missing and unexpected (a file of another depth loads
    its common layers). The token table is copied row by row, min(old, new) rows, so a model trained on
    a smaller vocabulary starts a larger one. A file that shares no tensor with the model besides the
    token table, or a tensor of another shape, is an error. A model on the meta device is only checked.
    Returns the pretrained vocabulary size."""
    state, _ = read_model_file(path, "pretrained file")
    wte = state.pop("transformer.wte.weight")
    state.pop("lm_head.weight", None)
    own = {k: v for k, v in model.state_dict().items() if k not in TIED}
    common = sorted(set(own) & set(state))
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if not common and own:
        raise ValueError(f"pretrained file {path} shares no tensor with the model (it has {sorted(state)[:3]}...)")
    for key in common:
        if state[key].shape != own[key].shape:
            raise ValueError(f"pretrained file {path}: {key} has shape {tuple(state[key].shape)}, the model needs "
                             f"{tuple(own[key].shape)}")
    target = model.transformer.wte.weight
    if wte.shape[1] != target.shape[1]:
        raise ValueError(f"pretrained file {path}: embedding width {wte.shape[1]} != n_embd {target.shape[1]}")
    rows = min(wte.shape[0], target.shape[0])
    if target.is_meta:  # a shape-only model (start-up check): the file fits, nothing to copy
        return int(wte.shape[0])
    model.load_state_dict({k: state[k] for k in common}, strict=False)
    if wte.shape[0] > target.shape[0]:
        log(f"warning: pretrained vocabulary {wte.shape[0]} is larger than {target.shape[0]}; extra rows dropped")
    with torch.no_grad():
        target[:rows].copy_(wte[:rows])
    assert model.lm_head.weight is model.transformer.wte.weight
    log(f"pretrained: loaded {path}: {len(common) + 1} tensors (vocabulary {wte.shape[0]} -> {target.shape[0]}, "
        f"{rows} rows copied); missing {len(missing)}{' ' + str(missing[:6]) if missing else ''}, "
        f"unexpected {len(unexpected)}{' ' + str(unexpected[:6]) if unexpected else ''}")
    return int(wte.shape[0])
