"""What a run's configuration implies, derived in one place for both training scripts and analyze.py:
the output bits k, the control bits, the generator/control-bit combinations, the base, the vocabulary,
the context, and each modulus's (a, c) split and datasets; and each script's start-up
(`setup_single`, `setup_curriculum`: every check and derivation, before anything is built).

analyze.py rebuilds a run's configuration from its saved config with `run_config` and its test set with
`ac_split` and `dataset`, the functions training used, so it evaluates what the run evaluated.
"""
from __future__ import annotations

from . import prng
from .bounds import check_base, check_common, check_memory
from .config import CURRICULUM, SINGLE, SingleModulusConfig, config_from
from .data import Combo, PRNGDataset, parse_combos, parse_control_bits
from .distributed import device_type
from .int_list import INT64_MAX
from .params import ACSplit, Exclusions, load_exclusions, split_ac
from .schedules import parse_phases, total_steps, validate_single_schedule
from .seeds import split_rng
from .tokens import check_vocab, context_len
from .wandb_utils import require_wandb

NO_CONTROL_BITS = ("LCG", "TLCG")


def quiet(*args, **kwargs) -> None:
    """A log that prints nothing."""


# --------------------------------------------------------------------------------------------------
# Control bits

def control_bits_for(script: str, type_text: str, control_bits, log=print) -> str:
    """The control bits a run uses, by the original's rules:
    - LCG and TLCG have no control bits. Values given with them alone are not used, one line says so:
      both original scripts ran the plain generator then (the single-modulus one without a word; the
      curriculum's replaced the value with '0', which its names and saved config show, and so does the
      curriculum here).
    - With LCG or TLCG in --type and none given: '0', so PCG types joined to them (`LCG+XSLRR`) run
      with 0 control bits (one line says so).
    """
    text = str(control_bits)
    if all(part.strip().upper() in NO_CONTROL_BITS for part in str(type_text).split("+")):
        if script == CURRICULUM and str(type_text).strip().upper() in NO_CONTROL_BITS:
            unused = text.strip() not in ("", "0")
            text = "0"
        else:
            unused = bool(text.strip()) and parse_control_bits(text) != [0]
        if unused:
            log(f"note: {type_text} has no control bits: control_bits {control_bits!r} is not used (as in the "
                f"original)")
    if text.strip():
        return text
    parts = [p.strip().upper() for p in str(type_text).split("+")]
    if not any(p in NO_CONTROL_BITS for p in parts):
        return text  # a PCG type alone needs control bits: parse_combos says so
    pcg = [p for p in parts if p not in NO_CONTROL_BITS]
    if pcg:
        log(f"note: no --control_bits given: {', '.join(pcg)} run with control bits 0 (the original's default "
            f"when LCG or TLCG is in --type)")
    return "0"


# --------------------------------------------------------------------------------------------------
# Single modulus (prng_train_lowmem.py)

def derive_single(cfg, log=print):
    """Fill the original's defaults in place: k = n bits (n//2 when every type is XSLRR, the only width it
    outputs); the control bits (control_bits_for); the combinations; base = m when `LCG` is in --type
    (case-sensitive, as the original's test: `lcg` takes 2^k), else 2^k; vocab_size = base, raised to
    base when smaller; the context. Returns name(attr): the flag a message names (a default names the
    flag it came from)."""
    types = [t.strip() for t in cfg.type.split("+")]
    half = prng.effective_bits("XSLRR", cfg.m, None)  # n//2
    has_lcg = "LCG" in types
    if cfg.bits_to_keep is None:
        cfg.bits_to_keep = half if all(t.upper() == "XSLRR" for t in types) else prng.bit_length(cfg.m)
    cfg.control_bits = control_bits_for(SINGLE, cfg.type, cfg.control_bits, log)
    cfg.combos = parse_combos(cfg.type, cfg.control_bits, cfg.m, cfg.bits_to_keep, log=log)
    if any(c.kind == "XSLRR" for c in cfg.combos) and cfg.bits_to_keep != half:
        log(f"warning: XSLRR always outputs n//2 = {half} bits; bits_to_keep={cfg.bits_to_keep} is not used for it")
    derived = {}
    name = lambda attr: derived.get(attr, f"--{attr}")
    if cfg.base is None:
        cfg.base = cfg.m if has_lcg else 2 ** cfg.bits_to_keep
        if not has_lcg and any(t.upper() == "LCG" for t in types):
            log(f"note: --type {cfg.type}: the default base is 2^bits_to_keep = {cfg.base}, not m, as in the original "
                f"(its test for LCG is case-sensitive); write LCG for the base m")
        derived["base"] = f"--base (default {'--m' if has_lcg else '2^bits_to_keep'})"
        check_base(cfg, SINGLE, name)
    if cfg.vocab_size is None:
        cfg.vocab_size = cfg.base
        derived["vocab_size"] = f"--vocab_size (default: the base{', --m' if has_lcg and 'base' in derived else ''})"
    elif cfg.vocab_size < cfg.base:  # as the original: the file name and the model get the base
        log(f"note: --vocab_size {cfg.vocab_size} is smaller than the base {cfg.base}; using vocab_size {cfg.base}")
        cfg.vocab_size = cfg.base
    cfg.context_len = context_len(cfg.seq_len, cfg.digits)
    return name


def setup_single(cfg, world_size: int, log=print):
    """prng_train_lowmem.py's start-up: check every value, derive the rest (derive_single) and check what
    follows from both, before anything is built; raise ValueError naming the flag and the value."""
    check_common(cfg, SINGLE, lambda attr: f"--{attr}", log)
    validate_single_schedule(warm_steps=cfg.warm_steps, num_steps=cfg.num_steps)
    if cfg.warm_steps >= cfg.num_steps:
        log(f"warning: warm_steps={cfg.warm_steps} >= num_steps={cfg.num_steps}: the whole run is LR warmup")
    name = derive_single(cfg, log)
    check_memory(cfg, name, device_type(cfg.device) == "cuda")
    max_value = max(c.max_output(cfg.m) for c in cfg.combos)
    check_vocab(max_value, cfg.base, cfg.digits, cfg.vocab_size, what=f"{cfg.type} (m={cfg.m})")
    if cfg.use_wandb:
        require_wandb()
    cfg.world_size = world_size
    cfg.effective_batch = cfg.batch_size * cfg.grad_acc_steps * world_size
    n_train = len(cfg.combos) * cfg.n_a * cfg.n_c * cfg.n_example
    if n_train > INT64_MAX:
        raise ValueError(f"--n_example {cfg.n_example}: the training set of {n_train} sequences (types x n_a x n_c x "
                         f"n_example) cannot be indexed in int64")
    if n_train < cfg.batch_size * world_size:
        raise ValueError(f"--batch_size {cfg.batch_size}: the training set has {n_train} sequences (types x n_a x "
                         f"n_c x n_example), fewer than one batch of {cfg.batch_size} x {world_size} process(es)")
    return cfg


# --------------------------------------------------------------------------------------------------
# Curriculum (curriculum_lowmem.py)

def derive_curriculum(cfg, log=print) -> None:
    """Fill the original's defaults in place: per modulus k = the given bits_to_keep entry, else n (XSLRR
    outputs n//2 whatever k says); the control bits (control_bits_for); the combinations of each modulus;
    base = max(moduli) for LCG, else 2^(bits of the widest output); vocab_size = base; the context."""
    name = lambda attr: cfg._names.get(attr, f"--{attr}")
    ks = list(cfg.bits_to_keep or [])
    if len(ks) > len(cfg.moduli):
        raise ValueError(f"{name('bits_to_keep')} has {len(ks)} entries but there are {len(cfg.moduli)} moduli")
    if len(ks) < len(cfg.moduli) and cfg.type.strip().upper() not in ("LCG", "XSLRR"):
        log(f"warning: bits_to_keep has {len(ks)} entries for {len(cfg.moduli)} moduli; the others keep n bits")
    ks += [None] * (len(cfg.moduli) - len(ks))
    cfg.bits_to_keep = [prng.bit_length(m) if k is None else k for m, k in zip(cfg.moduli, ks)]
    cfg.control_bits = control_bits_for(CURRICULUM, cfg.type, cfg.control_bits, log)
    cfg.combos_by_m = {m: parse_combos(cfg.type, cfg.control_bits, m, k, log=log)
                       for m, k in zip(cfg.moduli, cfg.bits_to_keep)}
    for m, k in zip(cfg.moduli, ks):
        half = prng.effective_bits("XSLRR", m, None)  # n//2
        if k is not None and k != half and any(c.kind == "XSLRR" for c in cfg.combos_by_m[m]):
            log(f"warning: XSLRR always outputs n//2 = {half} bits at m={m}; bits_to_keep={k} is not used for it")
    if cfg.base is None:
        widest = max(c.max_output(m) for m, combos in cfg.combos_by_m.items() for c in combos).bit_length()
        cfg.base = max(cfg.moduli) if cfg.type.upper() == "LCG" else 2 ** widest
        check_base(cfg, CURRICULUM, name)
    if cfg.vocab_size is None:
        cfg.vocab_size = cfg.base
    cfg.context_len = context_len(cfg.seq_len, cfg.digits)


def setup_curriculum(cfg, world_size: int, log=print):
    """curriculum_lowmem.py's start-up after load_config: check every value, derive the rest
    (derive_curriculum, the phases) and check what follows, before anything is built; raise ValueError
    naming the flag or YAML key."""
    name = lambda attr: cfg._names.get(attr, f"--{attr}")
    check_common(cfg, CURRICULUM, name, log, n_moduli=len(cfg.moduli))
    if len(set(cfg.moduli)) != len(cfg.moduli):
        raise ValueError(f"{name('moduli')} repeat a value: {cfg.moduli}")
    derive_curriculum(cfg, log)
    try:
        cfg.phase_list = parse_phases(cfg.phases, len(cfg.moduli), log=log)
    except ValueError as err:
        raise ValueError(f"{name('phases')}: {err}") from None
    cfg.num_steps = total_steps(cfg.phase_list)
    if cfg.sampler_update_interval is None:
        cfg.sampler_update_interval = cfg.eval_interval
    check_memory(cfg, name, device_type(cfg.device) == "cuda")
    for m, combos in cfg.combos_by_m.items():  # the shared vocabulary must hold every modulus's largest token
        check_vocab(max(c.max_output(m) for c in combos), cfg.base, cfg.digits, cfg.vocab_size,
                    what=f"{cfg.type} (m={m})")
    if cfg.pretrained_path == "":
        cfg.pretrained_path = None
    if cfg.use_wandb:
        require_wandb()
    cfg.world_size = world_size
    cfg.effective_batch = cfg.batch_size * cfg.grad_acc_steps * world_size
    return cfg


# --------------------------------------------------------------------------------------------------
# A run's data: the same for training and for analysis

def moduli_of(cfg) -> list[int]:
    return [cfg.m] if isinstance(cfg, SingleModulusConfig) else list(cfg.moduli)


def combos_of(cfg) -> dict[int, list[Combo]]:
    """The validated combinations of each modulus of a derived configuration."""
    return {cfg.m: cfg.combos} if isinstance(cfg, SingleModulusConfig) else cfg.combos_by_m


def ac_split(cfg, m: int, index: int, exclusions: Exclusions) -> ACSplit:
    """The (a, c) split of the run's modulus m, its `index`-th (0 for a single modulus): drawn from
    seeds.split_rng(data_seed, index), without the values `exclusions` hold for m."""
    ex_a, ex_c = exclusions.for_modulus(m)
    return split_ac(m, cfg.n_a, cfg.n_c, cfg.n_test_a, cfg.n_test_c, split_rng(cfg.data_seed, index), ex_a, ex_c)


def ac_splits(cfg) -> dict[int, ACSplit]:
    """Every modulus's (a, c) split, without the values of the run's exclusion files."""
    exclusions = load_exclusions(cfg.exclude_ac_paths)
    return {m: ac_split(cfg, m, i, exclusions) for i, m in enumerate(moduli_of(cfg))}


def dataset(cfg, m: int, combos: list[Combo], a_values, c_values, n_example: int) -> PRNGDataset:
    return PRNGDataset(m, combos, a_values, c_values, n_example, cfg.seq_len, cfg.base, cfg.digits, cfg.data_seed)


def datasets(cfg, splits: dict[int, ACSplit]) -> tuple[dict, dict]:
    """Train and test sets per modulus."""
    combos = combos_of(cfg)
    train = {m: dataset(cfg, m, combos[m], s.train_a, s.train_c, cfg.n_example) for m, s in splits.items()}
    test = {m: dataset(cfg, m, combos[m], s.test_a, s.test_c, 1) for m, s in splits.items()}
    return train, test


def run_config(script: str, values: dict, log=quiet):
    """A run's configuration from the values it was given or saved with (a saved config, flags; the
    table's defaults for the others), derived as its training script derived it. No bounds are checked:
    the run checked them."""
    cfg = config_from(script, values)
    (derive_single if script == SINGLE else derive_curriculum)(cfg, log)
    return cfg
