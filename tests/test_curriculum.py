"""Curriculum training: configuration, modulus weights, per-phase LR, data, outputs, pretrained starts.

Configuration is checked through the script's own `load_config`/`setup_config` and the run's splits
(utils/settings.py `ac_splits`), which build nothing heavy. Runs are in-process
(`curriculum_lowmem.main([...])`) with tiny models; what a user sees when a config is bad (a process) is
in tests/test_inputs.py, with the other command-line bad input. The README YAML runs once with its own
5000-update phases (sizes shrunk on the command line) and is the loop-level LR check.
"""

import argparse
import glob
import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy.stats import chisquare

import curriculum_lowmem
import prng_train_lowmem
from utils import settings
from utils.curriculum import ModulusSampler
from utils.data import eval_shards
from utils.distributed import DistInfo
from utils.evaluation import evaluate
from utils.gpt2 import GPTConfig, build_model
from utils.params import split_ac
from tests import test_train_single
from utils.schedules import modulus_weights, parse_phases, phase_lr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_YAML = os.path.join(REPO, "configs", "curriculum.yaml")
applied_lrs = test_train_single.applied_lrs  # fixture: the LR of every optimizer step during a test
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--batch_size", "8",
        "--n_a", "4", "--n_c", "4", "--n_test_a", "2", "--n_test_c", "2"]
MOVE_PHASES = [  # 10 updates: a linear move with LR warmup, then a cosine move with cosine LR decay
    {"name": "move", "phase_steps": 6, "warmup_steps": 2, "transition_steps": 4, "transition": "linear",
     "lr_decay": "constant", "start_weights": [0.8, 0.2], "end_weights": [0.2, 0.8]},
    {"name": "decay", "phase_steps": 4, "warmup_steps": 0, "transition_steps": 2, "transition": "cosine",
     "lr_decay": "cosine", "start_weights": [0.2, 0.8], "end_weights": [0.0, 1.0]},
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread runs them about twice as fast as two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_yaml(**sections) -> dict:
    """A small two-modulus curriculum (LCG, m = 256 and 1024); `sections` replace or add YAML keys."""
    config = {
        "experiment_name": "tiny", "description": "tests",
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 32},
        "data": {"type": "LCG", "seq_len": 9, "n_a": 4, "n_c": 4, "n_test_a": 2, "n_test_c": 2},
        "curriculum": {"moduli": [256, 1024], "sampler_update_interval": 2, "phases": MOVE_PHASES},
        "training": {"batch_size": 8, "lr_trgt": 1e-3, "lr_min": 1e-5, "eval_interval": 2},
        "seeds": {"main_seed": 1, "data_seed": 1},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def write_yaml(path, config) -> str:
    """Write a config given as YAML text or as a dict; return the path."""
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    with open(path, "w") as fh:
        fh.write(text)
    return str(path)


def configure(argv):
    """The validated config the script would run with (no data or model built)."""
    cfg = curriculum_lowmem.load_config([str(a) for a in argv])
    return curriculum_lowmem.setup_config(cfg, 1, log=lambda *a, **k: None)


def run_main(*argv):
    return curriculum_lowmem.main([str(a) for a in argv])


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def only(pattern):
    found = glob.glob(str(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def reference_alpha(step, phases):
    """The original's modulus-weight lookup from the raw phase dicts, in plain Python, normalised."""
    start, chosen = 0, None
    for phase in phases:
        steps = phase.get("phase_steps", 0)
        if steps == -1 or (steps > 0 and step < start + steps):
            chosen = phase
            break
        if steps > 0:
            chosen, chosen_start = phase, start
            start += steps
    else:
        start = chosen_start  # past the end: the last phase continues
    end = [float(w) for w in chosen["end_weights"]]
    begin = [float(w) for w in chosen.get("start_weights", end)]
    into, span = step - start, chosen.get("transition_steps", 0)
    weights = end
    if span > 0 and into < span:
        p = into / span
        g = {"linear": p, "cosine": (1 - math.cos(math.pi * p)) / 2, "exp": 1 - math.exp(-3 * p),
             "step": 1.0 if p > 0.5 else 0.0}[chosen.get("transition", "linear")]
        weights = [b + g * (e - b) for b, e in zip(begin, end)]
    return [w / sum(weights) for w in weights]


def assert_one_line_error(capsys, code, *fragments):
    assert code not in (0, None)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --------------------------------------------------------------------------------------------------
# Configuration: YAML schema, flags, precedence (a flag written on the command line wins), casting, validation.

def test_readme_yaml_reads_as_the_original_read_it():
    cfg = configure(["--config", README_YAML])
    assert cfg.moduli == [65536, 262144] and cfg.bits_to_keep == [8, 9]
    assert (cfg.type, cfg.control_bits, cfg.base, cfg.vocab_size, cfg.seq_len) == ("XSLRR", "3", 1024, 1024, 513)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.no_rope) == (4, 8, 1024, False)
    assert (cfg.n_a, cfg.n_c, cfg.n_test_a, cfg.n_test_c, cfg.n_example) == (1024, 1024, 128, 64, 1)
    assert cfg.num_steps == 5000 and cfg.sampler_update_interval == 100 and cfg.eval_interval == 200
    assert (cfg.lr_trgt, cfg.lr_min, cfg.weight_decay, cfg.beta1, cfg.beta2) == (5e-4, 1e-7, 0.1, 0.9, 0.999)
    # save_checkpoints / checkpoint_interval sit under output: in the README; they are honoured.
    assert cfg.save_checkpoints is True and cfg.checkpoint_interval == 1000
    assert cfg.save_params is True and cfg.save_correctness is True
    assert (cfg.results_dir, cfg.main_seed, cfg.data_seed) == ("results/FT", 1, 2)  # where the original README wrote
    assert cfg.pretrained_path is None and cfg.pretrain_m is None
    assert cfg.use_wandb is False and cfg.wandb_project == "prng_curriculum"
    # The original names the README YAML's run on one GPU exactly so.
    assert curriculum_lowmem.base_name(cfg) == (
        "XSLRR_premNone_moduli65536_262144_transexp_cp1s4000u500t4000dconsta0.001,0.999-0.0,1.0"
        "_p2s1000u0t0dcosa0.0,1.0-0.0,1.0_n1024_h8_d4_na1024_nc1024_ne1_vs1024_sl513_cb3_T5000_B256"
        "_lr0.0005_wd0.1_dI2_I1")


EVERY_KEY_YAML = """
experiment_name: every key
description: every YAML key
model: {n_layer: 3, n_head: 4, n_embd: 64, no_rope: true}
data: {type: TLCG, control_bits: 0, vocab_size: 2048, seq_len: 17, n_a: 5, n_c: 6, n_test_a: 3,
       n_test_c: 2, n_example: 2, base: 2048, digits: 1}
curriculum:
  moduli: [1024, 256]
  bits_to_keep: [8, 6]
  transition_type: cosine
  sampler_update_interval: 7
  phases: [{name: only, phase_steps: 1e1, end_weights: [1, 1e-1]}]
training: {lr_trgt: 1e-3, lr_min: 1e-6, batch_size: 16, grad_acc_steps: 2, weight_decay: 1e-2,
           beta1: 8e-1, beta2: 99e-2, eval_interval: 5, save_checkpoints: true, checkpoint_interval: 1e3}
output: {save_correctness: true, save_params: true, results_dir: somewhere}
pretrained: {pretrained_path: p.pth, pretrain_m: 256}
seeds: {main_seed: 3, data_seed: 4}
memory: {cache_size: 10}
wandb: {use_wandb: true, project: proj, entity: ent, name: nm, tags: [a, b], notes: nts, offline: true,
        api_key: key}
exclude_ac_paths: [x.npz, y.pt]
"""


def test_every_yaml_key_is_read_and_every_number_cast(tmp_path):
    # PyYAML reads 1e-2 (no dot) as a string: every numeric key must still arrive as a number.
    cfg = curriculum_lowmem.load_config(["--config", write_yaml(tmp_path / "c.yaml", EVERY_KEY_YAML)])
    expected = {
        "experiment_name": "every key", "description": "every YAML key", "n_layer": 3, "n_head": 4, "n_embd": 64,
        "no_rope": True, "type": "TLCG", "control_bits": "0", "vocab_size": 2048, "seq_len": 17, "n_a": 5,
        "n_c": 6, "n_test_a": 3, "n_test_c": 2, "n_example": 2, "base": 2048, "digits": 1,
        "moduli": [1024, 256], "bits_to_keep": [8, 6], "transition_type": "cosine", "sampler_update_interval": 7,
        "lr_trgt": 1e-3, "lr_min": 1e-6, "batch_size": 16, "grad_acc_steps": 2, "weight_decay": 1e-2,
        "beta1": 0.8, "beta2": 0.99, "eval_interval": 5, "save_checkpoints": True, "checkpoint_interval": 1000,
        "save_correctness": True, "save_params": True, "results_dir": "somewhere", "pretrained_path": "p.pth",
        "pretrain_m": 256, "main_seed": 3, "data_seed": 4, "cache_size": 10, "use_wandb": True,
        "wandb_project": "proj", "wandb_entity": "ent", "wandb_name": "nm", "wandb_tags": "a,b",
        "wandb_notes": "nts", "wandb_offline": True, "wandb_api_key": "key", "exclude_ac_paths": ["x.npz", "y.pt"]}
    for key, value in expected.items():
        got = getattr(cfg, key)
        assert got == value and type(got) is type(value), (key, got, value)
    cfg.use_wandb = False  # the package is not needed for the rest of the validation
    cfg = curriculum_lowmem.setup_config(cfg, 1, log=lambda *a, **k: None)
    assert cfg.moduli == [1024, 256]  # YAML order kept, as the original, unlike the --moduli flag
    assert cfg.phase_list[0].phase_steps == 10 and cfg.phase_list[0].end_weights == (1.0, 0.1)


@pytest.mark.parametrize("section", ["output", "training"])
def test_checkpoint_keys_are_read_under_output_and_under_training(tmp_path, section):
    path = write_yaml(tmp_path / "c.yaml", tiny_yaml(**{section: {"save_checkpoints": True, "checkpoint_interval": 3}}))
    cfg = configure(["--config", path])
    assert cfg.save_checkpoints is True and cfg.checkpoint_interval == 3


ORIGINAL_FLAG_DEFAULTS = {  # the original's curriculum flags and their defaults
    "config": None, "type": "LCG", "moduli": "256,1024,4096", "control_bits": "0", "vocab_size": None,
    "seq_len": 513, "n_a": 32, "n_c": 32, "n_test_a": 16, "n_test_c": 16, "n_example": 1, "base": None,
    "digits": 1, "n_layer": 2, "n_head": 2, "n_embd": 128, "transition_type": "linear",
    "sampler_update_interval": None, "custom_phases": None, "main_seed": 1, "data_seed": 1, "lr_trgt": 1e-4,
    "lr_min": 1e-7, "batch_size": 64, "grad_acc_steps": 1, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.999,
    "eval_interval": 100, "results_dir": "results/multi_curriculum_lazy", "save_checkpoints": False,
    "checkpoint_interval": 1000, "save_params": False, "no_rope": False, "pretrained_path": None,
    "exclude_ac_paths": None, "use_wandb": False, "wandb_project": "prng_scaling", "wandb_entity": None,
    "wandb_name": None, "wandb_tags": None, "wandb_notes": None, "wandb_offline": False, "wandb_api_key": None}


def test_every_flag_of_the_original_curriculum_exists_with_its_default():
    parser = curriculum_lowmem.build_parser()
    defaults = vars(parser.parse_args([]))
    for name, value in ORIGINAL_FLAG_DEFAULTS.items():
        assert defaults[name] == value, (name, defaults[name], value)
    choices = next(a.choices for a in parser._actions if a.dest == "transition_type")
    assert sorted(choices) == ["cosine", "exp", "linear", "step"]


def test_flags_written_on_the_command_line_override_the_yaml_and_no_others(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", tiny_yaml(
        training={"lr_trgt": 5e-4, "batch_size": 8},
        output={"results_dir": "from_yaml", "save_params": False},
        pretrained={"pretrained_path": "yaml.pth"},
        exclude_ac_paths=["from_yaml.npz"]))
    cfg = curriculum_lowmem.load_config(["--config", path])
    # Not written: the YAML's values stand although the flags' defaults differ (1e-4, multi_curriculum_lazy, 64).
    assert (cfg.lr_trgt, cfg.results_dir, cfg.batch_size, cfg.n_embd) == (5e-4, "from_yaml", 8, 32)
    assert cfg.moduli == [256, 1024] and cfg.exclude_ac_paths == ["from_yaml.npz"] and cfg.save_params is False

    cfg = curriculum_lowmem.load_config([
        "--config", path, "--lr_trgt", "2e-3", "--n_embd=64", "--save_params", "--results_dir", "from_flag",
        "--moduli", "1024,2**8", "--pretrained_path", "flag.pth", "--exclude_ac_paths",
        "--custom_phases", '[{"phase_steps": 3, "end_weights": [1, 2]}]'])
    assert (cfg.lr_trgt, cfg.n_embd, cfg.save_params, cfg.results_dir) == (2e-3, 64, True, "from_flag")
    assert cfg.moduli == [256, 1024]  # the flag's list is sorted, as the original
    assert cfg.pretrained_path == "flag.pth"
    assert cfg.exclude_ac_paths == []  # `--exclude_ac_paths` with no value means "no exclusions"
    assert cfg.phases == [{"phase_steps": 3, "end_weights": [1, 2]}]
    assert (cfg.batch_size, cfg.lr_min, cfg.seq_len) == (8, 1e-5, 9)  # still the YAML's


def test_no_yaml_mode_takes_the_flags_and_sorts_the_moduli():
    cfg = configure(["--moduli", "1024,256,4**3", "--custom_phases", '[{"phase_steps": 5, "end_weights": [1, 1, 2]}]',
                     *TINY])
    assert cfg.moduli == [64, 256, 1024] and cfg.num_steps == 5 and cfg.base == cfg.vocab_size == 1024
    assert cfg.bits_to_keep == [6, 8, 10] and cfg.sampler_update_interval == cfg.eval_interval == 100
    assert curriculum_lowmem.base_name(cfg).startswith("LCG_moduli64_256_1024_translinear_n32_")  # no prem segment


def bad(section, **values):
    return {section: values}


MALFORMED = {
    # name: (YAML sections that replace the tiny config's, extra flags, words the message must contain)
    "weights_wrong_length": (bad("curriculum", phases=[{"phase_steps": 4, "end_weights": [1]}]), [], ["end_weights", "2"]),
    "negative_weight": (bad("curriculum", phases=[{"phase_steps": 4, "end_weights": [-1, 2]}]), [], [">= 0"]),
    "all_zero_weights": (bad("curriculum", phases=[{"phase_steps": 4, "end_weights": [0, 0]}]), [], ["all zero"]),
    "no_phase_with_steps": (bad("curriculum", phases=[{"phase_steps": 0}]), [], ["phase_steps > 0"]),
    "no_phases": (bad("curriculum", phases=[]), [], ["phase_steps > 0"]),
    "rest_phase_not_last": (bad("curriculum", phases=[{"phase_steps": -1, "end_weights": [1, 1]},
                                                      {"phase_steps": 2, "end_weights": [1, 1]}]), [], ["-1"]),
    "unknown_transition": (bad("curriculum", phases=[{"phase_steps": 4, "transition": "sigmoid",
                                                      "end_weights": [1, 1]}]), [], ["sigmoid", "linear"]),
    "unknown_lr_decay": (bad("curriculum", phases=[{"phase_steps": 4, "lr_decay": "linear",
                                                    "end_weights": [1, 1]}]), [], ["lr_decay", "cosine"]),
    "unknown_phase_key": (bad("curriculum", phases=[{"phase_steps": 4, "end_weight": [1, 1]}]), [],
                          ["end_weight", "start_weights"]),
    "unknown_section": ({"optimizer": {"lr": 1}}, [], ["optimizer", "training", "curriculum"]),
    "unknown_key_in_section": (bad("training", learning_rate=1e-3), [], ["training.learning_rate", "lr_trgt"]),
    "bits_to_keep_too_long": (bad("curriculum", bits_to_keep=[8, 10, 12]), [], ["bits_to_keep", "3", "2"]),
    "xslrr_cb3_at_m16": ({"data": {"type": "XSLRR", "control_bits": 3, "seq_len": 9, "n_a": 1, "n_c": 1,
                                   "n_test_a": 1, "n_test_c": 1}, "curriculum": {"moduli": [16, 256]}},
                         [], ["XSLRR", "cb=3", "m=16"]),
    "too_few_multipliers": (bad("curriculum", moduli=[16, 256]), [], ["m=16", "multipliers"]),
    "vocab_too_small_for_largest_modulus": (bad("data", vocab_size=512), [], ["vocab_size=512", "m=1024"]),
    "repeated_modulus": (bad("curriculum", moduli=[256, 256]), [], ["repeat"]),
    "moduli_missing": (bad("curriculum", moduli=None), [], ["moduli"]),
    "weight_decay_negative": (bad("training", weight_decay="-1e-2"), [], ["weight_decay"]),
    "beta_out_of_range": (bad("training", beta1=1.5), [], ["beta1"]),
    "lr_not_a_number": (bad("training", lr_trgt="fast"), [], ["lr_trgt", "fast"]),
    "batch_size_not_an_integer": (bad("training", batch_size=2.5), [], ["batch_size"]),
    "missing_exclusion_file": ({"exclude_ac_paths": ["MISSING.npz"]}, [], ["MISSING.npz"]),
    "resume_file_missing": ({}, ["--resume", "MISSING.pt"], ["MISSING.pt"]),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_config_fails_in_one_line_before_any_data_or_model(tmp_path, capsys, monkeypatch, name):
    sections, flags, words = MALFORMED[name]
    config = tiny_yaml(**sections)

    def built(*a, **k):
        raise AssertionError("data or a model was built for a bad config")
    monkeypatch.setattr(settings, "PRNGDataset", built)
    monkeypatch.setattr(curriculum_lowmem, "build_model", built)
    text = yaml.safe_dump(config).replace("MISSING", str(tmp_path / "MISSING"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        run_main("--config", write_yaml(tmp_path / "bad.yaml", text), "--results_dir", out,
                 *[f.replace("MISSING", str(tmp_path / "MISSING")) for f in flags])
    assert_one_line_error(capsys, stop.value.code, *words)
    assert not out.exists()


def test_unreadable_config_files_fail_in_one_line(tmp_path, capsys):
    for text, words in [("model: [1, 2\n", ["not valid YAML"]), ("- a\n- b\n", ["mapping"]),
                        (None, ["cannot read config"])]:
        path = tmp_path / "c.yaml"
        if text is None:
            path = tmp_path / "absent.yaml"
        else:
            write_yaml(path, text)
        with pytest.raises(SystemExit) as stop:
            run_main("--config", path, "--results_dir", tmp_path / "out")
        assert_one_line_error(capsys, stop.value.code, *words)


def alias_bomb(depth: int, width: int = 9) -> str:
    """A list of `depth` levels, each `width` aliases of the one before: width^depth strings in a few
    hundred bytes."""
    levels = [f"&l0 [{', '.join(['x'] * width)}]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
    return "[" + ", ".join(levels) + "]"


@pytest.mark.parametrize("name", ["repeated_key", "repeated_section", "alias_bomb", "recursive_alias", "too_deep"])
def test_yaml_that_no_config_has_fails_in_one_line_before_any_data_or_model(tmp_path, capsys, monkeypatch, name):
    base = tiny_yaml()
    del base["description"], base["training"]  # written below
    config = yaml.safe_dump(base) + "training: {batch_size: 8, eval_interval: 2}\n"
    text, words = {
        "repeated_key": (config.replace("batch_size: 8", "lr_trgt: 1e-3, batch_size: 8, lr_trgt: 2e-3"),
                         ["lr_trgt", "twice"]),  # PyYAML alone trains with the last
        "repeated_section": (config + "model: {n_layer: 3}\n", ["'model'", "twice"]),
        "alias_bomb": (config + f"description: {alias_bomb(6)}\n", ["aliases", "100,000"]),
        "recursive_alias": (config + "description: &d [1, *d]\n", ["alias"]),
        "too_deep": (config + "description: " + "[" * 5000 + "]" * 5000 + "\n", ["nested too deeply"]),
    }[name]

    def built(*a, **k):
        raise AssertionError("data or a model was built for a bad config")
    monkeypatch.setattr(settings, "PRNGDataset", built)
    monkeypatch.setattr(curriculum_lowmem, "build_model", built)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        run_main("--config", write_yaml(tmp_path / "c.yaml", text), "--results_dir", out)
    assert_one_line_error(capsys, stop.value.code, *words)
    assert not out.exists()


def test_no_yaml_mode_needs_custom_phases(capsys):
    with pytest.raises(SystemExit) as stop:
        run_main("--moduli", "256,1024", *TINY)
    assert_one_line_error(capsys, stop.value.code, "--custom_phases")


# What a user sees (exit status and stderr of the process): tests/test_inputs.py,
# test_bad_input_from_the_command_line.


# --------------------------------------------------------------------------------------------------
# Modulus weights drive the batches.

with open(README_YAML) as _fh:
    README_PHASES = yaml.safe_load(_fh)["curriculum"]["phases"]


@pytest.mark.parametrize("step", [0, 1, 99, 250, 1000, 1999, 3999, 4000, 4500, 4999, 5000])
def test_readme_alpha_against_the_formulas(step):
    phases = parse_phases(README_PHASES, 2)
    got = modulus_weights(step, phases)
    if step < 4000:  # exp transition over the whole first phase: w = s + (1 - e^(-3p)) (e - s)
        g = 1 - math.exp(-3 * step / 4000)
        expected = [0.001 + g * (0.0 - 0.001), 0.999 + g * (1.0 - 0.999)]
        expected = [w / sum(expected) for w in expected]
    else:
        expected = [0.0, 1.0]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got, reference_alpha(step, README_PHASES), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.1, 0.3, 0.6], [0.001, 0.999], [0.25, 0.0, 0.75], [0.0, 1.0]])
def test_modulus_frequencies_follow_the_weights(weights):
    # 300 micro-batches of 64: the count of each modulus against N*w_i, chi-square with a fixed seed.
    w = np.asarray(weights)
    sizes = [5, 7, 11][:len(w)]
    sampler = ModulusSampler(sizes, lambda step: w, refresh_every=3, batch_size=64, main_seed=7)
    draws = [sampler.draw(s, s // 2) for s in range(300)]
    which = np.concatenate([d[0] for d in draws])
    seq = np.concatenate([d[1] for d in draws])
    counts = np.bincount(which, minlength=len(w))
    assert (counts[w == 0] == 0).all()  # a zero weight is never drawn
    nonzero = w > 0
    if nonzero.sum() > 1:
        assert chisquare(counts[nonzero], len(which) * w[nonzero]).pvalue > 1e-4, counts
    for i, size in enumerate(sizes):  # sequences of a modulus are uniform over its training set
        mine = seq[which == i]
        assert ((0 <= mine) & (mine < size)).all()
        if len(mine) > 50 * size:
            assert chisquare(np.bincount(mine, minlength=size)).pvalue > 1e-4


def test_sampler_uses_the_weights_of_the_last_refresh():
    # weights_at(step) puts all mass on modulus step % 3, so each draw tells which step's weights it used.
    asked = []

    def weights_at(step):
        asked.append(step)
        return np.eye(3)[step % 3]

    sampler = ModulusSampler([4, 4, 4], weights_at, refresh_every=5, batch_size=16, main_seed=1)
    for update in range(23):
        for micro in range(2):  # two micro-batches per update: both use the update's weights
            which, _ = sampler.draw(2 * update + micro, update)
            assert set(which.tolist()) == {(update - update % 5) % 3}, update
    assert sorted(set(asked)) == [0, 5, 10, 15, 20]  # computed only at refresh points, once each
    assert len(asked) == 5


def test_sampler_draw_is_the_same_after_a_resume_and_at_any_world_size():
    w = lambda step: np.array([0.2, 0.3, 0.5])
    one = ModulusSampler([10, 20, 30], w, 4, batch_size=16, main_seed=5)
    ranks = [ModulusSampler([10, 20, 30], w, 4, batch_size=8, main_seed=5, rank=r, world_size=2) for r in (0, 1)]
    for micro_step in range(12):
        whole = one.draw(micro_step, micro_step)
        shares = [r.draw(micro_step, micro_step) for r in ranks]
        for k in (0, 1):
            np.testing.assert_array_equal(whole[k], np.concatenate([s[k] for s in shares]))
    resumed = ModulusSampler([10, 20, 30], w, 4, batch_size=16, main_seed=5)  # a fresh object, as after a resume
    for micro_step in (11, 3, 7):
        for k in (0, 1):
            np.testing.assert_array_equal(resumed.draw(micro_step, micro_step)[k], one.draw(micro_step, micro_step)[k])
    other_seed = ModulusSampler([10, 20, 30], w, 4, batch_size=16, main_seed=6)
    assert not np.array_equal(other_seed.draw(0, 0)[0], one.draw(0, 0)[0])


def test_no_yaml_run_end_to_end_batches_follow_the_refreshed_weights(tmp_path, monkeypatch, capsys):
    # --moduli 1024,256 is sorted to [256, 1024]; weights one-hot on 256 for updates 0-4, on 1024 for 5-9.
    # The sampler refreshes every 4 updates, so updates 5-7 still use the weights of update 4 (all m=256).
    seen = []
    original = curriculum_lowmem.CurriculumTask.micro_batch

    def spy(self, micro_step, update):
        x, y = original(self, micro_step, update)
        which, seq = self.sampler.draw(micro_step, update)
        for i, m in enumerate(self.moduli):  # each row really is a sequence of the drawn modulus
            rows = np.flatnonzero(which == i)
            if len(rows):
                xm, ym = self.train_sets[m].batch(seq[rows])
                assert torch.equal(x[rows], xm) and torch.equal(y[rows], ym)
        seen.append((micro_step, update, set(which.tolist())))
        return x, y

    monkeypatch.setattr(curriculum_lowmem.CurriculumTask, "micro_batch", spy)
    phases = '[{"phase_steps": 5, "end_weights": [1, 0]}, {"phase_steps": 5, "end_weights": [0, 1]}]'
    assert run_main("--moduli", "1024,256", "--custom_phases", phases, "--sampler_update_interval", "4",
                    "--grad_acc_steps", "2", "--eval_interval", "5", "--lr_trgt", "1e-3", *TINY,
                    "--save_params", "--save_correctness", "--results_dir", tmp_path) == 0
    assert [(s, u) for s, u, _ in seen] == [(s, s // 2) for s in range(20)]
    assert [sorted(w) for _, u, w in seen] == [[0] if u < 8 else [1] for _, u, _ in seen]

    base = "LCG_moduli256_1024_translinear_n32_h2_d1_na4_nc4_ne1_vs1024_sl9_T10_B16_lr0.001_wd0.1_dI1_I1"
    assert sorted(os.listdir(tmp_path)) == sorted([
        f"{base}.csv", f"correctness_{base}.npz", f"accuracy_by_position_{base}.png", f"schedule_{base}.png",
        f"multi_curriculum_model_lazy_{base}.pt", "training_ac_values_moduli256_1024_na4_nc4_nta2_ntc2_ne1_vs1024_sl9_dI1_I1.pt",
        f"positions_{base}.npz", f"run_{base}.json", f".run_{base}.lock"])
    table = pd.read_csv(tmp_path / f"{base}.csv")
    assert table["step"].tolist() == [0, 5, 10]
    assert table[["alpha_m256", "alpha_m1024"]].to_numpy().tolist() == [[1, 0], [0, 1], [0, 1]]
    model = load(tmp_path / f"multi_curriculum_model_lazy_{base}.pt")
    assert model["config"]["moduli"] == [256, 1024] and model["final_step"] == 10
    assert "pretrain_m" in model["config"] and model["config"]["pretrain_m"] is None


# --------------------------------------------------------------------------------------------------
# Per-phase LR (the original's per-phase schedulers).

def test_readme_lr_at_every_boundary():
    cfg = configure(["--config", README_YAML])
    lr, lr_min = 5e-4, 1e-7
    at = lambda u: phase_lr(u, cfg.phase_list, lr_trgt=cfg.lr_trgt, lr_min=cfg.lr_min, num_steps=cfg.num_steps)
    expected = {
        0: lr * 1e-4,  # phase 1 warmup starts at 1e-4 lr_trgt
        250: lr * (1e-4 + (1 - 1e-4) * 250 / 500),
        499: lr * (1e-4 + (1 - 1e-4) * 499 / 500),  # last warmup update
        500: lr,  # warmup ends: constant lr_trgt
        3999: lr,  # last update of phase 1
        4000: lr,  # phase 2 restarts at lr_trgt and decays by a cosine over its 1000 updates
        4500: lr_min + (lr - lr_min) * (1 + math.cos(math.pi * 500 / 1000)) / 2,
        4999: lr_min + (lr - lr_min) * (1 + math.cos(math.pi * 999 / 1000)) / 2,  # the last update
    }
    for u, value in expected.items():
        print(f"README LR at update {u}: {at(u):.6e} (expected {value:.6e})")
        assert at(u) == pytest.approx(value, rel=1e-12), u


LR_EDGE_CASES = {
    # a last phase that is all warmup: it rises from 1e-4 lr and never reaches lr
    "all_warmup_last_phase": ('[{"phase_steps": 4, "lr_decay": "cosine", "end_weights": [1, 1]},'
                              ' {"phase_steps": 3, "warmup_steps": 3, "end_weights": [1, 1]}]',
                              lambda lr, lr_min: [lr_min + (lr - lr_min) * (1 + math.cos(math.pi * j / 4)) / 2
                                                  for j in range(4)] + [lr * (1e-4 + (1 - 1e-4) * j / 3) for j in range(3)]),
    # a -1 "rest" phase after a warmup phase: the counted phases give the updates
    "rest_phase_after_warmup": ('[{"phase_steps": 5, "warmup_steps": 2, "end_weights": [1, 1]},'
                                ' {"phase_steps": -1, "lr_decay": "cosine", "end_weights": [0, 1]}]',
                                lambda lr, lr_min: [lr * 1e-4, lr * (1e-4 + (1 - 1e-4) / 2), lr, lr, lr]),
}


@pytest.mark.parametrize("name", list(LR_EDGE_CASES))
def test_lr_edge_cases_applied_by_the_training_loop(tmp_path, applied_lrs, name):
    phases, expected = LR_EDGE_CASES[name]
    lr, lr_min = 1e-3, 1e-5
    assert run_main("--moduli", "256,1024", "--custom_phases", phases, "--lr_trgt", lr, "--lr_min", lr_min,
                    "--eval_interval", "4", *TINY, "--results_dir", tmp_path) == 0
    want = expected(lr, lr_min)
    print(name, "applied LRs:", applied_lrs)
    assert applied_lrs == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Per-modulus data: seeds (data_seed + 1000 i), bits_to_keep.

def test_each_modulus_has_its_own_seeded_split_and_bits(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", tiny_yaml(data={"type": "TLCG", "n_a": 6, "n_c": 5},
                                                     curriculum={"moduli": [1024, 256], "bits_to_keep": [6, 4]},
                                                     seeds={"data_seed": 7}))
    cfg = configure(["--config", path])
    splits = settings.ac_splits(cfg)
    train_sets, test_sets = settings.datasets(cfg, splits)
    assert cfg.base == cfg.vocab_size == 64  # no base given: 2^bits of the widest output (docs/differences.md)
    for i, (m, k) in enumerate([(1024, 6), (256, 4)]):  # YAML order: index i seeds data_seed + 1000 i
        want = split_ac(m, 6, 5, 2, 2, np.random.default_rng(7 + 1000 * i))
        for key in ("train_a", "train_c", "test_a", "test_c"):
            np.testing.assert_array_equal(getattr(splits[m], key), getattr(want, key))
        assert not set(splits[m].train_a) & set(splits[m].test_a)
        assert not set(splits[m].train_c) & set(splits[m].test_c)
        numbers = train_sets[m].numbers(np.arange(len(train_sets[m])))
        assert numbers.max() < 2**k and len(np.unique(numbers)) > 2 ** (k - 1)  # k bits kept, and used
        assert test_sets[m].numbers(np.arange(len(test_sets[m]))).max() < 2**k
        assert len(train_sets[m]) == 6 * 5 and len(test_sets[m]) == 2 * 2
        assert set(train_sets[m].a_values) == set(splits[m].train_a)


# --------------------------------------------------------------------------------------------------
# Outputs of a run (the original's names and columns) and resume, with YAML numbers that PyYAML reads as strings (1e-2).

FILES_YAML_EXTRA = """
training:
  batch_size: 8
  lr_trgt: 1e-3
  lr_min: 1e-5
  weight_decay: 1e-2
  beta1: 9e-1
  beta2: 999e-3
  eval_interval: 2
  save_checkpoints: true
  checkpoint_interval: 4e0
output:
  save_params: true
  save_correctness: true
  results_dir: RESULTS
"""
FILES_BASE = ("LCG_premNone_moduli256_1024_translinear_cp1s6u2t4dconsta0.8,0.2-0.2,0.8_p2s4u0t2dcosa0.2,0.8-0.0,1.0"
              "_n32_h2_d1_na4_nc4_ne1_vs1024_sl9_T10_B8_lr0.001_wd0.01_dI1_I1")
ACV_NAME = "training_ac_values_moduli256_1024_na4_nc4_nta2_ntc2_ne1_vs1024_sl9_dI1_I1.pt"


def files_yaml(folder, results_dir) -> str:
    config = tiny_yaml()
    del config["training"]
    text = yaml.safe_dump(config, sort_keys=False) + FILES_YAML_EXTRA.replace("RESULTS", str(results_dir))
    return write_yaml(folder / "files.yaml", text)


@pytest.fixture(scope="module")
def files_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    out = folder / "results"
    path = files_yaml(folder, out)
    assert run_main("--config", path) == 0
    return out, path


def test_output_file_names(files_run):
    out, _ = files_run
    assert sorted(os.listdir(out)) == sorted([
        f"{FILES_BASE}.csv", f"correctness_{FILES_BASE}.npz", f"accuracy_by_position_{FILES_BASE}.png",
        f"schedule_{FILES_BASE}.png", f"multi_curriculum_model_lazy_{FILES_BASE}.pt", ACV_NAME,
        f"positions_{FILES_BASE}.npz", f"run_{FILES_BASE}.json", f".run_{FILES_BASE}.lock",
        *(f"multi_curriculum_checkpoint_{FILES_BASE}_step{s}.pt" for s in (0, 4, 8, 10))])


def test_csv_columns_rows_alpha_and_lr(files_run):
    out, path = files_run
    with open(out / f"{FILES_BASE}.csv") as fh:
        header = fh.readline().strip().split(",")
    assert header == ["step", "lr", "train_loss", "train_acc", "train_last_acc", "grad_norm", "alpha_m256",
                      "alpha_m1024", "test_loss_m256", "test_acc_m256", "test_last_acc_m256", "test_loss_m1024",
                      "test_acc_m1024", "test_last_acc_m1024"]
    table = pd.read_csv(out / f"{FILES_BASE}.csv")
    assert table["step"].tolist() == [0, 2, 4, 6, 8, 10]
    assert table.loc[0, ["train_loss", "train_acc", "train_last_acc", "grad_norm"]].isna().all()
    assert np.isfinite(table.iloc[1:].to_numpy()).all()
    # alpha_m<m> at each evaluated step, from the formulas: linear 0.8/0.2 -> 0.2/0.8 over 4 updates,
    # then cosine 0.2/0.8 -> 0/1 over 2 updates.
    hand = {0: [0.8, 0.2], 2: [0.5, 0.5], 4: [0.2, 0.8], 6: [0.2, 0.8], 8: [0.0, 1.0], 10: [0.0, 1.0]}
    for _, row in table.iterrows():
        step = int(row["step"])
        got = [row["alpha_m256"], row["alpha_m1024"]]
        np.testing.assert_allclose(got, hand[step], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got, reference_alpha(step, MOVE_PHASES), rtol=1e-12, atol=1e-15)
    # The lr column is the LR of the next update; after the final one, what the original's scheduler holds
    # then: lr_min, where phase 2's cosine ends.
    phases = parse_phases(MOVE_PHASES, 2)
    for _, row in table.iterrows():
        u = int(row["step"])
        assert row["lr"] == pytest.approx(phase_lr(u, phases, lr_trgt=1e-3, lr_min=1e-5, num_steps=10), rel=1e-12)
    assert table["lr"].iloc[-1] == 1e-5


def test_per_modulus_test_metrics_are_exact(files_run):
    out, path = files_run
    cfg = configure(["--config", path])
    _, test_sets = settings.datasets(cfg, settings.ac_splits(cfg))
    model = build_model(GPTConfig(block_size=8, vocab_size=1024, n_layer=1, n_head=2, n_embd=32), False)
    model.load_state_dict(load(out / f"multi_curriculum_model_lazy_{FILES_BASE}.pt")["model_state_dict"])
    last = pd.read_csv(out / f"{FILES_BASE}.csv").iloc[-1]
    for m in (256, 1024):
        ds = test_sets[m]
        result = evaluate(model, ds, list(eval_shards(len(ds), 8)), info=DistInfo(), dtype=torch.float32, digits=1)
        for key in ("loss", "acc", "last_acc"):
            assert last[f"test_{key}_m{m}"] == pytest.approx(result[key], rel=1e-6, abs=1e-12), (m, key)


def test_model_file_and_checkpoints_load_with_weights_only(files_run):
    out, _ = files_run
    saved = load(out / f"multi_curriculum_model_lazy_{FILES_BASE}.pt")
    assert set(saved) == {"model_state_dict", "config", "final_step", "lowmem"}
    assert saved["final_step"] == 10 and saved["lowmem"] is True and type(saved["config"]) is dict
    config = saved["config"]
    assert (config["moduli"], config["weight_decay"], config["beta1"], config["beta2"]) == ([256, 1024], 0.01, 0.9, 0.999)
    assert config["curriculum_config"]["moduli"] == [256, 1024] and len(config["curriculum_config"]["phases"]) == 2
    assert config["world_size"] == 1 and config["pretrain_m"] is None
    state = saved["model_state_dict"]
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state)
    final = load(out / f"multi_curriculum_checkpoint_{FILES_BASE}_step10.pt")
    assert type(final["config"]) is dict and final["step"] == 10
    for name, tensor in state.items():
        assert torch.equal(final["model_state_dict"][name], tensor), name
    assert {float(s["step"]) for s in final["optimizer_state_dict"]["state"].values()} == {10.0}


def test_correctness_npz_training_ac_values_and_plots(files_run):
    out, _ = files_run
    curves = np.load(out / f"correctness_{FILES_BASE}.npz")
    assert set(curves.files) == {"test_m256", "test_m1024", "train_correct"}
    for key in curves.files:
        assert curves[key].shape == (8,)  # seq_len - 1 numbers
        assert ((0 <= curves[key]) & (curves[key] <= 1)).all()
    # train_correct is the last micro-batch only: fractions of its 8 rows; test_m<m> of the 2 x 2 sequences.
    np.testing.assert_allclose(curves["train_correct"] * 8, np.round(curves["train_correct"] * 8), atol=1e-12)
    np.testing.assert_allclose(curves["test_m256"] * 4, np.round(curves["test_m256"] * 4), atol=1e-12)
    values = load(out / ACV_NAME)
    assert set(values["training_ac_values"]) == {256, 1024}
    for m, per in values["training_ac_values"].items():
        assert set(per) == {"train_a", "train_c"} and len(per["train_a"]) == len(per["train_c"]) == 4
        assert all(type(v) is int for v in per["train_a"] + per["train_c"])
    assert values["config"] == {"type": "LCG", "moduli": [256, 1024], "n_a": 4, "n_c": 4, "n_example": 1,
                                "vocab_size": 1024, "seq_len": 9, "control_bits": "0", "data_seed": 1, "main_seed": 1}
    for name in (f"accuracy_by_position_{FILES_BASE}.png", f"schedule_{FILES_BASE}.png"):
        with open(out / name, "rb") as fh:
            assert fh.read(8) == PNG_MAGIC


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, capsys):
    out = tmp_path / "results"
    path = files_yaml(tmp_path, out)
    assert run_main("--config", path) == 0
    csv, model = out / f"{FILES_BASE}.csv", out / f"multi_curriculum_model_lazy_{FILES_BASE}.pt"
    csv_a, model_a = csv.read_bytes(), load(model)["model_state_dict"]
    for name in (csv, model, *(out / f"multi_curriculum_checkpoint_{FILES_BASE}_step{s}.pt" for s in (8, 10))):
        os.remove(name)
    manifest = out / f"run_{FILES_BASE}.json"  # as if killed after the checkpoint at update 4
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "finished": None}))
    capsys.readouterr()

    moved = shutil.copy(path, tmp_path / "same_settings_elsewhere.yaml")  # e.g. the SLURM sweep's per-job file
    assert run_main("--config", moved, "--resume", "auto") == 0
    assert f"resume: from {out / f'multi_curriculum_checkpoint_{FILES_BASE}_step4.pt'}" in capsys.readouterr().out
    assert csv.read_bytes() == csv_a
    model_b = load(model)["model_state_dict"]
    assert set(model_b) == set(model_a)
    for name in model_a:
        assert torch.equal(model_a[name], model_b[name]), name

    # A checkpoint of other settings is refused, in one line, before any data is built.
    with pytest.raises(SystemExit) as stop:
        run_main("--config", path, "--lr_trgt", "2e-3", "--resume", out / f"multi_curriculum_checkpoint_{FILES_BASE}_step4.pt")
    assert_one_line_error(capsys, stop.value.code, "different run", "lr_trgt")


# --------------------------------------------------------------------------------------------------
# Pretrained start and exclusions, from a single-modulus run.

@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    assert prng_train_lowmem.main(["--m", "256", *TINY, "--num_steps", "2", "--save_params", "--save_checkpoints",
                                   "--checkpoint_interval", "2", "--results_dir", str(out)]) == 0
    return {"dir": out, "params": only(out / "params_*.pth"), "checkpoint": only(out / "checkpoint_*_step2.pt"),
            "trainac": only(out / "trainac_*.npz"), "ac_values": only(out / "training_ac_values_*.pt")}


def original_files(single_run, folder):
    """The original's layouts: a compiled model's state dict, and a checkpoint with a Namespace config."""
    state = load(single_run["params"])
    prefixed = {f"_orig_mod.{k}": v for k, v in state.items()}
    torch.save(prefixed, folder / "orig_params.pth")
    torch.save({"model_state_dict": prefixed, "optimizer_state_dict": {}, "step": 2, "best": np.float64(1.5),
                "config": argparse.Namespace(m=256, n_embd=32, type="LCG")}, folder / "orig_checkpoint.pt")
    return {"orig_params": str(folder / "orig_params.pth"), "orig_checkpoint": str(folder / "orig_checkpoint.pt")}


ONE_STEP = '[{"phase_steps": 1, "end_weights": [1, 1]}]'


@pytest.mark.parametrize("kind", ["params", "checkpoint", "orig_params", "orig_checkpoint"])
def test_pretrained_single_modulus_weights_start_a_larger_vocabulary(tmp_path, single_run, kind):
    files = {**single_run, **original_files(single_run, tmp_path)}
    pretrained = load(single_run["params"])
    out = tmp_path / "out"
    assert run_main("--moduli", "256,1024", "--custom_phases", ONE_STEP, *TINY, "--pretrained_path", files[kind],
                    "--pretrain_m", "256", "--save_checkpoints", "--results_dir", out) == 0
    ckpt = load(only(out / "multi_curriculum_checkpoint_LCG_prem256_moduli256_1024_*_step0.pt"))
    assert ckpt["config"]["pretrain_m"] == 256 and ckpt["config"]["pretrained_path"] == files[kind]
    start = ckpt["model_state_dict"]
    assert start["transformer.wte.weight"].shape == (1024, 32) and pretrained["transformer.wte.weight"].shape == (256, 32)
    assert torch.equal(start["transformer.wte.weight"][:256], pretrained["transformer.wte.weight"])
    assert not torch.equal(start["transformer.wte.weight"][256:], torch.zeros(768, 32))  # new rows: fresh init
    assert torch.equal(start["lm_head.weight"], start["transformer.wte.weight"])  # still tied
    for name, tensor in pretrained.items():
        if name not in ("transformer.wte.weight", "lm_head.weight"):
            assert torch.equal(start[name], tensor), name


def test_pretrained_from_a_curriculum_model_file(tmp_path, files_run):
    out = tmp_path / "out"
    source = load(files_run[0] / f"multi_curriculum_model_lazy_{FILES_BASE}.pt")["model_state_dict"]
    assert run_main("--moduli", "256,2048", "--custom_phases", ONE_STEP, *TINY, "--save_checkpoints",
                    "--pretrained_path", files_run[0] / f"multi_curriculum_model_lazy_{FILES_BASE}.pt",
                    "--results_dir", out) == 0
    start = load(only(out / "multi_curriculum_checkpoint_*_step0.pt"))["model_state_dict"]
    assert torch.equal(start["transformer.wte.weight"][:1024], source["transformer.wte.weight"])
    assert start["transformer.wte.weight"].shape == (2048, 32)
    assert all(torch.equal(start[k], v) for k, v in source.items() if k not in ("transformer.wte.weight", "lm_head.weight"))


def test_the_wandb_api_key_is_written_into_no_file(tmp_path):
    secret = "0123456789abcdef-secret"
    assert run_main("--moduli", "256,1024", "--custom_phases", ONE_STEP, *TINY, "--wandb_api_key", secret,
                    "--save_params", "--save_checkpoints", "--results_dir", tmp_path) == 0
    model = load(only(tmp_path / "multi_curriculum_model_lazy_*.pt"))
    assert "wandb_api_key" not in model["config"]  # the curriculum's own file leaves it out
    for path in glob.glob(str(tmp_path / "multi_curriculum_checkpoint_*.pt")):
        assert secret not in str(load(path)["config"]), path


def test_pretrained_load_problems_are_one_line_errors(tmp_path, capsys):
    wide = build_model(GPTConfig(block_size=8, vocab_size=256, n_layer=1, n_head=2, n_embd=64), False)
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    torch.save({"step": 3, "note": "no weights"}, tmp_path / "no_state.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "text.pth").write_text("not a torch file")
    cases = {"missing.pth": "not found", "wide.pth": "shape", "no_state.pt": "no state dict",
             "list.pt": "no state dict", "text.pth": "could not be loaded"}
    for name, words in cases.items():
        with pytest.raises(SystemExit) as stop:
            run_main("--moduli", "256,1024", "--custom_phases", ONE_STEP, *TINY, "--pretrained_path",
                     tmp_path / name, "--results_dir", tmp_path / "out")
        assert_one_line_error(capsys, stop.value.code, words, name)
        assert not glob.glob(str(tmp_path / "out" / "*.csv"))  # no training started


def curriculum_splits(*extra, folder):
    path = write_yaml(folder / "c.yaml", tiny_yaml())
    return settings.ac_splits(configure(["--config", path, *extra]))


def used(split):
    return set(split.train_a) | set(split.test_a), set(split.train_c) | set(split.test_c)


@pytest.mark.parametrize("kind", ["ac_values", "trainac"])
def test_single_modulus_run_values_are_excluded_from_the_curriculum(tmp_path, single_run, kind):
    single_a = set(np.load(single_run["trainac"])["train_a"].tolist())
    single_c = set(np.load(single_run["trainac"])["train_c"].tolist())
    # Same data_seed and sizes: without exclusions m=256 (index 0, seed data_seed + 0) repeats the single run.
    plain = curriculum_splits(folder=tmp_path)
    assert set(plain[256].train_a) == single_a and set(plain[256].train_c) == single_c
    excluded = curriculum_splits("--exclude_ac_paths", single_run[kind], folder=tmp_path)
    for m in (256, 1024):
        a, c = used(excluded[m])
        assert not a & single_a and not c & single_c, m


def test_exclusions_reach_the_run_through_main(tmp_path, single_run):
    single = np.load(single_run["trainac"])
    assert run_main("--config", write_yaml(tmp_path / "c.yaml", tiny_yaml()), "--exclude_ac_paths",
                    single_run["ac_values"], "--results_dir", tmp_path / "out", "--save_params",
                    "--custom_phases", ONE_STEP) == 0
    values = load(tmp_path / "out" / ACV_NAME)["training_ac_values"][256]
    assert not set(values["train_a"]) & set(single["train_a"].tolist())
    assert not set(values["train_c"]) & set(single["train_c"].tolist())


def test_curriculum_values_file_excludes_per_modulus(tmp_path, files_run):
    first = load(files_run[0] / ACV_NAME)["training_ac_values"]
    plain = curriculum_splits(folder=tmp_path)
    for m in (256, 1024):  # same seeds: without exclusions the second run repeats the first's train values
        assert plain[m].train_a.tolist() == first[m]["train_a"] and plain[m].train_c.tolist() == first[m]["train_c"]
    excluded = curriculum_splits("--exclude_ac_paths", files_run[0] / ACV_NAME, folder=tmp_path)
    for i, m in enumerate((256, 1024)):
        a, c = used(excluded[m])
        assert not a & set(first[m]["train_a"]) and not c & set(first[m]["train_c"]), m
        # Per modulus: only that modulus's own values are excluded from it.
        want = split_ac(m, 4, 4, 2, 2, np.random.default_rng(1 + 1000 * i), set(first[m]["train_a"]),
                        set(first[m]["train_c"]))
        assert excluded[m].train_a.tolist() == want.train_a.tolist() and excluded[m].test_c.tolist() == want.test_c.tolist()


# --------------------------------------------------------------------------------------------------
# The README YAML with its own 5000-update phases, sizes shrunk on the command line.

README_BASE = ("XSLRR_premNone_moduli65536_262144_transexp_cp1s4000u500t4000dconsta0.001,0.999-0.0,1.0"
               "_p2s1000u0t0dcosa0.0,1.0-0.0,1.0_n32_h2_d1_na4_nc4_ne1_vs1024_sl9_cb3_T5000_B8_lr0.0005_wd0.1_dI2_I1")


@pytest.mark.slow  # the README YAML's 5000 updates
def test_readme_yaml_runs_and_the_loop_applies_its_lr(tmp_path, applied_lrs):
    out = tmp_path / "readme"
    assert run_main("--config", README_YAML, *TINY, "--results_dir", out) == 0
    # LR as the training loop applied it, one value per update.
    assert len(applied_lrs) == 5000
    lr, lr_min = 5e-4, 1e-7
    cosine = lambda j: lr_min + (lr - lr_min) * (1 + math.cos(math.pi * j / 1000)) / 2
    boundaries = {0: lr * 1e-4, 499: lr * (1e-4 + (1 - 1e-4) * 499 / 500), 500: lr, 3999: lr, 4000: lr,
                  4001: cosine(1), 4999: cosine(999)}
    for u, value in boundaries.items():
        print(f"README run: update {u} applied LR {applied_lrs[u]:.6e} (expected {value:.6e})")
        assert applied_lrs[u] == pytest.approx(value, rel=1e-12), u
    phases = parse_phases(README_PHASES, 2)
    assert applied_lrs == pytest.approx([phase_lr(u, phases, lr_trgt=lr, lr_min=lr_min, num_steps=5000)
                                         for u in range(5000)], rel=1e-12)
    # Files: checkpoints every 1000 from output:, the CSV every 200 updates with alpha from the formulas.
    names = set(os.listdir(out))
    assert {f"multi_curriculum_checkpoint_{README_BASE}_step{s}.pt" for s in range(0, 5001, 1000)} <= names
    assert {f"{README_BASE}.csv", f"correctness_{README_BASE}.npz", f"multi_curriculum_model_lazy_{README_BASE}.pt",
            f"accuracy_by_position_{README_BASE}.png", f"schedule_{README_BASE}.png",
            "training_ac_values_moduli65536_262144_na4_nc4_nta2_ntc2_ne1_vs1024_sl9_dI2_I1.pt",
            f"positions_{README_BASE}.npz", f"run_{README_BASE}.json"} <= names
    assert len(names) == 15  # and the run's lock file
    table = pd.read_csv(out / f"{README_BASE}.csv")
    assert table["step"].tolist() == list(range(0, 5001, 200))
    for _, row in table.iterrows():
        np.testing.assert_allclose([row["alpha_m65536"], row["alpha_m262144"]],
                                   reference_alpha(int(row["step"]), README_PHASES), rtol=1e-12, atol=1e-15)
    assert np.load(out / f"correctness_{README_BASE}.npz")["test_m262144"].shape == (8,)
