"""Input handling of both scripts and the curriculum YAML.

1. Bad input, one table: every case exits 2 with exactly one line `error: ...` on stderr that names the
   flag or YAML key (and the value where there is one), prints no traceback, builds no data and no
   model, leaves results_dir as it was, and finishes within a time limit (no hangs).
2. Inputs the original accepted are accepted, with the original's meaning.

Runs are in-process (`main(argv)`), so a case costs milliseconds; one command-line test runs each kind of
bad input of the scripts and analyze.py (flags, rules, YAML, files, environment) as a process, checking
what a user sees.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal

import numpy as np
import pytest
import torch
import yaml

import curriculum_lowmem
import prng_train_lowmem
from utils import config, settings
from utils.curriculum_config import TOP_LEVEL, YAML_SCHEMA
from utils.int_list import INT64_MAX, int_expr, parse_int_list
from utils.gpt2 import GPTConfig, build_model
from tests.helpers import REPO, clean_env, cpus_per_worker, run_process

CASE_SECONDS = 20  # validation builds nothing: a case that takes longer hangs
MODEL = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--seq_len", "9", "--n_a", "4", "--n_c", "4",
         "--n_test_a", "2", "--n_test_c", "2"]
SINGLE = ["--m", "256", *MODEL, "--batch_size", "4", "--num_steps", "2"]
ONE_PHASE = '[{"phase_steps": 2, "end_weights": [1, 1]}]'
CURRICULUM = ["--moduli", "256,1024", "--custom_phases", ONE_PHASE, *MODEL, "--batch_size", "8"]
YAML_OK = {
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 32},
    "data": {"seq_len": 9, "n_a": 4, "n_c": 4, "n_test_a": 2, "n_test_c": 2},
    "curriculum": {"moduli": [256, 1024], "phases": [{"phase_steps": 2, "end_weights": [1, 1]}]},
    "training": {"batch_size": 8},
}
BIG = str(10**23)


def yaml_with(section, **values):
    config = json.loads(json.dumps(YAML_OK))
    config.setdefault(section, {}).update(values)
    return config


# case -> (script, arguments, fragments the one line must hold). Script "single" starts from SINGLE,
# "curriculum" from CURRICULUM, "yaml" from `--config FILE` (FILE written from the dict given first).
BAD = {
    # optimiser values (AdamW's own rules, checked before any work)
    "single_beta1_above_1": ("single", ["--beta1", "1.5"], ["--beta1", "1.5"]),
    "single_beta1_is_1": ("single", ["--beta1", "1"], ["--beta1", "[0.0, 1.0)"]),
    "single_beta2_negative": ("single", ["--beta2", "-0.1"], ["--beta2", "-0.1"]),
    "single_weight_decay_negative": ("single", ["--weight_decay", "-5"], ["--weight_decay", "-5"]),
    "single_weight_decay_nan": ("single", ["--weight_decay", "nan"], ["--weight_decay", "nan"]),
    "single_lr_trgt_inf": ("single", ["--lr_trgt", "inf"], ["--lr_trgt", "inf"]),
    "single_lr_trgt_negative": ("single", ["--lr_trgt=-1e-3"], ["--lr_trgt", "-0.001"]),
    "single_lr_min_negative": ("single", ["--lr_min", "-1"], ["--lr_min", "-1"]),
    "single_lr_min_nan": ("single", ["--lr_min", "nan"], ["--lr_min", "nan"]),
    "single_lr_not_a_number": ("single", ["--lr_trgt", "fast"], ["--lr_trgt", "fast"]),
    # seeds: numpy's generators need >= 0, torch's fit 64 bits
    "single_main_seed_negative": ("single", ["--main_seed", "-1"], ["--main_seed", "-1"]),
    "single_main_seed_huge": ("single", ["--main_seed", BIG], ["--main_seed", BIG]),
    "single_data_seed_negative": ("single", ["--data_seed", "-1"], ["--data_seed", "-1"]),
    "single_data_seed_2_63": ("single", ["--data_seed", str(2**63)], ["--data_seed", str(2**63)]),
    # sizes that cannot be allocated or indexed
    "single_m_int64_max": ("single", ["--m", str(INT64_MAX)], ["--vocab_size", "--m", str(INT64_MAX)]),
    "single_m_2_63": ("single", ["--m", str(2**63)], ["--m", str(2**63)]),
    "single_m_zero": ("single", ["--m", "0"], ["--m", "0"]),
    "single_vocab_2_40": ("single", ["--vocab_size", "1099511627776"], ["--vocab_size", "1099511627776"]),
    "single_n_embd_huge": ("single", ["--n_embd", str(2**40), "--n_head", "1"], ["--n_embd", str(2**40)]),
    "single_n_layer_huge": ("single", ["--n_layer", str(10**9)], ["--n_layer", str(10**9)]),
    "single_seq_len_huge": ("single", ["--seq_len", str(10**12)], ["--seq_len", str(10**12)]),
    "single_batch_larger_than_data": ("single", ["--batch_size", "100000000"], ["--batch_size", "100000000"]),
    "single_n_example_overflows": ("single", ["--n_example", str(10**18)], ["--n_example", str(10**18)]),
    "single_n_a_beyond_memory": ("single", ["--type", "TLCG", "--m", str(2**62), "--bits_to_keep", "8", "--n_a",
                                            str(10**17)], ["--n_a", str(10**17)]),
    "single_num_steps_huge": ("single", ["--num_steps", BIG], ["--num_steps", BIG]),
    # integers that must be positive
    "single_batch_zero": ("single", ["--batch_size", "0"], ["--batch_size", "0"]),
    "single_grad_acc_zero": ("single", ["--grad_acc_steps", "0"], ["--grad_acc_steps", "0"]),
    "single_seq_len_1": ("single", ["--seq_len", "1"], ["--seq_len", "1"]),
    "single_digits_zero": ("single", ["--digits", "0"], ["--digits", "0"]),
    "single_digits_100": ("single", ["--digits", "100", "--base", "2"], ["--digits", "100"]),
    "single_base_1": ("single", ["--base", "1"], ["--base", "1"]),
    "single_base_2_63": ("single", ["--base", str(2**63)], ["--base", str(2**63)]),
    "single_n_a_zero": ("single", ["--n_a", "0"], ["--n_a", "0"]),
    "single_n_test_c_zero": ("single", ["--n_test_c", "0"], ["--n_test_c", "0"]),
    "single_n_example_zero": ("single", ["--n_example", "0"], ["--n_example", "0"]),
    "single_eval_interval_zero": ("single", ["--eval_interval", "0"], ["--eval_interval", "0"]),
    "single_checkpoint_interval_zero": ("single", ["--checkpoint_interval", "0"], ["--checkpoint_interval", "0"]),
    "single_num_steps_zero": ("single", ["--num_steps", "0"], ["--num_steps", "0"]),
    "single_warm_steps_negative": ("single", ["--warm_steps", "-1"], ["warm_steps", "-1"]),
    "single_keep_checkpoints_zero": ("single", ["--keep_checkpoints", "0"], ["--keep_checkpoints", "0"]),
    "single_bits_to_keep_zero": ("single", ["--bits_to_keep", "0"], ["--bits_to_keep", "0"]),
    "single_bits_to_keep_64": ("single", ["--bits_to_keep", "64"], ["--bits_to_keep", "64"]),
    # generator and model shape
    "single_unknown_type": ("single", ["--type", "FOO"], ["FOO"]),
    "single_pcg_without_control_bits": ("single", ["--type", "XSLRR", "--m", "1024"], ["--control_bits", "XSLRR"]),
    "single_control_bits_not_int": ("single", ["--type", "XSLRR", "--m", "1024", "--control_bits", "x"],
                                    ["control_bits", "'x'"]),
    "single_control_bits_huge": ("single", ["--type", "RS", "--m", "1024", "--control_bits", str(10**11)],
                                 ["control_bits", str(10**11)]),
    "single_n_head_does_not_divide": ("single", ["--n_embd", "30", "--n_head", "4"], ["--n_embd", "--n_head"]),
    "single_odd_rope_head": ("single", ["--n_embd", "6", "--n_head", "2"], ["RoPE", "--n_head"]),
    "single_base_too_small": ("single", ["--base", "16"], ["digits", "base-16"]),
    # argparse: one line, not the usage block
    "single_m_not_an_int": ("single", ["--m", "1.5"], ["--m", "1.5"]),
    "single_unknown_flag": ("single", ["--learning_rate", "1"], ["--learning_rate"]),
    "single_device_unknown": ("single", ["--device", "tpu"], ["--device", "tpu"]),
    # exclusion files
    "single_exclusion_value_2_63": ("single", ["--exclude_ac_paths", "HUGE_NPZ"], ["HUGE_NPZ", "int64"]),
    "single_exclusion_missing": ("single", ["--exclude_ac_paths", "MISSING_NPZ"], ["MISSING_NPZ"]),

    # curriculum flags (no YAML)
    "curriculum_moduli_tower_of_powers": ("curriculum", ["--moduli", "64,9**9**9"], ["--moduli", "9**9**9"]),
    "curriculum_moduli_2_64": ("curriculum", ["--moduli", "256,2**64"], ["--moduli", "2**64"]),
    "curriculum_moduli_product_overflows": ("curriculum", ["--moduli", "256,2**40*2**40"], ["--moduli"]),
    "curriculum_moduli_not_a_number": ("curriculum", ["--moduli", "256,abc"], ["--moduli", "abc"]),
    "curriculum_moduli_code": ("curriculum", ["--moduli", "__import__('os')"], ["--moduli", "__import__"]),
    "curriculum_moduli_deep_parentheses": ("curriculum", ["--moduli", "(" * 100 + "2" + ")" * 100], ["--moduli"]),
    "curriculum_moduli_negative_exponent": ("curriculum", ["--moduli", "256,2**-1"], ["--moduli", "2**-1"]),
    "curriculum_moduli_repeat": ("curriculum", ["--moduli", "256,2**8"], ["--moduli", "repeat"]),
    "curriculum_moduli_int64_max": ("curriculum", ["--moduli", "256,2**63-1"], ["--vocab_size"]),
    "curriculum_bits_to_keep_tower": ("curriculum", ["--bits_to_keep", "8,9**9**9"], ["--bits_to_keep", "9**9**9"]),
    "curriculum_bits_to_keep_zero": ("curriculum", ["--bits_to_keep", "8,0"], ["--bits_to_keep", "0"]),
    "curriculum_batch_100m": ("curriculum", ["--batch_size", "100000000"], ["--batch_size", "100000000"]),
    "curriculum_main_seed_negative": ("curriculum", ["--main_seed", "-1"], ["--main_seed", "-1"]),
    "curriculum_data_seed_plus_1000_overflows": ("curriculum", ["--data_seed", str(INT64_MAX)],
                                                 ["--data_seed", str(INT64_MAX)]),
    "curriculum_beta1_above_1": ("curriculum", ["--beta1", "1.5"], ["--beta1", "1.5"]),
    "curriculum_beta2_negative": ("curriculum", ["--beta2", "-0.1"], ["--beta2", "-0.1"]),
    "curriculum_weight_decay_negative": ("curriculum", ["--weight_decay", "-5"], ["--weight_decay", "-5"]),
    "curriculum_lr_trgt_inf": ("curriculum", ["--lr_trgt", "inf"], ["--lr_trgt", "inf"]),
    "curriculum_main_seed_huge": ("curriculum", ["--main_seed", BIG], ["--main_seed", BIG]),
    "curriculum_exclusion_value_2_63": ("curriculum", ["--exclude_ac_paths", "HUGE_NPZ"], ["HUGE_NPZ", "int64"]),
    "curriculum_weight_decay_nan": ("curriculum", ["--weight_decay", "nan"], ["--weight_decay", "nan"]),
    "curriculum_lr_min_inf": ("curriculum", ["--lr_min", "inf"], ["--lr_min", "inf"]),
    "curriculum_vocab_2_40": ("curriculum", ["--vocab_size", "1099511627776"], ["--vocab_size", "1099511627776"]),
    "curriculum_phase_weights_short": ("curriculum", ["--custom_phases", '[{"phase_steps": 2, "end_weights": [1]}]'],
                                       ["--custom_phases", "end_weights"]),
    "curriculum_phases_not_a_list": ("curriculum", ["--custom_phases", '{"phase_steps": 2}'], ["--custom_phases"]),
    "curriculum_phases_not_json": ("curriculum", ["--custom_phases", "[{"], ["--custom_phases", "JSON"]),
    "curriculum_sampler_interval_zero": ("curriculum", ["--sampler_update_interval", "0"],
                                         ["--sampler_update_interval", "0"]),
    "curriculum_transition_type_unknown": ("curriculum", ["--transition_type", "sigmoid"],
                                           ["--transition_type", "sigmoid"]),
    "curriculum_n_embd_huge": ("curriculum", ["--n_embd", str(2**40), "--n_head", "1"], ["--n_embd", str(2**40)]),

    # curriculum YAML: the key is named as the YAML names it
    "yaml_batch_size_1e30": ("yaml", [yaml_with("training", batch_size="1e30")], ["training.batch_size"]),
    "yaml_batch_size_inf": ("yaml", [yaml_with("training", batch_size=float("inf"))], ["training.batch_size", "inf"]),
    "yaml_lr_trgt_inf": ("yaml", [yaml_with("training", lr_trgt=float("inf"))], ["training.lr_trgt", "inf"]),
    "yaml_weight_decay_nan": ("yaml", [yaml_with("training", weight_decay=float("nan"))],
                              ["training.weight_decay", "nan"]),
    "yaml_weight_decay_negative": ("yaml", [yaml_with("training", weight_decay="-1e-2")], ["training.weight_decay"]),
    "yaml_beta2_is_1": ("yaml", [yaml_with("training", beta2=1)], ["training.beta2", "1"]),
    "yaml_main_seed_negative": ("yaml", [yaml_with("seeds", main_seed=-1)], ["seeds.main_seed", "-1"]),
    "yaml_data_seed_1e23": ("yaml", [yaml_with("seeds", data_seed="1e23")], ["seeds.data_seed"]),
    "yaml_n_embd_huge": ("yaml", [yaml_with("model", n_embd="1e12", n_head=1)], ["model.n_embd"]),
    "yaml_vocab_2_40": ("yaml", [yaml_with("data", vocab_size=1099511627776)], ["data.vocab_size", "1099511627776"]),
    "yaml_seq_len_1": ("yaml", [yaml_with("data", seq_len=1)], ["data.seq_len", "1"]),
    "yaml_modulus_1e30": ("yaml", [yaml_with("curriculum", moduli=[256, "1e30"])], ["curriculum.moduli"]),
    "yaml_bits_to_keep_99": ("yaml", [yaml_with("curriculum", bits_to_keep=[8, 99])], ["curriculum.bits_to_keep", "99"]),
    "yaml_sampler_interval_zero": ("yaml", [yaml_with("curriculum", sampler_update_interval=0)],
                                   ["curriculum.sampler_update_interval", "0"]),
    "yaml_phase_bad_weights": ("yaml", [yaml_with("curriculum", phases=[{"phase_steps": 2, "end_weights": [1]}])],
                               ["curriculum.phases", "end_weights"]),
    "yaml_unknown_transition": ("yaml", [yaml_with("curriculum", phases=[{"phase_steps": 2, "end_weights": [1, 1],
                                                                          "transition": "sigmoid"}])],
                                ["curriculum.phases", "sigmoid"]),
    "yaml_unknown_lr_decay": ("yaml", [yaml_with("curriculum", phases=[{"phase_steps": 2, "end_weights": [1, 1],
                                                                        "lr_decay": "linear"}])],
                              ["curriculum.phases", "lr_decay"]),
    "yaml_n_layer_not_a_number": ("yaml", [yaml_with("model", n_layer="two")], ["model.n_layer", "two"]),
    "yaml_control_bits_huge": ("yaml", [yaml_with("data", type="RR", control_bits=10**11)],
                               ["control_bits", str(10**11)]),
    "yaml_phase_steps_1e30": ("yaml", [yaml_with("curriculum", phases=[{"phase_steps": "1e30", "end_weights": [1, 1]}])],
                              ["curriculum.phases", "phase_steps"]),
    "yaml_unknown_key": ("yaml", [yaml_with("training", learning_rate=1)], ["training.learning_rate"]),
    "yaml_flag_overrides_and_is_named": ("yaml", [YAML_OK, "--batch_size", "0"], ["--batch_size", "0"]),
    "yaml_not_utf8": ("yaml", [b"model: {n_layer: \xff}\n"], ["NOT_UTF8", "UTF-8"]),
    "yaml_missing_file": ("yaml", [None], ["cannot read config", "ABSENT_YAML"]),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    results = root / "results"
    results.mkdir()
    (results / "eval_earlier_run.tab").write_text("step\ttest_loss\n0\t1.0\n")  # a finished run's file
    np.savez(root / "huge.npz", train_a=np.array([5, 2**63], dtype=np.uint64))
    return {"RESULTS": str(results), "ROOT": root, "HUGE_NPZ": str(root / "huge.npz"),
            "MISSING_NPZ": str(root / "missing.npz"), "NOT_UTF8": str(root / "latin1.yaml"),
            "ABSENT_YAML": str(root / "absent.yaml")}


def fingerprint(folder) -> str:
    digest = hashlib.sha256()
    for root, dirs, names in sorted(os.walk(folder)):
        for name in sorted(names):
            path = os.path.join(root, name)
            digest.update(path.encode())
            with open(path, "rb") as fh:
                digest.update(fh.read())
        digest.update(repr(sorted(dirs)).encode())
    return digest.hexdigest()


def argv_for(case, files):
    script, args, fragments = BAD[case]
    sub = lambda text: files.get(text, text)
    fragments = [sub(f) for f in fragments]
    if script == "single":
        return prng_train_lowmem, [*SINGLE, *map(sub, args)], fragments
    if script == "curriculum":
        return curriculum_lowmem, [*CURRICULUM, *map(sub, args)], fragments
    config, extra = args[0], list(args[1:])
    if config is None:
        path = files["ABSENT_YAML"]
    elif isinstance(config, bytes):
        path = files["NOT_UTF8"]
        with open(path, "wb") as fh:
            fh.write(config)
    else:
        path = str(files["ROOT"] / f"{case}.yaml")
        with open(path, "w") as fh:
            yaml.safe_dump(config, fh)
    return curriculum_lowmem, ["--config", path, *extra], fragments


class Hung(Exception):
    pass


def _hung(signum, frame):
    raise Hung(f"a bad input took more than {CASE_SECONDS} s")


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(files, capsys, monkeypatch, case):
    script, argv, fragments = argv_for(case, files)

    def built(*a, **k):
        raise AssertionError("data or a model was built for bad input")
    monkeypatch.setattr(settings, "PRNGDataset", built)  # every dataset of both scripts is made there
    for module in (prng_train_lowmem, curriculum_lowmem):
        monkeypatch.setattr(module, "build_model", built)
    before = fingerprint(files["RESULTS"])
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(CASE_SECONDS)
    try:
        with pytest.raises(SystemExit) as stop:
            script.main([*argv, "--results_dir", files["RESULTS"]])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    assert stop.value.code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in captured.err + captured.out
    assert fingerprint(files["RESULTS"]) == before


def test_the_table_covers_both_scripts_and_the_yaml():
    kinds = [script for script, _, _ in BAD.values()]
    assert len(BAD) >= 60 and {kinds.count(k) >= 15 for k in ("single", "curriculum", "yaml")} == {True}


# What a user sees, for each kind of bad input: the process's exit status 2, one line `error: ...` on stderr
# naming the problem, no traceback, no training line, the output folder as it was (absent: not created).
# case -> (script, arguments, environment, what the line must hold: a fragment, or the whole line when it
# starts with "error: "). OUT is the output folder, absent; RUN_OUT one holding a finished run's files (the
# results_dir check creates an absent one before --resume is read); OK_YAML a valid curriculum YAML;
# TRUNCATED a finished run's checkpoint cut short; NO_WANDB a folder whose wandb module fails to import;
# MISSING a file that does not exist.
OMP_MANY = {"OMP_NUM_THREADS": "many"}
OMP_ERROR = "error: OMP_NUM_THREADS='many' is not a thread count (a whole number >= 1); unset it to let the run choose"
NO_WANDB = {"PYTHONPATH": "NO_WANDB", "WANDB_MODE": "offline"}
WANDB_ERROR = "--use_wandb was given but the wandb package is not installed"
CLI_BAD = {
    "single_seed_out_of_bounds": ("prng_train_lowmem.py", [*SINGLE, "--main_seed", "-1", "--results_dir", "OUT"], {},
                                  "--main_seed"),
    "single_flag_not_an_int": ("prng_train_lowmem.py", [*SINGLE, "--m", "abc", "--results_dir", "OUT"], {},
                               "argument --m: invalid int value"),
    "single_pcg_rule": ("prng_train_lowmem.py", ["--type", "RS", "--m", "256", "--control_bits", "3", "--bits_to_keep",
                                                 "8", *MODEL, "--batch_size", "4", "--results_dir", "OUT"], {},
                        "RS: needs n >= k + cb + 2^cb - 1"),
    "single_omp_num_threads": ("prng_train_lowmem.py", [*SINGLE, "--warm_steps", "0", "--results_dir", "OUT"],
                               OMP_MANY, OMP_ERROR),
    "single_wandb_missing": ("prng_train_lowmem.py", [*SINGLE, "--warm_steps", "0", "--use_wandb", "--wandb_offline",
                                                      "--results_dir", "OUT"], NO_WANDB, WANDB_ERROR),
    "curriculum_moduli_overflow": ("curriculum_lowmem.py", [*CURRICULUM, "--moduli", "64,9**9**9", "--results_dir",
                                                            "OUT"], {}, "--moduli"),
    "curriculum_yaml_transition": ("curriculum_lowmem.py", ["--config", "SIGMOID_YAML", "--results_dir", "OUT"], {},
                                   "sigmoid"),
    "curriculum_resume_truncated": ("curriculum_lowmem.py", ["--config", "OK_YAML", "--resume", "TRUNCATED",
                                                             "--results_dir", "RUN_OUT"], {},
                                    "unreadable or incomplete"),
    "curriculum_wandb_missing": ("curriculum_lowmem.py", [*CURRICULUM, "--use_wandb", "--wandb_offline",
                                                          "--results_dir", "OUT"], NO_WANDB, WANDB_ERROR),
    "analyze_omp_num_threads": ("analyze.py", ["eval", "model.pth", "--out", "OUT"], OMP_MANY, OMP_ERROR),
    "analyze_model_missing": ("analyze.py", ["eval", "MISSING", "--out", "OUT"], {}, "not found"),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory, finished_run):
    """case -> (the process's result, its output folder's (existence, fingerprint) before and after): every
    case of CLI_BAD, run as a process, as many at once as this test worker has CPUs (each spends seconds importing)."""
    root = tmp_path_factory.mktemp("cli_bad")
    checkpoint = next(p for p in finished_run[0].iterdir() if p.name.startswith("checkpoint_"))
    (root / "truncated.pt").write_bytes(checkpoint.read_bytes()[:1000])
    (root / "no_wandb").mkdir()
    (root / "no_wandb" / "wandb.py").write_text('raise ImportError("the test hides the wandb package")\n')
    sigmoid = yaml_with("curriculum", phases=[{"phase_steps": 4, "transition": "sigmoid", "end_weights": [1, 1]}])
    for name, config in (("ok.yaml", YAML_OK), ("sigmoid.yaml", sigmoid)):
        (root / name).write_text(yaml.safe_dump(config))
    names = {"OK_YAML": root / "ok.yaml", "SIGMOID_YAML": root / "sigmoid.yaml", "TRUNCATED": root / "truncated.pt",
             "NO_WANDB": root / "no_wandb", "MISSING": root / "missing.pt"}

    def run(case):
        script, args, env, _ = CLI_BAD[case]
        out = root / case / "out"
        (root / case).mkdir()
        if "RUN_OUT" in args:
            shutil.copytree(finished_run[0], out)
        before = out.exists(), fingerprint(out)
        env = {key: str(names.get(value, value)) for key, value in env.items()}
        if "WANDB_MODE" in env:  # every W&B folder inside the case's own
            env.update({name: str(root / case / name.lower()) for name in ("WANDB_DIR", "WANDB_CONFIG_DIR",
                                                                            "WANDB_CACHE_DIR", "WANDB_DATA_DIR")})
        argv = [str(out) if a in ("OUT", "RUN_OUT") else str(names.get(a, a)) for a in args]
        result = run_process(script, *argv, env=clean_env(**env), timeout=300)
        return result, before, (out.exists(), fingerprint(out))

    with concurrent.futures.ThreadPoolExecutor(cpus_per_worker()) as pool:
        return dict(zip(CLI_BAD, pool.map(run, CLI_BAD)))


@pytest.mark.slow  # eleven processes
@pytest.mark.parametrize("case", list(CLI_BAD))
def test_bad_input_from_the_command_line(cli_results, case):
    result, before, after = cli_results[case]
    expected, env = CLI_BAD[case][3], CLI_BAD[case][2]
    assert result.returncode == 2, result.stderr
    # The OpenMP runtime has its own say when torch loads it ("libgomp: Invalid value ..."); ours is the error.
    lines = [line for line in result.stderr.splitlines()
             if line and not ("OMP_NUM_THREADS" in env and line.startswith("libgomp:"))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert lines[0] == expected or not expected.startswith("error: ")
    assert "Traceback" not in result.stderr and "step" not in result.stdout
    assert after == before


# --------------------------------------------------------------------------------------------------
# The bounded expression parser of --moduli / --bits_to_keep

@pytest.mark.parametrize("text, value", [("256", 256), ("2**18", 2**18), ("3*2**10+1", 3 * 2**10 + 1),
                                         ("(2**4)**2", 256), ("2**3**2", 2**9), ("-2**2+10", 6),
                                         ("2**63-1", 2**63 - 1), (" 4 * 4 ", 16), ("1**1000000", 1)])
def test_integer_expressions_evaluate_as_python_does(text, value):
    assert int_expr(text) == value == eval(text)


@pytest.mark.parametrize("text", ["9**9**9", "2**63", "2**64-1", "2**62*4", "10**19", "2**-1", "1/2", "2.5",
                                  "", "(2", "2)", "a", "2 3", "()", "(" * 40 + "1" + ")" * 40, "1" * 300])
def test_integer_expressions_out_of_range_or_malformed_are_refused(text):
    with pytest.raises(ValueError):
        int_expr(text)


def test_one_grammar_reads_every_integer_list_and_keeps_what_each_flag_took():
    assert parse_int_list("256, 2**10,0x1000,1_024,", "--moduli") == [256, 1024, 4096, 1024]  # empty entries skipped
    assert parse_int_list("0b101,0o17,-3,010", "--a") == [5, 15, -3, 10]  # analyze.py's int(v, 0) forms and more
    assert parse_int_list("1-3,9,2**3", "--seeds", ranges=True) == [1, 2, 3, 9, 8]  # the benchmarks' seed ranges
    assert parse_int_list("1-3,2**3-1", "--m") == [-2, 7]  # without ranges, '-' is a difference
    assert parse_int_list(None, "--a") is None
    for text, ranges, fragment in [("", False, "--a is empty"), (" , ", False, "--a is empty"),
                                   ("5-1", True, "upwards"), ("1-99999", True, "fewer than"),
                                   ("abc", False, "'abc'"), ("0x", False, "'0x'"), ("1__0", False, "'1__0'")]:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            parse_int_list(text, "--a", ranges=ranges)


# --------------------------------------------------------------------------------------------------
# 2. What the original accepted is accepted, with its meaning (one printed line where it surprises).

def single_config(*args, log=print):
    cfg = prng_train_lowmem.build_parser().parse_args([*SINGLE, *map(str, args)])
    return prng_train_lowmem.setup_config(cfg, 1, log=log)


def curriculum_config(*args, log=print):
    cfg = curriculum_lowmem.load_config([*CURRICULUM, *map(str, args)])
    return curriculum_lowmem.setup_config(cfg, 1, log=log)


def test_a_vocab_size_below_the_base_is_raised_to_the_base(tmp_path, capsys):
    # The original: `--base 512 --vocab_size 256` gave a 512-token model named vs512.
    cfg = single_config("--m", "512", "--base", "512", "--vocab_size", "256")
    assert cfg.vocab_size == 512 and "_vs512_sl9_b512_" in prng_train_lowmem.base_name(cfg)
    assert "--vocab_size 256 is smaller than the base 512" in capsys.readouterr().out
    assert prng_train_lowmem.main([*SINGLE, "--m", "512", "--base", "512", "--vocab_size", "256", "--num_steps", "1",
                                   "--save_params", "--results_dir", str(tmp_path)]) == 0
    params = torch.load(next(tmp_path.glob("params_*_vs512_*.pth")), weights_only=True)
    assert params["transformer.wte.weight"].shape[0] == 512


@pytest.mark.parametrize("lr_trgt, lr_min", [(1e-3, 0.0), (1e-4, 1e-3)])
def test_lr_min_zero_and_lr_min_above_lr_trgt_are_accepted(capsys, lr_trgt, lr_min):
    for configure in (single_config, curriculum_config):
        cfg = configure("--lr_trgt", lr_trgt, "--lr_min", lr_min)
        assert (cfg.lr_trgt, cfg.lr_min) == (lr_trgt, lr_min)
        out = capsys.readouterr().out
        assert ("lr_min 0.001 > lr_trgt 0.0001" in out) == (lr_min > lr_trgt)


def test_phases_with_longer_transition_or_warmup_are_accepted(capsys):
    phases = [{"phase_steps": 10, "transition_steps": 400, "warmup_steps": 20, "start_weights": [1, 0],
               "end_weights": [0, 1]}, {"phase_steps": 2, "end_weights": [0, 1]}]
    cfg = curriculum_config("--custom_phases", json.dumps(phases))
    out = capsys.readouterr().out
    assert "transition_steps 400 > phase_steps 10" in out and "warmup_steps 20 > phase_steps 10" in out
    assert cfg.num_steps == 12 and cfg.phase_list[0].transition_steps == 400


def test_pcg_types_joined_to_lcg_without_control_bits_take_0(capsys):
    cfg = single_config("--type", "LCG+XSLRR", "--m", "1024")
    assert [c.label for c in cfg.combos] == ["LCG", "XSLRR_cb0"] and cfg.control_bits == "0"
    assert "XSLRR run with control bits 0" in capsys.readouterr().out
    assert prng_train_lowmem.base_name(cfg).startswith("LCG+XSLRR_m1024_cb0_")


def test_lower_case_lcg_takes_the_base_2_to_the_k_as_the_original(capsys):
    # The original's test for LCG is case-sensitive: `lcg` took base and vocabulary 2^k, not m.
    cfg = single_config("--type", "lcg", "--m", "1000", "--control_bits", "0")
    assert [c.label for c in cfg.combos] == ["LCG"]  # the same generator
    assert (cfg.bits_to_keep, cfg.base, cfg.vocab_size) == (10, 1024, 1024)
    assert "the default base is 2^bits_to_keep = 1024, not m" in capsys.readouterr().out
    upper = single_config("--type", "LCG", "--m", "1000")
    assert (upper.base, upper.vocab_size) == (1000, 1000)
    assert "default base" not in capsys.readouterr().out


@pytest.mark.parametrize("types", ["LCG", "TLCG", "LCG+TLCG"])
def test_control_bits_given_with_lcg_or_tlcg_alone_are_not_used_by_either_script(types, capsys):
    # Both originals ran the plain generator then: the single-modulus one without a word, the curriculum
    # after replacing the value with 0 (its names and saved config show 0). Both say so here, in one line.
    single, plain = single_config("--type", types, "--control_bits", "3"), single_config("--type", types)
    assert single.combos == plain.combos and [c.label for c in single.combos] == types.split("+")
    assert single.control_bits == "3"  # as written, as the original kept it (names of `lcg` show it)
    curriculum = curriculum_config("--type", types, "--control_bits", "3")
    assert curriculum.combos_by_m == curriculum_config("--type", types).combos_by_m
    assert curriculum.control_bits == ("3" if "+" in types else "0")
    out = capsys.readouterr().out
    assert out.count(f"note: {types} has no control bits: control_bits '3' is not used") == 2
    single_config("--type", types, "--control_bits", "0")
    assert "no control bits" not in capsys.readouterr().out


def test_pretrained_model_of_another_depth_loads_its_matching_tensors(tmp_path, capsys):
    from utils.pretrained import load_pretrained
    shape = dict(block_size=8, vocab_size=256, n_head=2, n_embd=32)
    deep = build_model(GPTConfig(n_layer=2, **shape), False)
    torch.save(deep.state_dict(), tmp_path / "deep.pth")
    shallow = build_model(GPTConfig(n_layer=1, **{**shape, "vocab_size": 1024}), False)
    load_pretrained(shallow, str(tmp_path / "deep.pth"))
    line = capsys.readouterr().out
    assert "missing 0" in line and "unexpected" in line and "transformer.h.1." in line
    for name, tensor in shallow.state_dict().items():
        source = deep.state_dict()[name]
        assert torch.equal(tensor[:len(source)], source), name  # the token table: its first 256 rows
    # And the other way: a deeper model keeps its initialisation where the file has nothing.
    shallow_file = build_model(GPTConfig(n_layer=1, **shape), False)
    torch.save(shallow_file.state_dict(), tmp_path / "shallow.pth")
    deeper = build_model(GPTConfig(n_layer=2, **shape), False)
    init = {k: v.clone() for k, v in deeper.state_dict().items()}
    load_pretrained(deeper, str(tmp_path / "shallow.pth"))
    assert "missing" in capsys.readouterr().out
    assert torch.equal(deeper.state_dict()["transformer.h.1.mlp.c_fc.weight"], init["transformer.h.1.mlp.c_fc.weight"])
    assert torch.equal(deeper.state_dict()["transformer.h.0.mlp.c_fc.weight"],
                       shallow_file.state_dict()["transformer.h.0.mlp.c_fc.weight"])
    # A file that shares nothing but the token table stays an error.
    torch.save({"transformer.wte.weight": torch.zeros(256, 32), "encoder.layer.0.weight": torch.zeros(3)},
               tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="shares no tensor"):
        load_pretrained(deeper, str(tmp_path / "foreign.pth"))


def test_pretrained_of_another_depth_through_the_script(tmp_path, capsys):
    deep = build_model(GPTConfig(block_size=8, vocab_size=256, n_layer=2, n_head=2, n_embd=32), False)
    torch.save(deep.state_dict(), tmp_path / "deep.pth")
    assert curriculum_lowmem.main([*CURRICULUM, "--n_embd", "32", "--pretrained_path", str(tmp_path / "deep.pth"),
                                   "--results_dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "pretrained: loaded" in out and "unexpected 12" in out


def test_saved_curriculum_config_carries_the_original_key_names(tmp_path):
    config = yaml_with("curriculum", bits_to_keep=[8])
    config["wandb"] = {"api_key": "secret-key-123"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert curriculum_lowmem.main(["--config", str(path), "--save_params", "--save_checkpoints",
                                   "--results_dir", str(tmp_path / "out")]) == 0
    for pattern in ("multi_curriculum_model_lazy_*.pt", "multi_curriculum_checkpoint_*.pt"):
        saved = torch.load(next((tmp_path / "out").glob(pattern)), weights_only=True)["config"]
        assert saved["custom_phases"] == saved["phases"] == config["curriculum"]["phases"]
        assert saved["moduli_bits_to_keep"] == [8] and saved["bits_to_keep"] == [8, 10]
        assert saved["_yaml_config"]["training"] == config["training"]
        assert "secret-key-123" not in repr(saved)


def test_docs_parameters_is_the_table_and_names_every_flag_and_yaml_key():
    with open(os.path.join(REPO, "docs", "parameters.md")) as fh:
        doc = fh.read()
    assert doc == config.markdown(), "regenerate: python -m utils.config > docs/parameters.md"
    for script in (prng_train_lowmem, curriculum_lowmem):
        for action in script.build_parser()._actions:
            for flag in action.option_strings:
                assert flag in ("-h", "--help", "--config") or f"`{flag}`" in doc, (script.__name__, flag)
    for section, keys in YAML_SCHEMA.items():
        for key in keys:
            assert f"`{section}.{key}`" in doc, (section, key)
    for key in TOP_LEVEL:
        assert f"`{key}`" in doc


def test_each_scripts_typed_config_declares_every_parameter_with_the_tables_default():
    for script, cls in config.CONFIG_CLASSES.items():
        declared = {f.name: f for f in dataclasses.fields(cls)}
        for p in config.configured(script):
            assert p.name in declared, (script, p.name)
            assert declared[p.name].default == p.for_script("default", script), (script, p.name)


def test_one_table_gives_both_parsers_and_the_yaml_their_defaults():
    # The original's per-script defaults (its README: 5.8 and 6.2/6.3 of the reference): kept as they were.
    single = vars(prng_train_lowmem.build_parser().parse_args([]))
    curriculum = vars(curriculum_lowmem.build_parser().parse_args([]))
    assert (single["n_layer"], single["lr_trgt"], single["weight_decay"], single["results_dir"]) == \
        (1, 1e-3, 0.5, "results/train")
    assert (curriculum["n_layer"], curriculum["lr_trgt"], curriculum["weight_decay"], curriculum["results_dir"]) == \
        (2, 1e-4, 0.1, "results/multi_curriculum_lazy")
    assert YAML_SCHEMA["output"]["results_dir"] == ("results_dir", "str", "results/multi_curriculum")
    for section in YAML_SCHEMA.values():  # apart from results_dir, the YAML's defaults are the flags'
        for attr, _, default in section.values():
            if attr in curriculum and attr not in ("results_dir", "moduli", "phases", "bits_to_keep"):
                assert curriculum[attr] == default, attr
