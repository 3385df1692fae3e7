"""A model and the settings it was trained with, from any model file of this project or the original's.

The model's shape comes from the state dict: vocabulary and width from `transformer.wte.weight`, depth
from the `transformer.h.<i>` keys, the class from `wpe`/`abacus` (learned positions; their rows give the
block size and digits). What a state dict cannot tell (n_head, the RoPE context, m, type, control bits,
seeds, split sizes) comes from the file's `config` (a dict, or the original's argparse Namespace) when it
has one, else from flags, else from the training script's defaults. The data settings are then derived
and the test set drawn by the training's own functions (utils/settings.py), so it is the run's. File
names are never read.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np
import torch

from .. import settings as run_settings
from ..bounds import host_memory_bytes
from ..config import CURRICULUM, SINGLE, SingleModulusConfig
from ..data import Combo, PRNGDataset, parse_combos
from ..gpt2 import GPTConfig, build_model
from ..params import increment_count, load_exclusions, multiplier_count, split_ac
from ..pretrained import read_model_file
from ..seeds import split_rng
from ..tokens import check_vocab


@dataclass
class Shape:
    """What the state dict says about the model."""
    vocab_size: int
    n_embd: int
    n_layer: int
    positions: str  # "rope", "learned" or "abacus"
    block_size: int | None  # known for learned positions (and abacus) only
    digits: int | None  # known for abacus only


@dataclass
class Settings:
    """The run's settings as far as evaluation needs them; `run` is its derived training configuration
    (utils/config.py's SingleModulusConfig or CurriculumConfig), moduli[i] pairs with bits_to_keep[i]."""
    run: object
    n_head: int
    vocab_size: int  # the model's (its token table)
    positions: str
    block_size: int

    @property
    def curriculum(self) -> bool:
        return not isinstance(self.run, SingleModulusConfig)

    @property
    def script(self) -> str:
        return CURRICULUM if self.curriculum else SINGLE

    @property
    def moduli(self) -> list[int]:
        return run_settings.moduli_of(self.run)

    @property
    def bits_to_keep(self) -> list[int]:
        return list(self.run.bits_to_keep) if self.curriculum else [self.run.bits_to_keep]

    @property
    def seq_len(self) -> int:
        return self.run.seq_len

    @property
    def digits(self) -> int:
        return self.run.digits


@dataclass
class EvalSet:
    """The test sequences of one (modulus, generator/control-bit combination)."""
    m: int
    combo: Combo
    dataset: PRNGDataset

    @property
    def label(self) -> str:
        return self.combo.label


def infer_shape(state: dict) -> Shape:
    vocab, n_embd = state["transformer.wte.weight"].shape
    layers = {int(m.group(1)) for k in state if (m := re.match(r"transformer\.h\.(\d+)\.", k))}
    if not layers or sorted(layers) != list(range(len(layers))):
        raise ValueError(f"the state dict's transformer.h.<i> blocks are not 0..n-1: {sorted(layers)[:8]}")
    wpe = state.get("transformer.wpe.weight")
    abacus = state.get("transformer.abacus.weight")
    if abacus is not None:  # wpe has one row per number: ceil(block_size / digits) = seq_len
        digits = int(abacus.shape[0])
        return Shape(int(vocab), int(n_embd), len(layers), "abacus", int(wpe.shape[0]) * digits - 1, digits)
    if wpe is not None:
        return Shape(int(vocab), int(n_embd), len(layers), "learned", int(wpe.shape[0]), 1)
    return Shape(int(vocab), int(n_embd), len(layers), "rope", None, None)


def _moduli_of(config: dict) -> list[int] | None:
    moduli = config.get("moduli")
    if moduli is None and isinstance(config.get("curriculum_config"), dict):
        moduli = config["curriculum_config"].get("moduli")
    return [int(m) for m in moduli] if moduli else None


def settings_from(shape: Shape, config: dict | None, flags: dict) -> Settings:
    """Merge the file's config with flags (flags given as None are absent). Model settings come from the
    file when it has them and a flag that contradicts them is an error; without a config they must be
    flags. Data settings take the config's values, then the flags', then the training script's defaults,
    and are derived as the training script derived them."""
    cfg = dict(config or {})

    def model_value(name, required_why=None):
        given, stored = flags.get(name), cfg.get(name)
        if stored is not None and given is not None and given != stored:
            raise ValueError(f"--{name} {given} contradicts the model file's {name}={stored}")
        value = stored if stored is not None else given
        if value is None and required_why:
            raise ValueError(f"the model file has no config: give --{name} ({required_why})")
        return value

    n_head = int(model_value("n_head", "the number of attention heads is not in a state dict"))
    if n_head < 1:
        raise ValueError(f"n_head must be >= 1, got {n_head}")
    if shape.n_embd % n_head:
        raise ValueError(f"n_head={n_head} does not divide the model width {shape.n_embd}")
    values = {k: v for k, v in flags.items() if v is not None}
    values.update({k: v for k, v in cfg.items() if v is not None})
    moduli = _moduli_of(cfg)
    curriculum = moduli is not None and "m" not in cfg
    if curriculum:
        values["moduli"] = moduli
        if cfg.get("bits_to_keep") is None and isinstance(cfg.get("curriculum_config"), dict):
            values["bits_to_keep"] = cfg["curriculum_config"].get("bits_to_keep")  # where the original keeps it
        if isinstance(values.get("bits_to_keep"), int):  # a flag: every modulus
            values["bits_to_keep"] = [values["bits_to_keep"]] * len(moduli)
    elif values.get("m") is None:
        raise ValueError("the model file has no config: give --m (the modulus it was trained on)")
    digits = shape.digits or int(model_value("digits") or 1)
    seq_len = cfg.get("seq_len", flags.get("seq_len"))
    if seq_len is None:
        if shape.block_size is None:
            raise ValueError("the model file has no config: give --seq_len (a RoPE model's context is not in its weights)")
        seq_len = (shape.block_size + 1) // digits
    seq_len = int(seq_len)
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    values.update(digits=digits, seq_len=seq_len)
    run = run_settings.run_config(CURRICULUM if curriculum else SINGLE, values)
    block = shape.block_size
    if shape.positions == "abacus" or block is None:
        block = run.context_len
    return Settings(run=run, n_head=n_head, vocab_size=shape.vocab_size, positions=shape.positions,
                    block_size=int(block))


def build(shape: Shape, settings: Settings, state: dict, device: torch.device, seq_len: int | None = None):
    """The model with the file's weights, in eval mode on `device`. A RoPE model gets a block size that
    also covers a longer `seq_len` asked for; learned positions cannot grow."""
    need = (seq_len or settings.seq_len) * settings.digits - 1
    per_token = 4 * shape.vocab_size + 16 * shape.n_layer * shape.n_embd  # as bounds.check_memory counts them
    if max(need, settings.block_size) * per_token > host_memory_bytes():
        raise ValueError(f"seq_len {seq_len or settings.seq_len}: a context of {max(need, settings.block_size):,} tokens "
                         f"needs more than this machine's memory ({host_memory_bytes() / 1e9:.3g} GB) for one sequence")
    block = settings.block_size
    if need > block:
        if shape.positions != "rope":
            raise ValueError(f"sequences of {seq_len} numbers need {need} positions; the model has learned "
                             f"positions for {block}")
        block = need
    config = GPTConfig(block_size=block, vocab_size=shape.vocab_size, n_layer=shape.n_layer, n_head=settings.n_head,
                       n_embd=shape.n_embd, digits=settings.digits)
    model = build_model(config, no_rope=shape.positions != "rope")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape than the inferred model's
        detail = str(err).strip().splitlines()[-1].strip()  # torch's first line names only the model class
        raise ValueError(f"the weights do not fit the inferred model: {detail}") from None
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to wte
    if missing or unexpected:
        raise ValueError(f"the weights do not fit the inferred model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model.to(device).eval()


@dataclass
class LoadedModel:
    model: torch.nn.Module
    shape: Shape
    settings: Settings
    config: dict | None


def load_model(path: str, flags: dict, device: torch.device, seq_len: int | None = None) -> LoadedModel:
    state, config = read_model_file(path)
    shape = infer_shape(state)
    settings = settings_from(shape, config, flags)
    return LoadedModel(build(shape, settings, state, device, seq_len), shape, settings, config)


def eval_sets(settings: Settings, *, moduli=None, kind=None, control_bits=None, bits_to_keep=None, data_seed=None,
              a_values=None, c_values=None, n_test_a=None, n_test_c=None, n_example=1, seq_len=None,
              log=print) -> list[EvalSet]:
    """The run's own test sequences (the (a, c), start states and types training saw, drawn by the
    training's own functions), or fresh ones where an argument replaces a setting. A modulus the run did
    not train on draws up to n_test_a x n_test_c test values (as many as it has) from data_seed."""
    changes = {k: v for k, v in (("n_test_a", n_test_a), ("n_test_c", n_test_c), ("seq_len", seq_len)) if v}
    run = dataclasses.replace(settings.run, **changes, **({} if data_seed is None else {"data_seed": int(data_seed)}))
    kind = kind or run.type
    control_bits = run_settings.control_bits_for(settings.script, kind, run.control_bits if control_bits is None
                                                 else control_bits, log)
    exclusions = load_exclusions(run.exclude_ac_paths)
    own = settings.moduli
    out = []
    for m in moduli or own:
        m = int(m)
        k = bits_to_keep if bits_to_keep is not None else settings.bits_to_keep[own.index(m) if m in own else -1]
        combos = parse_combos(kind, control_bits, m, k, log=log)
        max_value = max(c.max_output(m) for c in combos)
        try:
            check_vocab(max_value, run.base, run.digits, settings.vocab_size, what=f"{kind} at m={m}")
        except ValueError as err:
            raise ValueError(f"the model's vocabulary (base {run.base}, digits {run.digits}, vocab_size "
                             f"{settings.vocab_size}) does not allow m={m}: {err}") from None
        a, c = a_values, c_values
        if a is None or c is None:
            if m in own:
                split = run_settings.ac_split(run, m, own.index(m), exclusions)
            else:  # no training split to stay clear of at this modulus: test values as many as it has
                test_a = min(run.n_test_a, multiplier_count(m) - 1)
                test_c = min(run.n_test_c, increment_count(m) - 1)
                if (test_a, test_c) != (run.n_test_a, run.n_test_c):
                    log(f"m={m}: testing {test_a} multipliers x {test_c} increments (all it has)")
                ex_a, ex_c = exclusions.for_modulus(m)
                split = split_ac(m, 1, 1, test_a, test_c, split_rng(run.data_seed), ex_a, ex_c)
            a = split.test_a if a is None else a
            c = split.test_c if c is None else c
        for name, values in (("a", a), ("c", c)):
            if min(values) < 0 or max(values) >= m:
                raise ValueError(f"--{name} values must lie in [0, m={m}), got {list(values)[:6]}")
        ds = run_settings.dataset(run, m, combos, np.asarray(a, dtype=np.int64), np.asarray(c, dtype=np.int64),
                                  n_example)
        out += [EvalSet(m, ds.combos[j], ds.for_combo(j)) for j in range(len(combos))]
    return out
