"""Curriculum configuration (the YAML and its flags) and the modulus sampler.

The YAML gives the run; a flag written on the command line overrides its YAML value; unknown keys are
errors; every value is cast to its type. Without --config the flags are the whole configuration.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import yaml

from .config import yaml_schema

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


# --------------------------------------------------------------------------------------------------
# Modulus sampler

class ModulusSampler:
    """Which modulus and which training sequence each slot of a global micro-batch gets.

    Micro-batch s at update u draws, for each of its batch_size x world_size slots, modulus i with
    probability w_i (the normalised weight at the last refresh, u rounded down to a multiple of
    `refresh_every`) and a uniform sequence of that modulus's training set, with replacement (as the
    original's weighted sampler). The draw is seeded by (main_seed, s): the same on resume and at any
    world size; rank r takes slots [r*B, (r+1)*B).
    """

    def __init__(self, sizes: list[int], weights_at, refresh_every: int, batch_size: int, main_seed: int,
                 rank: int = 0, world_size: int = 1):
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.weights_at, self.refresh_every = weights_at, int(refresh_every)
        self.batch_size, self.main_seed = int(batch_size), int(main_seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self._cached: tuple[int, np.ndarray] | None = None

    def weights(self, update: int) -> np.ndarray:
        refresh = update - update % self.refresh_every
        if self._cached is None or self._cached[0] != refresh:
            self._cached = (refresh, np.asarray(self.weights_at(refresh), dtype=np.float64))
        return self._cached[1]

    def draw(self, micro_step: int, update: int) -> tuple[np.ndarray, np.ndarray]:
        """(modulus index, sequence index) arrays of this rank's share of micro-batch `micro_step`."""
        rng = np.random.default_rng([self.main_seed, int(micro_step), 0xC0FFEE])
        n = self.batch_size * self.world_size
        which = rng.choice(len(self.sizes), size=n, p=self.weights(update))
        seq = rng.integers(0, self.sizes[which])
        share = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return which[share], seq[share]
