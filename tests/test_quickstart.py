"""The quickstart has one home, configs/quickstart.args, read by prng_train_lowmem.py as `@FILE`: the
README's Quickstart, bench/quickstart_seeds.py, bench/bench_train.py's quickstart case, bench/gpu_check.sh
and the CUDA tests all run it, and no other file carries a copy of its flags. The file parses and
validates with the script's own parser, its first updates run (nothing timed), and the README's
description of the recipe names every flag of the file with its value.

docs/quickstart_search.tsv is not a consumer: it logs the commands that were run during the search."""
import glob
import os
import re
import shlex
import subprocess

import pandas as pd
import pytest

import prng_train_lowmem
from bench import QUICKSTART, QUICKSTART_ARGS, bench_train, quickstart_seeds
from tests import test_cuda
from tests.helpers import REPO, repo_files

README = os.path.join(REPO, "README.md")
# A run of flags holding more than half of the quickstart's 21 (flag, value) pairs is a copy of it. Other
# commands share fewer: configs/reproduce's one-bit TLCG and combined-PCG runs share 8 (depth, heads, width,
# batch, beta2, updates, evaluation interval, dtype); the stale copies this check was written for held 12
# (bench/gpu_check.sh, tests/test_cuda.py) and 20 (the README).
COPY_PAIRS = 11
# A flag with its value: `--flag value`, `--flag=value`, Python's `"--flag", "value"`; or alone (a value
# does not start with '-').
FLAG_VALUE = re.compile(r"""--(\w+)(?:["']?(?:\s*,\s*["']?|\s+["']?|=)(?!-)([^\s"',\\\])`|]+))?""")
NEAR = 40  # characters between two flags of one command (a line continuation and its indent)


def quickstart_argv() -> list[str]:
    """The quickstart's flags, each line of the file read by the script's parser as its `@FILE` reads it."""
    parser = prng_train_lowmem.build_parser()
    with open(os.path.join(REPO, QUICKSTART_ARGS), encoding="utf-8") as f:
        return [word for line in f.read().splitlines() for word in parser.convert_arg_line_to_args(line)]


def flag(argv: list[str], name: str) -> str | None:
    value = None
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def recipe_pairs() -> set[tuple[str, str]]:
    argv = quickstart_argv()
    return {(word[2:], argv[i + 1]) for i, word in enumerate(argv[:-1])
            if word.startswith("--") and not argv[i + 1].startswith("--")}


def copies(text: str, recipe: set[tuple[str, str]]) -> list[int]:
    """For each run of flags in `text` (flags at most NEAR characters apart) holding COPY_PAIRS or more
    of the recipe's (flag, value) pairs: how many it holds."""
    runs, end = [], None
    for match in FLAG_VALUE.finditer(text):
        if end is None or match.start() - end > NEAR:
            runs.append(set())
        runs[-1].add(match.groups())
        end = match.end()
    return [len(run & recipe) for run in runs if len(run & recipe) >= COPY_PAIRS]


def readme_commands(script: str) -> list[list[str]]:
    """The commands of the README's fenced code blocks that name `script`, split as a shell splits them."""
    blocks, block = [], None
    with open(README, encoding="utf-8") as f:
        for line in f.read().splitlines():
            if line.startswith("```") and block is None:
                block = []
            elif line.startswith("```"):
                blocks.append("\n".join(block))
                block = None
            elif block is not None:
                block.append(line)
    return [shlex.split(part, comments=True) for block in blocks
            for part in block.replace("\\\n", " ").split("&&") if script in part]


def test_the_file_holds_one_flag_and_its_value_per_line():
    with open(os.path.join(REPO, QUICKSTART_ARGS), encoding="utf-8") as f:
        lines = [shlex.split(line, comments=True) for line in f]
    words = [line for line in lines if line]
    assert words and all(line[0].startswith("--") and len(line) <= 2 for line in words)
    assert sum(len(line) for line in words) == len(quickstart_argv())


def test_the_readme_command_runs_the_file():
    runs = [words[i + 1:] for words in readme_commands(QUICKSTART[0]) for i, word in enumerate(words[:-1])
            if os.path.basename(word).startswith("python") and words[i + 1] == QUICKSTART[0]]
    assert [*QUICKSTART] in runs, f"no `python {shlex.join(QUICKSTART)}` in the README's code blocks"


def test_the_quickstart_parses_and_validates_as_an_lcg_tested_on_unseen_pairs(monkeypatch):
    monkeypatch.chdir(REPO)  # as a user runs it, from the repository root
    cfg = prng_train_lowmem.build_parser().parse_args(list(QUICKSTART[1:]))
    prng_train_lowmem.setup_config(cfg, 1, log=lambda *a, **k: None)
    # the quickstart's promise: an LCG with m >= 256, in float32 on every machine, its accuracy by position kept
    assert cfg.type == "LCG" and cfg.m >= 256
    assert cfg.dtype == "float32" and cfg.save_correctness


# What the README's Quickstart section says of each flag of the file, as a phrase with the file's values
# ({} in order of the flags named). Every flag of the file needs an entry: a flag added to the recipe and
# not described fails test_the_readme_describes_every_flag_of_the_file_with_its_value.
DESCRIBED = {
    ("--type", "--m"): "an {} with m = {}:",
    ("--n_a", "--n_c"): "{} x {} (a, c) pairs for training",
    ("--n_test_a", "--n_test_c"): "the other {} x {} for testing",
    ("--n_example",): "{} start states per pair",
    ("--seq_len",): "sequences of {} numbers",
    ("--n_layer", "--n_head", "--n_embd"): "a {}-layer, {}-head, {}-wide",
    ("--num_steps", "--batch_size"): "{} updates of {} sequences",
    ("--beta2", "--weight_decay"): "beta2 = {} and weight decay {}",
    ("--warm_steps", "--lr_trgt"): "warmed up over {} updates to {}",
    ("--lr_min",): "cosine-decayed to {}",
    ("--dtype",): "{} on every machine",
    ("--eval_interval",): "an evaluation every {} updates",
    ("--results_dir",): "files in `{}`",
    ("--save_correctness",): "the accuracy-by-position plot `correctness_<base>.png`",
}


def test_the_readme_describes_every_flag_of_the_file_with_its_value():
    """The table and the lines under the command must not drift from the file: each flag of the file is
    described, with the file's value, in the README's Quickstart section."""
    argv = quickstart_argv()
    with open(README, encoding="utf-8") as f:
        section = f.read().split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    described = " ".join(section.replace("|", " ").split())
    in_file = {word for word in argv if word.startswith("--")}
    assert in_file == {name for names in DESCRIBED for name in names}, \
        f"flags of {QUICKSTART_ARGS} with no description here, or described and not in it"
    for names, phrase in DESCRIBED.items():
        expected = phrase.format(*(flag(argv, name) for name in names))
        assert expected in described, f"the README's Quickstart does not say {expected!r} ({', '.join(names)})"


def test_the_quickstart_runs_its_first_updates(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "quickstart"
    short = [*QUICKSTART[1:], "--num_steps", "3", "--eval_interval", "1", "--results_dir", str(out)]
    assert prng_train_lowmem.main(short) == 0
    tables = glob.glob(str(out / "eval_*.tab"))
    assert len(tables) == 1
    rows = pd.read_csv(tables[0], sep="\t", index_col=0)
    assert list(rows["step"]) == [0, 1, 2, 3]
    assert rows["train_loss"].iloc[1:].notna().all()
    assert rows["test_last_acc"].between(0, 1).all()
    assert glob.glob(str(out / "correctness_*.png"))


def test_the_seed_benchmark_runs_the_file_by_default(tmp_path, monkeypatch):
    launched = []

    def fake_run(command, **kwargs):
        launched.append((command, kwargs["cwd"]))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(quickstart_seeds.subprocess, "run", fake_run)
    assert quickstart_seeds.main(["--seeds", "3", "--jobs", "1", "--results_dir", str(tmp_path)]) == 0
    ((command, cwd),) = launched
    assert command[1:3] == QUICKSTART and cwd == REPO
    assert command[3:7] == ["--main_seed", "3", "--data_seed", "1"]


def test_the_seed_benchmark_sets_the_thread_count_or_leaves_it_to_the_script(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    one = quickstart_seeds.run_env(1)
    assert (one["OMP_NUM_THREADS"], one["MKL_NUM_THREADS"]) == ("1", "1")
    as_typed = quickstart_seeds.run_env(0)  # the command as written: the script's start-up rule decides
    assert "OMP_NUM_THREADS" not in as_typed and "MKL_NUM_THREADS" not in as_typed
    assert as_typed["PATH"] == os.environ["PATH"]


def test_the_training_benchmark_takes_its_quickstart_case_from_the_file(tmp_path):
    assert bench_train.shapes()["quickstart"] == bench_train.quickstart_case()[0]
    cfg = prng_train_lowmem.build_parser().parse_args(quickstart_argv())
    (case,) = [c for c in bench_train.cases()["cpu"] if c[0] == "quickstart"]
    assert case[1:3] == (cfg.batch_size, cfg.batch_size)
    # it reads the file: a changed file changes the case
    changed = tmp_path / "changed.args"
    with open(os.path.join(REPO, QUICKSTART_ARGS), encoding="utf-8") as f:
        changed.write_text(f.read() + "--n_embd 96\n--batch_size 16\n")
    shape, batch, micro = bench_train.quickstart_case(str(changed))
    assert shape[5] == 96 and (batch, micro) == (16, 16)
    quickstart = bench_train.shapes()["quickstart"]
    assert shape[:5] == quickstart[:5] and shape[6:] == quickstart[6:]


def test_the_gpu_check_and_the_cuda_tests_run_the_file():
    with open(os.path.join(REPO, "bench", "gpu_check.sh"), encoding="utf-8") as f:
        (step,) = [shlex.split(line) for line in f if line.startswith("step quickstart_cuda ")]
    at = step.index(QUICKSTART[0])
    assert step[at:at + 2] == QUICKSTART
    assert test_cuda.LEARN[0] == "@" + os.path.join(REPO, QUICKSTART_ARGS)


def test_no_file_carries_a_copy_of_the_quickstarts_flags():
    recipe = recipe_pairs()
    found = {}
    for path in repo_files((".py", ".sh", ".md", ".yaml", ".yml", ".args", ".toml", ".txt")):
        if os.path.relpath(path, REPO) != QUICKSTART_ARGS:
            counts = copies(path.read_text(encoding="utf-8"), recipe)
            if counts:
                found[os.path.relpath(path, REPO)] = counts
    assert not found, f"copies of {QUICKSTART_ARGS}'s flags (file: pairs of its {len(recipe)}): {found}"


@pytest.mark.parametrize("form", ["shell", "shell, wrapped", "python list"])
def test_the_copy_check_finds_a_copy_in_each_form(form):
    argv = quickstart_argv()
    text = {"shell": "python prng_train_lowmem.py " + shlex.join(argv),
            "shell, wrapped": shlex.join(argv).replace(" --", " \\\n    --"),
            "python list": "ARGS = [" + ",\n        ".join(f'"{w}"' for w in argv) + "]"}[form]
    recipe = recipe_pairs()
    assert copies(text, recipe) == [len(recipe)]
    # an older recipe with other optimiser values is still a copy (as bench/gpu_check.sh once carried)
    stale = text.replace(flag(argv, "--lr_trgt"), "8e-3").replace(flag(argv, "--num_steps"), "2600")
    assert copies(stale, recipe) == [len(recipe) - 2]
