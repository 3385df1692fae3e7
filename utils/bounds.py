"""Bounds on the configuration that follow from the table, the machine and the data, checked at
start-up before anything is built.

Every check raises ValueError with one line naming the flag (or YAML key) and the value; the scripts
turn that into `error: ...` and exit status 2. `name(attr)` gives the flag or YAML key a message names.
"""
from __future__ import annotations

import math
import os

from .config import CURRICULUM, PARAMS
from .int_list import INT64_MAX
from .seeds import CURRICULUM_SEED_STRIDE, last_split_seed

# Activations of a micro-batch live on one device. With CUDA the device's size is not asked for before
# the run starts (that would open a CUDA context on GPU 0 in every process of a distributed job), so a
# bound above every accelerator sold today stands in for it: the check catches impossible sizes only.
LARGEST_DEVICE_BYTES = 256 * 2**30


def check_int(name: str, value, lo: int = 1, hi: int = INT64_MAX) -> None:
    if lo <= value <= hi:
        return
    if hi != INT64_MAX:
        rule = f"in [{lo}, {hi}]"
    else:
        rule = f">= {lo}" if value < lo else "below 2^63 (it must fit int64)"
    raise ValueError(f"{name} must be {rule}, got {value}")


def check_float(name: str, value, lo: float = 0.0, below: float | None = None) -> None:
    """A finite float >= lo (and < below when given)."""
    if not math.isfinite(value) or value < lo or (below is not None and value >= below):
        rule = f"in [{lo}, {below})" if below is not None else f"finite and >= {lo}"
        raise ValueError(f"{name} must be {rule}, got {value}")


def check_bounds(cfg, script: str, name, only: tuple = ()) -> None:
    """Every bound of the table for the values this script has (None: not given, nothing to check);
    with `only`, the bounds of those attributes."""
    for p in PARAMS:
        if p.lo is None or (script not in p.scripts and not (script == CURRICULUM and p.yaml)):
            continue
        if only and p.target not in only:
            continue
        value = getattr(cfg, p.target, None)
        if value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            where = name(p.target) + (" entry" if isinstance(value, list) else "")
            if v is None:
                continue
            if p.for_script("kind", script) == "float":
                check_float(where, v, p.lo, p.below)
            else:
                check_int(where, v, int(p.lo), INT64_MAX if p.hi is None else p.hi)


def _check_digit_values(cfg, name) -> None:
    if cfg.base is not None and cfg.base ** (cfg.digits - 1) > INT64_MAX:  # every digit value base^i must fit
        raise ValueError(f"{name('base')} {cfg.base} with {name('digits')} {cfg.digits}: base^(digits-1) "
                         f"does not fit int64")


def check_base(cfg, script: str, name) -> None:
    """What check_common checks of the base, for a base derived after it ran."""
    check_bounds(cfg, script, name, only=("base",))
    _check_digit_values(cfg, name)


def check_common(cfg, script: str, name, log=print, n_moduli: int = 1) -> None:
    """The table's bounds and the rules between values."""
    check_bounds(cfg, script, name)
    _check_digit_values(cfg, name)
    if last_split_seed(cfg.data_seed, n_moduli) > INT64_MAX:  # numpy seeds must fit int64, as data_seed does
        raise ValueError(f"{name('data_seed')} {cfg.data_seed}: data_seed + {CURRICULUM_SEED_STRIDE} x {n_moduli - 1} "
                         f"(the seed of the last modulus) does not fit int64")
    if cfg.lr_min > cfg.lr_trgt:  # the original has no such rule: the cosine then rises to lr_min
        log(f"note: lr_min {cfg.lr_min} > lr_trgt {cfg.lr_trgt}: the cosine part of the schedule rises to lr_min")
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"{name('n_embd')} {cfg.n_embd} must be divisible by {name('n_head')} {cfg.n_head}")
    if not cfg.no_rope and (cfg.n_embd // cfg.n_head) % 2:
        raise ValueError(f"RoPE needs an even head size, got {name('n_embd')}/{name('n_head')} = "
                         f"{cfg.n_embd // cfg.n_head} (or use no_rope)")


def host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every platform: no bound then
        return 2**62


def model_parameters(*, vocab_size: int, n_embd: int, n_layer: int, block_size: int, no_rope: bool) -> int:
    """Parameters of the GPT (token table, blocks of 12 n_embd^2 weights, learned positions without RoPE)."""
    return vocab_size * n_embd + n_layer * 12 * n_embd * n_embd + (block_size * n_embd if no_rope else 0)


def check_memory(cfg, name, on_cuda: bool) -> None:
    """Refuse sizes that cannot be allocated: the model (built in host memory; weights, gradients and two
    AdamW moments in float32 during training) and the activations of one micro-batch (at least the
    float32 logits and 16 bytes per layer and embedding dimension for every token)."""
    if cfg.vocab_size > INT64_MAX // max(cfg.n_embd, 1):
        raise ValueError(f"{name('vocab_size')} {cfg.vocab_size} x {name('n_embd')} {cfg.n_embd} cannot be allocated")
    params = model_parameters(vocab_size=cfg.vocab_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                              block_size=cfg.context_len, no_rope=cfg.no_rope)
    host = host_memory_bytes()
    if 16 * params > (host if not on_cuda else max(host, LARGEST_DEVICE_BYTES)) or 4 * params > host:
        raise ValueError(f"the model ({name('vocab_size')} {cfg.vocab_size}, {name('n_embd')} {cfg.n_embd}, "
                         f"{name('n_layer')} {cfg.n_layer}) has {params:,} parameters and needs "
                         f"{16 * params / 1e9:.3g} GB to train; this machine has {host / 1e9:.3g} GB")
    n_ac = cfg.n_a + cfg.n_c + cfg.n_test_a + cfg.n_test_c
    if 16 * n_ac > host:  # the (a, c) lists, int64, and a working copy while they are drawn
        raise ValueError(f"{name('n_a')} {cfg.n_a}, {name('n_c')} {cfg.n_c}, {name('n_test_a')} {cfg.n_test_a}, "
                         f"{name('n_test_c')} {cfg.n_test_c}: the a and c lists need {16 * n_ac / 1e9:.3g} GB; "
                         f"this machine has {host / 1e9:.3g} GB")
    tokens = cfg.batch_size * cfg.context_len
    activations = tokens * (4 * cfg.vocab_size + 16 * cfg.n_layer * cfg.n_embd)
    limit = LARGEST_DEVICE_BYTES if on_cuda else host
    if activations > limit:
        raise ValueError(f"{name('batch_size')} {cfg.batch_size} x {name('seq_len')} {cfg.seq_len} x {name('digits')} "
                         f"{cfg.digits}: one micro-batch of {tokens:,} tokens needs at least "
                         f"{activations / 1e9:.3g} GB of activations, more than {limit / 1e9:.3g} GB "
                         f"({'any accelerator' if on_cuda else 'host memory'})")
