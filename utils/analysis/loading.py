"""A model and the settings it was trained with, from any model file of this project or the original's.

The model's shape comes from the state dict: vocabulary and width from `transformer.wte.weight`, depth
from the `transformer.h.<i>` keys, the class from `wpe`/`abacus` (learned positions; their rows give the
block size and digits). What a state dict cannot tell (n_head, the RoPE context, m, type, control bits,
seeds, split sizes) comes from the file's `config` (a dict, or the original's argparse Namespace) when it
has one, else from flags. File names are never read.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import prng
from ..config import host_memory_bytes
from ..data import Combo, PRNGDataset, parse_combos
from ..gpt2 import GPTConfig, build_model, strip_compile_prefix
from ..params import increment_count, load_exclusions, multiplier_count, split_ac
from ..results import load_foreign
from ..tokens import check_vocab

# Training-script defaults for data settings a file without a config does not record.
DATA_DEFAULTS = {"type": "LCG", "control_bits": "", "digits": 1, "n_a": 32, "n_c": 32, "n_test_a": 16,
                 "n_test_c": 16, "data_seed": 1}
CURRICULUM_SEED_STRIDE = 1000  # modulus i of a curriculum draws its (a, c) from data_seed + 1000 i


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
    """The run's settings as far as evaluation needs them; moduli[i] pairs with bits_to_keep[i]."""
    type: str
    control_bits: str
    moduli: list[int]
    bits_to_keep: list[int | None]
    seq_len: int
    base: int
    digits: int
    vocab_size: int
    n_head: int
    positions: str
    block_size: int
    n_a: int
    n_c: int
    n_test_a: int
    n_test_c: int
    data_seed: int
    exclude_ac_paths: list[str] = field(default_factory=list)
    curriculum: bool = False


@dataclass
class EvalSet:
    """The test sequences of one (modulus, generator/control-bit combination)."""
    m: int
    combo: Combo
    dataset: PRNGDataset

    @property
    def label(self) -> str:
        return self.combo.label


def read_model_file(path: str) -> tuple[dict, dict | None]:
    """(state dict without `_orig_mod.`/`module.` prefixes, config as a dict or None)."""
    obj = load_foreign(path, "model file")
    config = None
    if isinstance(obj, dict) and "model_state_dict" in obj:
        config = obj.get("config")
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"model file {path} holds no state dict")
    state = strip_compile_prefix(obj)
    if "transformer.wte.weight" not in state:
        raise ValueError(f"model file {path} has no transformer.wte.weight (not a model of this project)")
    for key in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.abacus.weight"):
        if key in state and (state[key].dim() != 2 or 0 in state[key].shape):
            raise ValueError(f"model file {path}: {key} has shape {tuple(state[key].shape)}, not (rows, width)")
    if isinstance(config, argparse.Namespace):
        config = vars(config)
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"model file {path}: config is a {type(config).__name__}, not a dict or Namespace")
    return state, config


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


def resolve_bits(kind_text: str, m: int, bits_to_keep: int | None) -> int:
    """The training script's default k: n//2 when every type is XSLRR, else n."""
    if bits_to_keep is not None:
        return int(bits_to_keep)
    n = prng.bit_length(m)
    return n // 2 if all(t.strip().upper() == "XSLRR" for t in kind_text.split("+")) else n


def settings_from(shape: Shape, config: dict | None, flags: dict) -> Settings:
    """Merge the file's config with flags (flags given as None are absent). Model settings come from the
    file when it has them and a flag that contradicts them is an error; without a config they must be
    flags. Data settings take the config's values, then training-script defaults."""
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
    moduli = _moduli_of(cfg)
    curriculum = moduli is not None and "m" not in cfg
    if moduli is None:
        m = cfg.get("m", flags.get("m"))
        if m is None:
            raise ValueError("the model file has no config: give --m (the modulus it was trained on)")
        moduli = [int(m)]
    def data_value(name):
        for source in (cfg, flags):
            if source.get(name) is not None:
                return source[name]
        return DATA_DEFAULTS[name]

    kind = str(data_value("type"))
    control_bits = str(data_value("control_bits"))
    stored_k = cfg.get("bits_to_keep", flags.get("bits_to_keep"))
    if stored_k is None and isinstance(cfg.get("curriculum_config"), dict):  # where the original's curriculum keeps it
        stored_k = cfg["curriculum_config"].get("bits_to_keep")
    ks = list(stored_k) if isinstance(stored_k, (list, tuple)) else [stored_k] * len(moduli)
    ks += [None] * (len(moduli) - len(ks))
    ks = [resolve_bits(kind, m, k) for m, k in zip(moduli, ks)]
    digits = shape.digits or int(model_value("digits") or DATA_DEFAULTS["digits"])
    seq_len = cfg.get("seq_len", flags.get("seq_len"))
    if seq_len is None:
        if shape.block_size is None:
            raise ValueError("the model file has no config: give --seq_len (a RoPE model's context is not in its weights)")
        seq_len = (shape.block_size + 1) // digits
    seq_len = int(seq_len)
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    block = shape.block_size
    if shape.positions == "abacus":
        block = int(seq_len * digits - 1)
    elif block is None:
        block = seq_len * digits - 1
    has_lcg = any(t.strip().upper() == "LCG" for t in kind.split("+"))
    base = cfg.get("base") or flags.get("base") or (max(moduli) if has_lcg or curriculum else 2 ** ks[-1])
    out = Settings(type=kind, control_bits=control_bits, moduli=moduli, bits_to_keep=ks, seq_len=seq_len,
                   base=int(base), digits=digits, vocab_size=shape.vocab_size, n_head=n_head,
                   positions=shape.positions, block_size=int(block), curriculum=curriculum,
                   exclude_ac_paths=list(cfg.get("exclude_ac_paths") or []),
                   **{k: int(data_value(k)) for k in ("n_a", "n_c", "n_test_a", "n_test_c", "data_seed")})
    return out


def build(shape: Shape, settings: Settings, state: dict, device: torch.device, seq_len: int | None = None):
    """The model with the file's weights, in eval mode on `device`. A RoPE model gets a block size that
    also covers a longer `seq_len` asked for; learned positions cannot grow."""
    need = (seq_len or settings.seq_len) * settings.digits - 1
    per_token = 4 * shape.vocab_size + 16 * shape.n_layer * shape.n_embd  # as config.check_memory counts them
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


def parse_int_list(text: str | None, name: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v, 0) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be a comma list of integers, got {text!r}") from None
    if not values:
        raise ValueError(f"--{name} is empty")
    return values


def eval_sets(settings: Settings, *, moduli=None, kind=None, control_bits=None, bits_to_keep=None, data_seed=None,
              a_values=None, c_values=None, n_test_a=None, n_test_c=None, n_example=1, seq_len=None,
              log=print) -> list[EvalSet]:
    """The run's own test sequences (the same (a, c), start states and types training saw), or fresh ones
    where an argument replaces a setting. Modulus i of a curriculum draws from data_seed + 1000 i, as
    training did; a modulus the run did not train on draws up to n_test_a x n_test_c test values (as many
    as it has) from data_seed."""
    kind = kind or settings.type
    control_bits = settings.control_bits if control_bits is None else control_bits
    seed = settings.data_seed if data_seed is None else int(data_seed)
    n_test_a = n_test_a or settings.n_test_a
    n_test_c = n_test_c or settings.n_test_c
    seq_len = seq_len or settings.seq_len
    exclusions = load_exclusions(settings.exclude_ac_paths)
    out = []
    for m in moduli or settings.moduli:
        m = int(m)
        if m in settings.moduli:
            i = settings.moduli.index(m)
            k = settings.bits_to_keep[i] if bits_to_keep is None else bits_to_keep
            m_seed = seed + CURRICULUM_SEED_STRIDE * i if settings.curriculum else seed
        else:
            k = settings.bits_to_keep[-1] if bits_to_keep is None else bits_to_keep
            m_seed = seed
        if all(t.strip().upper() == "XSLRR" for t in kind.split("+")):
            k = prng.bit_length(m) // 2
        combos = parse_combos(kind, control_bits, m, k, log=log)
        max_value = max(c.max_output(m) for c in combos)
        try:
            check_vocab(max_value, settings.base, settings.digits, settings.vocab_size, what=f"{kind} at m={m}")
        except ValueError as err:
            raise ValueError(f"the model's vocabulary (base {settings.base}, digits {settings.digits}, vocab_size "
                             f"{settings.vocab_size}) does not allow m={m}: {err}") from None
        a, c = a_values, c_values
        if a is None or c is None:
            ex_a, ex_c = exclusions.for_modulus(m)
            if m in settings.moduli:
                split = split_ac(m, settings.n_a, settings.n_c, n_test_a, n_test_c, np.random.default_rng(m_seed),
                                 ex_a, ex_c)
            else:  # no training split to stay clear of at this modulus: test values as many as it has
                test_a = min(n_test_a, multiplier_count(m) - 1)
                test_c = min(n_test_c, increment_count(m) - 1)
                if (test_a, test_c) != (n_test_a, n_test_c):
                    log(f"m={m}: testing {test_a} multipliers x {test_c} increments (all it has)")
                split = split_ac(m, 1, 1, test_a, test_c, np.random.default_rng(m_seed), ex_a, ex_c)
            a = split.test_a if a is None else a
            c = split.test_c if c is None else c
        for name, values in (("a", a), ("c", c)):
            if min(values) < 0 or max(values) >= m:
                raise ValueError(f"--{name} values must lie in [0, m={m}), got {list(values)[:6]}")
        ds = PRNGDataset(m, combos, np.asarray(a, dtype=np.int64), np.asarray(c, dtype=np.int64), n_example, seq_len,
                         settings.base, settings.digits, seed)
        out += [EvalSet(m, ds.combos[j], ds.for_combo(j)) for j in range(len(combos))]
    return out


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(choice)
