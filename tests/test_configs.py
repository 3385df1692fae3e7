"""Every file under configs/ is read and validated by its script's own loader, as a run starting from it
would be (nothing is built or trained). The files are found by their suffix: `.yaml`/`.yml` are
curriculum_lowmem.py configs (`--config FILE`); `.args` files hold prng_train_lowmem.py flags, split
on whitespace as a shell splits `$(cat FILE)`. A file of any other kind fails: it has no parser."""
import glob
import os

import pytest

import curriculum_lowmem
import prng_train_lowmem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*"), recursive=True)
                 if os.path.isfile(p))


def load_curriculum(path):
    cfg = curriculum_lowmem.load_config(["--config", path])
    return curriculum_lowmem.setup_config(cfg, 1, log=lambda *a, **k: None)


def load_single(path):
    with open(path, encoding="utf-8") as f:
        words = f.read().split()
    cfg = prng_train_lowmem.build_parser().parse_args(words)
    return prng_train_lowmem.setup_config(cfg, 1, log=lambda *a, **k: None)


LOADERS = {".yaml": load_curriculum, ".yml": load_curriculum, ".args": load_single}


def test_there_are_configs_to_check():
    assert any(p.endswith(".yaml") for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS)
def test_every_config_parses_and_validates_with_its_scripts_loader(path, monkeypatch):
    suffix = os.path.splitext(path)[1]
    assert suffix in LOADERS, f"{path}: no script reads {suffix or 'suffix-less'} files (known: {', '.join(LOADERS)})"
    monkeypatch.chdir(REPO)  # as a user runs it, from the repository root
    cfg = LOADERS[suffix](path)
    assert cfg.num_steps > 0 and cfg.seq_len >= 2
