"""The README's command 1 (the quickstart) stays runnable: its training command is taken from the
README's code block, parsed and validated by the script's own parser, and its first updates run
(with --num_steps overridden, a temporary results directory, nothing timed)."""
import glob
import importlib.util
import os

import pandas as pd
import pytest

import curriculum_lowmem
import prng_train_lowmem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")

_spec = importlib.util.spec_from_file_location("quickstart_seeds", os.path.join(REPO, "bench", "quickstart_seeds.py"))
quickstart_seeds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart_seeds)

SCRIPTS = {"prng_train_lowmem.py": prng_train_lowmem, "curriculum_lowmem.py": curriculum_lowmem}


def command_one() -> tuple[str, list[str]]:
    words = quickstart_seeds.readme_command(README)
    script = os.path.basename(words[1])
    return script, words[2:]


def flag(argv: list[str], name: str) -> str | None:
    value = None
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def test_readme_command_one_is_found_and_names_a_training_script():
    script, argv = command_one()
    assert script in SCRIPTS
    assert argv, "command 1 has no flags"
    # every path it names (a --config YAML) is in the repository
    config = flag(argv, "--config")
    if config is not None:
        assert os.path.isfile(os.path.join(REPO, config)), f"command 1 names {config}, which does not exist"


def test_readme_command_one_parses_and_validates():
    script, argv = command_one()
    if script == "prng_train_lowmem.py":
        cfg = prng_train_lowmem.build_parser().parse_args(argv)
        prng_train_lowmem.setup_config(cfg, 1, log=lambda *a, **k: None)
        m = cfg.m
        assert cfg.type.upper() == "LCG"
    else:
        os.chdir(REPO)
        cfg = curriculum_lowmem.load_config(argv)
        curriculum_lowmem.setup_config(cfg, 1, log=lambda *a, **k: None)
        m = max(cfg.moduli)
    # the quickstart's promise: an LCG with m >= 256, tested on unseen (a, c)
    assert m >= 256


def test_readme_quickstart_paragraph_names_the_same_flags():
    """The description below the command must not drift from it: the numbers it quotes for the
    schedule are the command's."""
    script, argv = command_one()
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.find("**1. "):text.find("## Single modulus")]
    steps = flag(argv, "--num_steps")
    if steps is not None:
        assert f"{int(steps):,}".replace(",", "") in section.replace(",", "")
    # the description's optimiser settings are the command's (as phrases, not bare numbers, which
    # would match anywhere in the tables)
    described = " ".join(section.split())
    for name, phrase in (("--weight_decay", "weight decay {}"), ("--beta2", "beta2 = {}"),
                         ("--warm_steps", "warmed up over {} updates"), ("--lr_trgt", "updates to {}"),
                         ("--lr_min", "cosine-decayed to {}")):
        value = flag(argv, name)
        if value is not None:
            expected = phrase.format(value)
            assert expected in described, f"the quickstart description does not say {expected!r}"


def test_readme_command_one_runs_its_first_updates(tmp_path, monkeypatch):
    script, argv = command_one()
    monkeypatch.chdir(REPO)
    out = tmp_path / "quickstart"
    if script == "prng_train_lowmem.py":
        short = argv + ["--num_steps", "3", "--eval_interval", "1", "--results_dir", str(out)]
        assert prng_train_lowmem.main(short) == 0
        tables = glob.glob(str(out / "eval_*.tab"))
        assert len(tables) == 1
        rows = pd.read_csv(tables[0], sep="\t", index_col=0)
        assert list(rows["step"]) == [0, 1, 2, 3]
        assert rows["train_loss"].iloc[1:].notna().all()
        assert rows["test_last_acc"].between(0, 1).all()
        if "--save_correctness" in argv:
            assert glob.glob(str(out / "correctness_*.png"))
    else:
        pytest.fail("command 1 is a curriculum run: give this test a way to run its first updates")


def test_readme_command_one_extraction_fails_on_a_broken_block(tmp_path):
    """The extraction really depends on the README: without the command it raises."""
    broken = tmp_path / "README.md"
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.find("**1. ")
    broken.write_text(text[:start] + text[start:].replace("prng_train_lowmem.py", "missing.py")
                      .replace("curriculum_lowmem.py", "missing.py"), encoding="utf-8")
    with pytest.raises(ValueError):
        quickstart_seeds.readme_command(str(broken))
