"""The curriculum's configuration from its YAML file and its flags: the YAML schema (from the parameter
table), the YAML reading and casting, and their merge (`load_config`).

The YAML gives the run; a flag written on the command line overrides its YAML value; unknown keys are
errors; every value is cast to its type. Without --config the flags are the whole configuration.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys

import yaml

from .config import CURRICULUM, PARAMS, CurriculumConfig, Param
from .int_list import parse_int_list

YAML_SECTIONS = ("model", "data", "curriculum", "training", "output", "pretrained", "seeds", "memory", "wandb")


def yaml_default(p: Param):
    return p.yaml_default if p.yaml_default != "same" else p.for_script("default", CURRICULUM)


def yaml_cast(p: Param) -> str:
    """How the curriculum YAML reads the key: int, float, bool, str, ints, strs, list, tags; '?' = may be null."""
    cast = {"int": "int", "float": "float", "flag": "bool", "str": "str", "paths": "strs", "intlist": "ints",
            "phases": "list"}[p.for_script("kind", CURRICULUM)]
    if p.name == "wandb_tags":
        cast = "tags"
    return cast + ("?" if yaml_default(p) is None and cast not in ("list", "tags") and not p.required else "")


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


# YAML (section, key) -> (config attribute, caster name, default), from the parameter table.
YAML_SCHEMA, TOP_LEVEL = yaml_schema()
MAX_YAML_NODES = 100_000  # values in a config once its aliases are expanded; a real one has a few hundred


class RefusedYAML(yaml.YAMLError):
    """Valid YAML that no configuration has: a repeated key, aliases that expand too far."""


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)
    and a document whose aliases expand past MAX_YAML_NODES values (an alias bomb: a few hundred bytes
    that expand to gigabytes wherever the config is walked, copied or saved)."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class names it
                break
            if repeated:
                raise RefusedYAML(f"the key {key!r} is given twice (line {key_node.start_mark.line + 1})")
        return super().construct_mapping(node, deep)


def _expanded_size(node, sizes: dict, open_nodes: set) -> int:
    """Values under `node` with every alias expanded (each shared node counted once per use)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise RefusedYAML(f"an alias refers to a node that contains it (line {node.start_mark.line + 1})")
    open_nodes.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_nodes)
        if total > MAX_YAML_NODES:
            raise RefusedYAML(f"its aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb?)")
    open_nodes.discard(id(node))
    sizes[id(node)] = total
    return total


def _cast(value, kind: str, where: str):
    """Cast a YAML value; PyYAML reads `1e-2` as a string, so numbers are parsed from strings too."""
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        if optional or kind == "tags":
            return None
        raise ValueError(f"{where} must not be empty")
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            number = float(value) if isinstance(value, str) else value
            if int(number) != number:
                raise ValueError
            return int(number)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1"):
                return True
            if str(value).lower() in ("false", "no", "0"):
                return False
            raise ValueError
        if kind == "str":
            return str(value)
        if kind in ("ints", "strs", "list", "tags"):
            if kind == "tags" and isinstance(value, str):
                return value
            if not isinstance(value, list):
                raise ValueError
            if kind == "ints":
                return [None if v is None else _cast(v, "int", f"{where} entry") for v in value]
            if kind == "strs":
                return [str(v) for v in value]
            if kind == "tags":
                return ",".join(str(v) for v in value)
            return value
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: cannot read {str(value)[:40]!r} as {kind}") from None
    raise AssertionError(kind)


def read_yaml(path: str) -> dict:
    """The YAML file as {attribute: value}, with the table's YAML defaults for absent keys."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.load(fh, Loader=ConfigLoader)
    except UnicodeDecodeError as err:
        raise ValueError(f"config {path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise ValueError(f"cannot read config {path}: {err.strerror}") from None
    except RefusedYAML as err:
        raise ValueError(f"config {path}: {err}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise ValueError(f"config {path} is nested too deeply to be a configuration") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ValueError(f"config {path}: the top level must be a mapping of sections")
    out = {attr: default for attr, _, default in TOP_LEVEL.values()}
    keys = {attr: key for key, (attr, _, _) in TOP_LEVEL.items()}
    for section in YAML_SCHEMA.values():
        out.update({attr: default for attr, _, default in section.values()})
    for key, value in raw.items():
        if key in TOP_LEVEL:
            attr, kind, _ = TOP_LEVEL[key]
            out[attr] = _cast(value, kind, key)
            continue
        if key not in YAML_SCHEMA:
            raise ValueError(f"config {path}: unknown key {key!r}; valid top-level keys: "
                             f"{', '.join(list(YAML_SCHEMA) + list(TOP_LEVEL))}")
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ValueError(f"config {path}: section {key!r} must be a mapping")
        for sub, sub_value in value.items():
            if sub not in YAML_SCHEMA[key]:
                raise ValueError(f"config {path}: unknown key {key}.{sub}; valid keys in {key}: "
                                 f"{', '.join(YAML_SCHEMA[key])}")
            attr, kind, _ = YAML_SCHEMA[key][sub]
            out[attr] = _cast(sub_value, kind, f"{key}.{sub}")
            keys[attr] = f"{key}.{sub}"
    if not out["moduli"]:
        raise ValueError(f"config {path}: curriculum.moduli is required (a list of moduli)")
    if any(m is None for m in out["moduli"]):
        raise ValueError(f"config {path}: curriculum.moduli has an empty entry")
    for section, entries in YAML_SCHEMA.items():  # absent keys are named as the YAML would name them
        for sub, (attr, _, _) in entries.items():
            keys.setdefault(attr, f"{section}.{sub}")
    out["_yaml_keys"] = keys
    out["_yaml_config"] = raw
    return out


def parse_custom_phases(text: str) -> list:
    try:
        phases = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--custom_phases is not valid JSON: {err}") from None
    if not isinstance(phases, list):
        raise ValueError("--custom_phases must be a JSON list of phase objects")
    return phases


def explicit_flags(parser: argparse.ArgumentParser, argv) -> set[str]:
    """Destinations of the flags written on the command line (their values override the YAML)."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                kwargs["action"] = "store_const"
                kwargs["const"] = True
            else:
                kwargs["nargs"] = action.nargs
            probe.add_argument(*action.option_strings, **kwargs)
    return set(vars(probe.parse_known_args(argv)[0]))


def load_config(parser: argparse.ArgumentParser, argv) -> CurriculumConfig:
    """YAML + explicit flags, or the flags alone (`parser`: the script's); derived values come later
    (utils/settings.py).

    With --config the YAML gives the run and a flag written on the command line overrides its value;
    without it the flags are the whole configuration (docs/curriculum.md)."""
    args = parser.parse_args(argv)
    if args.config:
        cfg = copy.copy(args)
        values = read_yaml(args.config)
        keys = values.pop("_yaml_keys")
        vars(cfg).update(values)
        given = explicit_flags(parser, argv if argv is not None else sys.argv[1:])
        for name in given - {"config"}:
            setattr(cfg, name, getattr(args, name))
        if "moduli" in given:
            cfg.moduli = sorted(parse_int_list(args.moduli, "--moduli"))
        if "bits_to_keep" in given:
            cfg.bits_to_keep = parse_int_list(args.bits_to_keep, "--bits_to_keep")
        if "custom_phases" in given:
            cfg.phases = parse_custom_phases(args.custom_phases)
        cfg._names = {attr: key for attr, key in keys.items() if attr not in given}
        if "custom_phases" in given:
            cfg._names.pop("phases", None)
    else:
        cfg = args
        cfg.moduli = sorted(parse_int_list(args.moduli, "--moduli"))  # the flag's list is sorted, as the original's
        cfg.bits_to_keep = parse_int_list(args.bits_to_keep, "--bits_to_keep") if args.bits_to_keep else None
        if not args.custom_phases:
            raise ValueError("without --config, --custom_phases (a JSON list of phases) is required")
        cfg.phases = parse_custom_phases(args.custom_phases)
    cfg._names.setdefault("phases", "--custom_phases")
    # The original's config carried these names; saved configs keep them beside ours for code that reads them.
    cfg.custom_phases = cfg.phases
    cfg.moduli_bits_to_keep = list(cfg.bits_to_keep) if cfg.bits_to_keep is not None else None
    return cfg
