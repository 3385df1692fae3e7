"""Bounds on the configuration that follow from the machine and the data, checked before anything is
built, and the bounded integer-expression parser of `--moduli` / `--bits_to_keep`.

Every check raises ValueError with one line naming the flag (or YAML key) and the value; the scripts
turn that into `error: ...` and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass, fields, make_dataclass
from dataclasses import field as dataclass_field

EXIT_BAD_INPUT = 2
INT64_MAX = 2**63 - 1  # generator states, a, c and token values live in int64
MAX_EXPR_CHARS = 200  # one --moduli entry; far longer than any real one
MAX_EXPR_DEPTH = 32  # nested parentheses
# Activations of a micro-batch live on one device. With CUDA the device's size is not asked for before
# the run starts (that would open a CUDA context on GPU 0 in every process of a distributed job), so a
# bound above every accelerator sold today stands in for it: the check catches impossible sizes only.
LARGEST_DEVICE_BYTES = 256 * 2**30


# --------------------------------------------------------------------------------------------------
# Integer expressions: numbers, **, *, +, -, parentheses; every intermediate result below 2^63.

_TOKEN = re.compile(r"\s*(?:(\d+)|(\*\*|[-+*()]))")


class _Expr:
    def __init__(self, text: str):
        self.tokens, pos, text = [], 0, text.strip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise ValueError(f"unexpected {text[pos:pos + 10]!r}")
            self.tokens.append(int(match.group(1)) if match.group(1) else match.group(2))
            pos = match.end()
        self.i, self.depth = 0, 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        token = self.peek()
        self.i += 1
        return token

    @staticmethod
    def capped(value: int) -> int:  # intermediate results up to 2^64, so that 2**63-1 can be written
        if abs(value) > 2**64:
            raise ValueError("a result reaches 2^63 or more")
        return value

    def expr(self) -> int:  # term (('+' | '-') term)*
        value = self.term()
        while self.peek() in ("+", "-"):
            op, right = self.take(), self.term()
            value = self.capped(value + right if op == "+" else value - right)
        return value

    def term(self) -> int:  # unary ('*' unary)*
        value = self.unary()
        while self.peek() == "*":
            self.take()
            value = self.capped(value * self.unary())
        return value

    def unary(self) -> int:  # '-' unary | '+' unary | power
        if self.peek() in ("-", "+"):
            sign = -1 if self.take() == "-" else 1
            return sign * self.unary()
        return self.power()

    def power(self) -> int:  # atom ('**' unary)?  (right-associative; -2**2 = -4 as in Python)
        base = self.atom()
        if self.peek() != "**":
            return base
        self.take()
        exponent = self.unary()
        if exponent < 0:
            raise ValueError("a negative exponent")
        if abs(base) >= 2 and exponent > 64:  # |base|^65 > 2^64: too large, known before computing it
            raise ValueError("a result reaches 2^63 or more")
        return self.capped(base**exponent)

    def atom(self) -> int:
        token = self.take()
        if isinstance(token, int):
            return self.capped(token)
        if token == "(":
            self.depth += 1
            if self.depth > MAX_EXPR_DEPTH:
                raise ValueError("parentheses nested too deeply")
            value = self.expr()
            if self.take() != ")":
                raise ValueError("a '(' without ')'")
            self.depth -= 1
            return value
        raise ValueError("a number is missing" if token is None else f"unexpected {token!r}")


def int_expr(text: str) -> int:
    """Evaluate '2**18', '3*2**10+1', '(2**4)**2' exactly; every result stays below 2^63, so the
    work is bounded whatever the input. Raises ValueError."""
    if len(text) > MAX_EXPR_CHARS:
        raise ValueError(f"longer than {MAX_EXPR_CHARS} characters")
    parser = _Expr(text)
    if not parser.tokens:
        raise ValueError("empty")
    value = parser.expr()
    if parser.peek() is not None:
        raise ValueError(f"unexpected {parser.peek()!r}")
    if abs(value) > INT64_MAX:
        raise ValueError("a result reaches 2^63 or more")
    return value


def parse_int_list(text, flag: str) -> list[int]:
    """'256,1024,2**12' -> [256, 1024, 4096] (numbers, **, *, +, -, parentheses)."""
    values = []
    for part in str(text).split(","):
        try:
            values.append(int_expr(part))
        except ValueError as err:
            raise ValueError(f"{flag}: cannot read {part.strip()[:40]!r} as an integer expression ({err}; "
                             f"numbers, **, *, +, - and parentheses allowed, results below 2^63)") from None
    return values


# --------------------------------------------------------------------------------------------------
# Bounds

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


def check_data_seeds(data_seed: int, name, n_moduli: int) -> None:
    """The curriculum seeds modulus i's (a, c) with data_seed + 1000 i, which must fit int64 as the seed does."""
    if data_seed + 1000 * (n_moduli - 1) > INT64_MAX:
        raise ValueError(f"{name('data_seed')} {data_seed}: data_seed + 1000 x {n_moduli - 1} (the seed of the last "
                         f"modulus) does not fit int64")


def host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every platform: no bound then
        return 2**62


def model_parameters(*, vocab_size: int, n_embd: int, n_layer: int, block_size: int, no_rope: bool) -> int:
    """Parameters of the GPT (token table, blocks of 12 n_embd^2 weights, learned positions without RoPE)."""
    return vocab_size * n_embd + n_layer * 12 * n_embd * n_embd + (block_size * n_embd if no_rope else 0)


def check_memory(cfg, name, device_is_cuda: bool) -> None:
    """Refuse sizes that cannot be allocated: the model (built in host memory; weights, gradients and two
    AdamW moments in float32 during training) and the activations of one micro-batch (at least the
    float32 logits and 16 bytes per layer and embedding dimension for every token)."""
    if cfg.vocab_size > INT64_MAX // max(cfg.n_embd, 1):
        raise ValueError(f"{name('vocab_size')} {cfg.vocab_size} x {name('n_embd')} {cfg.n_embd} cannot be allocated")
    params = model_parameters(vocab_size=cfg.vocab_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                              block_size=cfg.context_len, no_rope=cfg.no_rope)
    host = host_memory_bytes()
    if 16 * params > (host if not device_is_cuda else max(host, LARGEST_DEVICE_BYTES)) or 4 * params > host:
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
    limit = LARGEST_DEVICE_BYTES if device_is_cuda else host
    if activations > limit:
        raise ValueError(f"{name('batch_size')} {cfg.batch_size} x {name('seq_len')} {cfg.seq_len} x {name('digits')} "
                         f"{cfg.digits}: one micro-batch of {tokens:,} tokens needs at least "
                         f"{activations / 1e9:.3g} GB of activations, more than {limit / 1e9:.3g} GB "
                         f"({'any accelerator' if device_is_cuda else 'host memory'})")


def device_is_cuda(choice: str) -> bool:
    """Whether the run will train on CUDA (`--device auto` means CUDA when one is available)."""
    if choice == "cpu":
        return False
    import torch
    return choice == "cuda" or torch.cuda.is_available()


def check_common(cfg, script: str, name, log=print, n_data_seeds: int = 1) -> None:
    """The table's bounds and the rules between values; `name(attr)` gives the flag or YAML key a
    message names."""
    check_bounds(cfg, script, name)
    if cfg.base is not None and cfg.base ** (cfg.digits - 1) > INT64_MAX:  # every digit value base^i must fit
        raise ValueError(f"{name('base')} {cfg.base} with {name('digits')} {cfg.digits}: base^(digits-1) "
                         f"does not fit int64")
    check_data_seeds(cfg.data_seed, name, n_data_seeds)
    if cfg.lr_min > cfg.lr_trgt:  # the original has no such rule: the cosine then rises to lr_min
        log(f"note: lr_min {cfg.lr_min} > lr_trgt {cfg.lr_trgt}: the cosine part of the schedule rises to lr_min")
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"{name('n_embd')} {cfg.n_embd} must be divisible by {name('n_head')} {cfg.n_head}")
    if not cfg.no_rope and (cfg.n_embd // cfg.n_head) % 2:
        raise ValueError(f"RoPE needs an even head size, got {name('n_embd')}/{name('n_head')} = "
                         f"{cfg.n_embd // cfg.n_head} (or use no_rope)")


# --------------------------------------------------------------------------------------------------
# The parameter table: every flag and YAML key of both scripts, once. The argument parsers, the
# curriculum's YAML schema, the bounds checked at start-up, --help and docs/parameters.md are made
# from it, so a default or a rule cannot differ between two places.

SINGLE, CURRICULUM = "single", "curriculum"  # prng_train_lowmem.py, curriculum_lowmem.py
BOTH = (SINGLE, CURRICULUM)


@dataclass(frozen=True)
class Param:
    """One setting. `default` and `kind` may be {script: value} where the scripts differ (as the
    original's did). Kinds: int, float, str, flag (store_true), paths (zero or more files),
    intlist (flag: '256,2**10' expressions; YAML: a list), phases (flag: JSON; YAML: a list)."""
    name: str  # flag --name and config attribute
    kind: object
    default: object
    help: str
    scripts: tuple = BOTH  # where it is a flag; () = YAML only
    yaml: tuple = ()  # curriculum YAML keys ('section.key', or 'key' at the top level)
    yaml_default: object = "same"  # the YAML's default where it differs from the curriculum flag's
    attr: str | None = None  # the config attribute the YAML sets, where it differs from name
    lo: float | None = None  # bounds checked at start-up (ints inclusive; floats: lo <= v < below)
    hi: int | None = None
    below: float | None = None
    choices: tuple | None = None
    group: str = "run"
    required: bool = False  # in the YAML (null is an error)

    def for_script(self, field: str, script: str):
        value = getattr(self, field)
        return value[script] if isinstance(value, dict) else value

    @property
    def target(self) -> str:
        return self.attr or self.name


P = Param
PARAMS = (
    P("config", "str", None, "YAML file; flags written on the command line override its values",
      scripts=(CURRICULUM,)),
    # seeds and data
    P("main_seed", "int", 1, "seeds model init, batch order, correctness subset", yaml=("seeds.main_seed",), lo=0,
      group="data"),
    P("data_seed", "int", 1, "seeds the (a, c) choice and start states (curriculum: modulus i uses data_seed + 1000 i)",
      yaml=("seeds.data_seed",), lo=0, group="data"),
    P("type", "str", "LCG", "LCG, TLCG, RS, RR, XSHRR, XSHRS, XSLRR, XSPCGs, or a '+'-join of these",
      yaml=("data.type",), group="data"),
    P("m", "int", 65536, "modulus", scripts=(SINGLE,), lo=1, hi=INT64_MAX, group="data"),
    P("moduli", "intlist", "256,1024,4096",
      "comma list of moduli; numbers, **, *, +, - and parentheses allowed; the flag's list is sorted ascending "
      "(weights and bits_to_keep follow that order), the YAML's is used as written", scripts=(CURRICULUM,),
      yaml=("curriculum.moduli",), yaml_default=None, lo=1, hi=INT64_MAX, group="data", required=True),
    P("control_bits", "str", {SINGLE: "", CURRICULUM: "0"},
      "an int or a comma list (PCG types); '' with LCG or TLCG in --type means 0", yaml=("data.control_bits",),
      group="data"),
    P("bits_to_keep", {SINGLE: "int", CURRICULUM: "intlist"}, None,
      "k, output bits kept; default n = ceil(log2 m) (n//2 for XSLRR); curriculum: one per modulus",
      yaml=("curriculum.bits_to_keep",), lo=1, hi=63, group="data"),
    P("vocab_size", "int", None, "default: base; a smaller value is raised to base (single-modulus script)",
      yaml=("data.vocab_size",), lo=1, group="data"),
    P("seq_len", "int", 513, "numbers per sequence", yaml=("data.seq_len",), lo=2, group="data"),
    P("base", "int", None, "default: m with LCG, else 2^k (curriculum: max modulus with LCG, else 2^bits of the "
      "widest output)", yaml=("data.base",), lo=2, group="data"),
    P("digits", "int", 1, "base-b digits per number (least significant first)", yaml=("data.digits",), lo=1, hi=63,
      group="data"),
    P("n_a", "int", 32, "training multipliers a", yaml=("data.n_a",), lo=1, group="data"),
    P("n_c", "int", 32, "training increments c", yaml=("data.n_c",), lo=1, group="data"),
    P("n_test_a", "int", 16, "test multipliers (never used in training)", yaml=("data.n_test_a",), lo=1, group="data"),
    P("n_test_c", "int", 16, "test increments (never used in training)", yaml=("data.n_test_c",), lo=1, group="data"),
    P("n_example", "int", 1, "training sequences per (a, c)", yaml=("data.n_example",), lo=1, group="data"),
    P("exclude_ac_paths", "paths", None, "files of a and c values to leave out (.npz or .pt; several allowed; "
      "the flag with no file means none)", yaml=("exclude_ac_paths",), group="data"),
    # model
    P("n_layer", "int", {SINGLE: 1, CURRICULUM: 2}, "transformer blocks", yaml=("model.n_layer",), lo=1,
      group="model"),
    P("n_head", "int", {SINGLE: 1, CURRICULUM: 2}, "attention heads", yaml=("model.n_head",), lo=1, group="model"),
    P("n_embd", "int", {SINGLE: 64, CURRICULUM: 128}, "embedding width (a multiple of n_head)",
      yaml=("model.n_embd",), lo=1, group="model"),
    P("no_rope", "flag", False, "learned positions instead of RoPE (abacus positions when digits > 1)",
      yaml=("model.no_rope",), group="model"),
    P("pretrained_path", "str", None, "start from these weights (this project's or the original's files; layers "
      "the file lacks keep their initialisation)", scripts=(CURRICULUM,), yaml=("pretrained.pretrained_path",),
      group="model"),
    P("pretrain_m", "int", None, "modulus of the pretrained model (recorded in names and config only)",
      scripts=(CURRICULUM,), yaml=("pretrained.pretrain_m",), group="model"),
    # schedule and optimisation
    P("num_steps", "int", 100, "optimizer updates", scripts=(SINGLE,), lo=1, group="optimisation"),
    P("warm_steps", "int", 10, "linear LR warmup updates (0: none)", scripts=(SINGLE,), lo=0, group="optimisation"),
    P("custom_phases", "phases", None, "JSON list of phase objects (required without --config)",
      scripts=(CURRICULUM,), yaml=("curriculum.phases",), yaml_default=[], attr="phases", group="optimisation"),
    P("transition_type", "str", "linear", "names the run when the first phase gives no transition",
      scripts=(CURRICULUM,), yaml=("curriculum.transition_type",), choices=("linear", "cosine", "step", "exp"),
      group="optimisation"),
    P("sampler_update_interval", "int", None, "updates between refreshes of the modulus weights (default: "
      "eval_interval)", scripts=(CURRICULUM,), yaml=("curriculum.sampler_update_interval",), lo=1,
      group="optimisation"),
    P("lr_trgt", "float", {SINGLE: 1e-3, CURRICULUM: 1e-4}, "peak LR", yaml=("training.lr_trgt",), lo=0.0,
      group="optimisation"),
    P("lr_min", "float", 1e-7, "cosine floor (0 allowed; above lr_trgt the cosine rises)",
      yaml=("training.lr_min",), lo=0.0, group="optimisation"),
    P("batch_size", "int", {SINGLE: 32, CURRICULUM: 64}, "per-process micro-batch", yaml=("training.batch_size",),
      lo=1, group="optimisation"),
    P("grad_acc_steps", "int", 1, "micro-batches per update", yaml=("training.grad_acc_steps",), lo=1,
      group="optimisation"),
    P("weight_decay", "float", {SINGLE: 0.5, CURRICULUM: 0.1}, "AdamW weight decay on matrices and embeddings",
      yaml=("training.weight_decay",), lo=0.0, group="optimisation"),
    P("beta1", "float", 0.9, "AdamW beta1", yaml=("training.beta1",), lo=0.0, below=1.0, group="optimisation"),
    P("beta2", "float", 0.999, "AdamW beta2", yaml=("training.beta2",), lo=0.0, below=1.0, group="optimisation"),
    P("eval_interval", "int", {SINGLE: 20, CURRICULUM: 100}, "updates between evaluations",
      yaml=("training.eval_interval",), lo=1, group="optimisation"),
    # output
    P("results_dir", "str", {SINGLE: "results/train", CURRICULUM: "results/multi_curriculum_lazy"},
      "output folder (the curriculum YAML's default, results/multi_curriculum, differs from its flag's, as in "
      "the original)", yaml=("output.results_dir",), yaml_default="results/multi_curriculum", group="output"),
    P("save_correctness", "flag", False, "accuracy by position at the end (npz and png)",
      yaml=("output.save_correctness",), group="output"),
    P("save_params", "flag", False, "final weights, and the training a and c", yaml=("output.save_params",),
      group="output"),
    P("save_test_values", "flag", False, "the test a and c (testac_...npz)", scripts=(SINGLE,), group="output"),
    P("save_checkpoints", "flag", False, "checkpoints at step 0, every checkpoint_interval and at the end",
      yaml=("training.save_checkpoints", "output.save_checkpoints"), group="output"),
    P("checkpoint_interval", "int", {SINGLE: 2000, CURRICULUM: 1000}, "updates between checkpoints",
      yaml=("training.checkpoint_interval", "output.checkpoint_interval"), lo=1, group="output"),
    P("num_workers", "int", 8, "accepted for the original's command lines; batches are made in-process by one "
      "vectorized call, so no workers are started", scripts=(SINGLE,), lo=0, group="output"),
    # YAML only: printed or kept, as the original
    P("experiment_name", "str", "Unnamed", "printed at start", scripts=(), yaml=("experiment_name",)),
    P("description", "str", "No description", "printed at start", scripts=(), yaml=("description",)),
    P("cache_size", "int", 1000, "read and kept, unused (as in the original)", scripts=(), yaml=("memory.cache_size",)),
    # W&B
    P("use_wandb", "flag", False, "log to W&B", yaml=("wandb.use_wandb",), group="wandb"),
    P("wandb_project", "str", "prng_scaling", "W&B project", yaml=("wandb.project",), group="wandb"),
    P("wandb_entity", "str", None, "W&B entity", yaml=("wandb.entity",), group="wandb"),
    P("wandb_name", "str", None, "run name (default: the run's base file name)", yaml=("wandb.name",), group="wandb"),
    P("wandb_tags", "str", None, "comma-separated (YAML: a list)", yaml=("wandb.tags",), group="wandb"),
    P("wandb_notes", "str", None, "W&B notes", yaml=("wandb.notes",), group="wandb"),
    P("wandb_offline", "flag", False, "log offline (sync later with `wandb sync`)", yaml=("wandb.offline",),
      group="wandb"),
    P("wandb_api_key", "str", None, "exported as WANDB_API_KEY (never saved in any file)", yaml=("wandb.api_key",),
      group="wandb"),
    # runtime (this project)
    P("device", "str", "auto", "auto: cuda if available", choices=("auto", "cpu", "cuda"), group="runtime"),
    P("dtype", "str", "auto", "autocast dtype; auto: bfloat16 on CUDA, on the CPU float32 unless bfloat16 is "
      "known faster there", choices=("auto", "float32", "bfloat16"), group="runtime"),
    P("compile", "str", "auto", "torch.compile the model; auto: on for CUDA, off on CPU",
      choices=("auto", "on", "off"), group="runtime"),
    P("resume", "str", None, "checkpoint path, or 'auto' for the newest complete checkpoint of this run in "
      "results_dir", group="runtime"),
    P("keep_checkpoints", "int", None, "keep only the newest N periodic checkpoints (default: keep all)", lo=1,
      group="runtime"),
    P("ignore_disk_check", "flag", False, "start even if the checkpoints the run will write exceed the free disk "
      "space", group="runtime"),
)
GROUPS = {"data": "data", "model": "model", "optimisation": "schedule and optimisation", "output": "output",
          "wandb": "Weights & Biases", "runtime": "runtime (this project)", "run": "run"}


def params_of(script: str) -> list[Param]:
    return [p for p in PARAMS if script in p.scripts]


@dataclass
class SingleDerived:
    """What prng_train_lowmem.setup_config derives from the parameters (None until it has run)."""
    type_list: list | None = None  # the '+'-joined types of --type
    combos: list | None = None  # validated generator/control-bit combinations (utils.data.Combo)
    context_len: int | None = None  # seq_len * digits - 1: the model's input length
    world_size: int | None = None  # processes
    effective_batch: int | None = None  # batch_size x grad_acc_steps x world_size
    amp_dtype: object = None  # the autocast dtype, chosen at start-up from --dtype


@dataclass
class CurriculumDerived:
    """What curriculum_lowmem.load_config/setup_config derive (None until they have run)."""
    phases: list | None = None  # the phase dicts: YAML curriculum.phases or --custom_phases
    phase_list: list | None = None  # validated utils.schedules.Phase objects
    num_steps: int | None = None  # the sum of the phases' steps
    combos_by_m: dict | None = None  # validated combinations per modulus
    moduli_bits_to_keep: list | None = None  # bits_to_keep as given (the original's key name)
    context_len: int | None = None
    world_size: int | None = None
    effective_batch: int | None = None
    amp_dtype: object = None


_PY_TYPES = {"int": int, "float": float, "str": str, "flag": bool, "paths": list, "intlist": str, "phases": str}


def config_class(script: str) -> type:
    """The typed configuration of a script: one field per parameter (the table's default for this
    script) after the fields of what its set-up derives."""
    base = SingleDerived if script == SINGLE else CurriculumDerived
    taken = {f.name for f in fields(base)}
    own = []
    for p in PARAMS:
        if script in p.scripts or (script == CURRICULUM and not p.scripts):  # YAML-only values too
            assert p.name not in taken, p.name
            kind, default = p.for_script("kind", script), p.for_script("default", script)
            own.append((p.name, _PY_TYPES[kind] | None if default is None else _PY_TYPES[kind],
                        dataclass_field(default=default)))
    return make_dataclass("SingleModulusConfig" if script == SINGLE else "CurriculumConfig", own, bases=(base,))


class ConfigParser(argparse.ArgumentParser):
    """An argument parser whose result is the script's typed config (`config_class`), not a Namespace."""

    def __init__(self, script: str, **kwargs):
        super().__init__(**kwargs)
        self.config_class = config_class(script)

    def parse_args(self, args=None, namespace=None):
        return super().parse_args(args, self.config_class() if namespace is None else namespace)

    def error(self, message):  # a malformed flag is bad input like any other: one line, exit 2
        fail(f"{message} (see --help)")


def build_parser(script: str, description: str) -> ConfigParser:
    """The script's argument parser, from PARAMS."""
    parser = ConfigParser(script, description=description)
    groups = {}
    for p in params_of(script):
        group = groups.get(p.group) or groups.setdefault(p.group, parser.add_argument_group(GROUPS[p.group]))
        kind, default = p.for_script("kind", script), p.for_script("default", script)
        kwargs = {"default": default, "help": p.help}
        if kind == "flag":
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = {"int": int, "float": float}.get(kind, str)
            if kind == "paths":
                kwargs["nargs"] = "*"
            if p.choices:
                kwargs["choices"] = list(p.choices)
        group.add_argument(f"--{p.name}", **kwargs)
    return parser


def fail(message: str) -> None:
    """Exit with one line naming the problem (bad input: flags, YAML, files) before any compute."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


def yaml_cast(p: Param) -> str:
    """How the curriculum YAML reads the key: int, float, bool, str, ints, strs, list, tags; '?' = may be null."""
    kind = p.for_script("kind", CURRICULUM)
    default = p.yaml_default if p.yaml_default != "same" else p.for_script("default", CURRICULUM)
    cast = {"int": "int", "float": "float", "flag": "bool", "str": "str", "paths": "strs", "intlist": "ints",
            "phases": "list"}[kind]
    if p.name == "wandb_tags":
        cast = "tags"
    return cast + ("?" if default is None and cast not in ("list", "tags") and not p.required else "")


def yaml_default(p: Param):
    return p.yaml_default if p.yaml_default != "same" else p.for_script("default", CURRICULUM)


YAML_SECTIONS = ("model", "data", "curriculum", "training", "output", "pretrained", "seeds", "memory", "wandb")


def yaml_schema() -> tuple[dict, dict]:
    """({section: {key: (attribute, cast, default)}}, {top-level key: (attribute, cast, default)})."""
    sections, top = {section: {} for section in YAML_SECTIONS}, {}
    for p in PARAMS:
        for key in p.yaml:
            entry = (p.target, yaml_cast(p), yaml_default(p))
            if "." in key:
                section, sub = key.split(".")
                sections[section][sub] = entry
            else:
                top[key] = entry
    return sections, top


def check_bounds(cfg, script: str, name) -> None:
    """Every bound of the table for the values this script has (None: not given, nothing to check)."""
    for p in PARAMS:
        if p.lo is None or (script not in p.scripts and not (script == CURRICULUM and p.yaml)):
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


def markdown() -> str:
    """docs/parameters.md: the table as a reader sees it (`python -m utils.config > docs/parameters.md`)."""
    def show(value):
        return "none" if value is None else ("off" if value is False else f"`{value}`" if value != "" else "''")

    def bounds(p):
        if p.lo is None:
            return ""
        if p.below is not None:
            return f"[{p.lo:g}, {p.below:g})"
        if p.hi is not None:
            return f"{p.lo:g} .. {'2^63-1' if p.hi == INT64_MAX else p.hi}"
        return f">= {p.lo:g}" + (", finite" if p.for_script("kind", SINGLE) == "float" else "")

    lines = ["# Parameters", "",
             "Generated from `utils/config.py` (`python -m utils.config > docs/parameters.md`); a test keeps them equal.",
             "Every value is checked at start-up, before any data or model is built; a value out of bounds stops the",
             "run with one line `error: ...` naming the flag or YAML key, and exit status 2. Integers must also fit",
             "int64, and sizes must fit the machine's memory (model and one micro-batch).", "",
             "| flag | single-modulus default | curriculum default | curriculum YAML key (default) | bounds | meaning |",
             "|---|---|---|---|---|---|"]
    for p in PARAMS:
        flag = f"`--{p.name}`" if p.scripts else "(YAML only)"
        single = show(p.for_script("default", SINGLE)) if SINGLE in p.scripts else "-"
        curriculum = show(p.for_script("default", CURRICULUM)) if CURRICULUM in p.scripts else "-"
        keys = ", ".join(f"`{k}`" for k in p.yaml)
        if p.yaml and p.yaml_default != "same":
            keys += f" ({show(p.yaml_default)})"
        choices = f" One of {', '.join(p.choices)}." if p.choices else ""
        lines.append(f"| {flag} | {single} | {curriculum} | {keys} | {bounds(p)} | {p.help}.{choices} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
