"""The configuration a run is given: the parameter table (every flag and YAML key of both scripts, once),
each script's typed configuration, its argument parser, and docs/parameters.md.

What the configuration implies (k, base, vocabulary, the data): utils/settings.py. The curriculum's YAML
file and its merge with flags: utils/curriculum_config.py. Bounds checked at start-up: utils/bounds.py.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from .int_list import INT64_MAX

EXIT_BAD_INPUT = 2


# --------------------------------------------------------------------------------------------------
# The parameter table: every flag and YAML key of both scripts, once. The argument parsers, the typed
# configurations' defaults, the curriculum's YAML schema, the bounds checked at start-up, --help and
# docs/parameters.md are made from it, so a default or a rule cannot differ between two places.

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
      "an int or a comma list (PCG types; LCG and TLCG have none, and values given with them alone are not "
      "used); '' with LCG or TLCG in --type means 0", yaml=("data.control_bits",), group="data"),
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


def configured(script: str) -> list[Param]:
    """The parameters a script's configuration holds: its flags, and for the curriculum its YAML-only keys."""
    return [p for p in PARAMS if script in p.scripts or (script == CURRICULUM and not p.scripts)]


_BY_NAME = {p.name: p for p in PARAMS}


def _default(script: str, name: str):
    """A field holding the table's default of `name` for `script` (the table stays the one home of defaults)."""
    return dataclass_field(default=_BY_NAME[name].for_script("default", script))


# --------------------------------------------------------------------------------------------------
# Typed configurations: one field per parameter of the script, its default from the table (a test keeps
# the fields and the table equal), and what the script's start-up derives (utils/settings.py). RunConfig
# holds what both scripts have with the same default; each script's class adds the rest.

def _shared(name):
    single, curriculum = _BY_NAME[name].for_script("default", SINGLE), _BY_NAME[name].for_script("default", CURRICULUM)
    assert single == curriculum, name
    return _default(SINGLE, name)


def _single(name):
    return _default(SINGLE, name)


def _curriculum(name):
    return _default(CURRICULUM, name)


@dataclass
class RunConfig:
    """What both scripts' configurations hold."""
    # data
    main_seed: int = _shared("main_seed")
    data_seed: int = _shared("data_seed")
    type: str = _shared("type")
    vocab_size: int | None = _shared("vocab_size")
    seq_len: int = _shared("seq_len")
    base: int | None = _shared("base")
    digits: int = _shared("digits")
    n_a: int = _shared("n_a")
    n_c: int = _shared("n_c")
    n_test_a: int = _shared("n_test_a")
    n_test_c: int = _shared("n_test_c")
    n_example: int = _shared("n_example")
    exclude_ac_paths: list[str] | None = _shared("exclude_ac_paths")
    # model
    no_rope: bool = _shared("no_rope")
    # schedule and optimisation
    lr_min: float = _shared("lr_min")
    grad_acc_steps: int = _shared("grad_acc_steps")
    beta1: float = _shared("beta1")
    beta2: float = _shared("beta2")
    # output
    save_correctness: bool = _shared("save_correctness")
    save_params: bool = _shared("save_params")
    save_checkpoints: bool = _shared("save_checkpoints")
    # Weights & Biases
    use_wandb: bool = _shared("use_wandb")
    wandb_project: str = _shared("wandb_project")
    wandb_entity: str | None = _shared("wandb_entity")
    wandb_name: str | None = _shared("wandb_name")
    wandb_tags: str | None = _shared("wandb_tags")
    wandb_notes: str | None = _shared("wandb_notes")
    wandb_offline: bool = _shared("wandb_offline")
    wandb_api_key: str | None = _shared("wandb_api_key")
    # runtime
    device: str = _shared("device")
    dtype: str = _shared("dtype")
    compile: str = _shared("compile")
    resume: str | None = _shared("resume")
    keep_checkpoints: int | None = _shared("keep_checkpoints")
    ignore_disk_check: bool = _shared("ignore_disk_check")
    # derived at start-up
    context_len: int | None = None  # seq_len * digits - 1: the model's input length
    world_size: int | None = None  # processes
    effective_batch: int | None = None  # batch_size x grad_acc_steps x world_size
    amp_dtype: object = None  # the autocast dtype, chosen at start-up from --dtype


@dataclass
class SingleModulusConfig(RunConfig):
    """prng_train_lowmem.py's configuration: RunConfig's fields and these."""
    m: int = _single("m")
    control_bits: str = _single("control_bits")
    bits_to_keep: int | None = _single("bits_to_keep")
    n_layer: int = _single("n_layer")
    n_head: int = _single("n_head")
    n_embd: int = _single("n_embd")
    num_steps: int = _single("num_steps")
    warm_steps: int = _single("warm_steps")
    lr_trgt: float = _single("lr_trgt")
    batch_size: int = _single("batch_size")
    weight_decay: float = _single("weight_decay")
    eval_interval: int = _single("eval_interval")
    results_dir: str = _single("results_dir")
    save_test_values: bool = _single("save_test_values")
    checkpoint_interval: int = _single("checkpoint_interval")
    num_workers: int = _single("num_workers")
    # derived at start-up (settings.setup_single)
    combos: list | None = None  # validated generator/control-bit combinations (utils.data.Combo)


@dataclass
class CurriculumConfig(RunConfig):
    """curriculum_lowmem.py's configuration (flags, or a YAML file with flags over it): RunConfig's fields
    and these."""
    config: str | None = _curriculum("config")
    moduli: list[int] | str = _curriculum("moduli")  # the flag's text until curriculum_config.load_config reads it
    control_bits: str = _curriculum("control_bits")
    bits_to_keep: list[int] | str | None = _curriculum("bits_to_keep")  # one per modulus once read
    n_layer: int = _curriculum("n_layer")
    n_head: int = _curriculum("n_head")
    n_embd: int = _curriculum("n_embd")
    pretrained_path: str | None = _curriculum("pretrained_path")
    pretrain_m: int | None = _curriculum("pretrain_m")
    custom_phases: list | str | None = _curriculum("custom_phases")  # JSON text; once read, the phases (original name)
    transition_type: str = _curriculum("transition_type")
    sampler_update_interval: int | None = _curriculum("sampler_update_interval")
    lr_trgt: float = _curriculum("lr_trgt")
    batch_size: int = _curriculum("batch_size")
    weight_decay: float = _curriculum("weight_decay")
    eval_interval: int = _curriculum("eval_interval")
    results_dir: str = _curriculum("results_dir")
    checkpoint_interval: int = _curriculum("checkpoint_interval")
    # YAML only: printed or kept, as the original
    experiment_name: str = _curriculum("experiment_name")
    description: str = _curriculum("description")
    cache_size: int = _curriculum("cache_size")
    # read (curriculum_config.load_config) and derived at start-up (settings.setup_curriculum)
    phases: list | None = None  # the phase dicts: YAML curriculum.phases or --custom_phases
    moduli_bits_to_keep: list | None = None  # bits_to_keep as given (the original's key name)
    _names: dict = dataclass_field(default_factory=dict)  # attribute -> the YAML key that set it (messages)
    _yaml_config: dict | None = None  # the YAML as read (kept in saved configs for the original's readers)
    phase_list: list | None = None  # validated utils.schedules.Phase objects
    num_steps: int | None = None  # the sum of the phases' steps
    combos_by_m: dict | None = None  # validated combinations per modulus


CONFIG_CLASSES = {SINGLE: SingleModulusConfig, CURRICULUM: CurriculumConfig}


def config_from(script: str, values: dict):
    """The script's configuration with the table's defaults and `values` for the parameters it names
    (other keys, such as a saved config's derived values, are left out)."""
    cfg = CONFIG_CLASSES[script]()
    for p in configured(script):
        if p.name in values:
            setattr(cfg, p.name, values[p.name])
    return cfg


class OneLineParser(argparse.ArgumentParser):
    """An argument parser for which a malformed flag is bad input like any other: one line, exit 2."""

    def error(self, message):
        fail(f"{message} (see --help)")


class ConfigParser(OneLineParser):
    """An argument parser whose result is the script's typed config, not a Namespace."""

    def __init__(self, script: str, **kwargs):
        super().__init__(**kwargs)
        self.config_class = CONFIG_CLASSES[script]

    def parse_args(self, args=None, namespace=None):
        return super().parse_args(args, self.config_class() if namespace is None else namespace)

    def convert_arg_line_to_args(self, line):
        """A line of an @file (with fromfile_prefix_chars='@'): a flag and its value, split as a shell
        splits them; blank lines and # comments give nothing."""
        try:
            return shlex.split(line, comments=True)
        except ValueError as err:  # an unclosed quote
            self.error(f"cannot read the @file line {line.strip()!r}: {err}")


def build_parser(script: str, description: str, **kwargs) -> ConfigParser:
    """The script's argument parser, from PARAMS (`kwargs`: argparse's, such as fromfile_prefix_chars)."""
    parser = ConfigParser(script, description=description, **kwargs)
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
    """Exit with one line naming the problem (bad input: flags, YAML, files) before any compute: the one
    way both scripts and analyze.py refuse bad input."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


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
