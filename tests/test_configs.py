"""Every file under configs/ is read and validated by its script's own loader, as a run starting from it
would be (nothing is built or trained). The files are found by their suffix: `.yaml`/`.yml` are
curriculum_lowmem.py configs (`--config FILE`); `.args` files hold prng_train_lowmem.py flags, one flag
and its value per line with `#` comments, read as the script reads `@FILE`. A file of any other kind fails:
it has no parser."""
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
    cfg = prng_train_lowmem.build_parser().parse_args(["@" + path])
    return prng_train_lowmem.setup_config(cfg, 1, log=lambda *a, **k: None)


LOADERS = {".yaml": load_curriculum, ".yml": load_curriculum, ".args": load_single}


def test_there_are_configs_to_check():
    assert any(p.endswith(".yaml") for p in CONFIGS) and any(p.endswith(".args") for p in CONFIGS)


def test_an_args_file_takes_comments_blank_lines_and_quoted_values(tmp_path, monkeypatch):
    path = tmp_path / "run.args"
    path.write_text("# a comment\n\n--type XSLRR  # the generator\n--control_bits '1, 2'\n--m 1024\n"
                    "--num_steps 7\n--save_params\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_single("run.args")
    assert (cfg.type, cfg.control_bits, cfg.m, cfg.num_steps, cfg.save_params) == ("XSLRR", "1, 2", 1024, 7, True)


def test_an_args_file_with_an_unclosed_quote_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "run.args"
    path.write_text("--type 'LCG\n")
    with pytest.raises(SystemExit) as stop:
        load_single(str(path))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "--type 'LCG" in err


@pytest.mark.parametrize("path", CONFIGS)
def test_every_config_parses_and_validates_with_its_scripts_loader(path, monkeypatch):
    suffix = os.path.splitext(path)[1]
    assert suffix in LOADERS, f"{path}: no script reads {suffix or 'suffix-less'} files (known: {', '.join(LOADERS)})"
    monkeypatch.chdir(REPO)  # as a user runs it, from the repository root
    cfg = LOADERS[suffix](path)
    assert cfg.num_steps > 0 and cfg.seq_len >= 2
