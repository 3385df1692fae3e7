"""Result base names: configurations run through both scripts' name builders give the original's names.

Each expected name is written out by hand from the original's patterns ("Output files" of
docs/single_modulus.md and docs/curriculum.md), not computed by our code: the single-modulus name after
`setup_config`, the curriculum name after `load_config` and `setup_config`. The cases cover the original's
quirks that names keep: case-sensitive type checks (`lcg` gets `_cb0` and, in the single script, the base
2^k), control bits as written (`_cb1_ 2`, `_cb1, 2`), the raw sum of phase_steps (`-1` counts as -1) and a
YAML integer weight decay (`_wd0`). Only configurations whose name the original and this project agree on
are here (docs/differences.md lists the others, e.g. the curriculum's default base for PCG types).
"""
import os
import shlex

import pytest
import yaml

import curriculum_lowmem
from tests.helpers import single_base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The original README's command, as it wrote it.
README_COMMAND = ("--eval_interval 2000 --num_workers 8 --m 262144 --type XSLRR --n_layer 4 --n_head 8 --n_embd 1024 "
                  "--seq_len 513 --batch_size 512 --grad_acc_steps 1 --lr_trgt 0.0005 --weight_decay 0.1 --data_seed 1 "
                  "--main_seed 1 --n_a 1024 --n_c 1024 --n_example 1 --n_test_a 128 --n_test_c 64 --num_steps 400000 "
                  "--warm_steps 5000 --save_correctness --save_params --save_checkpoints --digits 1 --base 512 "
                  "--bits_to_keep 9 --control_bits 3").split()

SINGLE_CASES = {
    "readme_command": (
        README_COMMAND,
        "XSLRR_m262144_cb3_kp9_vs512_sl513_b512_nd1_na1024_nc1024_ne1_n1024_h8_d4_rope_dI1_I1_lr0.000500_Twarm5000"
        "_T400000_B512_wd0.1"),
    # lower case: not exactly LCG, so `_cb` is written and the default base is 2^k = 2^10, not m
    "lower_case_lcg": (
        ["--type", "lcg", "--m", "1000", "--control_bits", "0", "--seq_len", "33"],
        "lcg_m1000_cb0_kp10_vs1024_sl33_b1024_nd1_na32_nc32_ne1_n64_h1_d1_rope_dI1_I1_lr0.001000_Twarm10_T100_B32"
        "_wd0.5"),
    # commas become `_`, the space stays
    "control_bits_with_a_space": (
        ["--type", "XSHRR", "--m", "65536", "--control_bits", "1, 2", "--bits_to_keep", "8", "--seq_len", "65"],
        "XSHRR_m65536_cb1_ 2_kp8_vs256_sl65_b256_nd1_na32_nc32_ne1_n64_h1_d1_rope_dI1_I1_lr0.001000_Twarm10_T100_B32"
        "_wd0.5"),
    # TLCG has no `_cb`; vocab_size below the base is raised to it; abacus; B = batch x accumulation;
    # the weight decay flag is a float
    "tlcg_abacus": (
        ["--type", "TLCG", "--m", "4096", "--bits_to_keep", "6", "--base", "8", "--digits", "2", "--vocab_size", "4",
         "--no_rope", "--seq_len", "17", "--n_embd", "32", "--n_head", "2", "--n_layer", "2", "--n_example", "2",
         "--batch_size", "4", "--grad_acc_steps", "3", "--lr_trgt", "3e-4", "--weight_decay", "0", "--warm_steps", "0",
         "--num_steps", "50", "--data_seed", "7", "--main_seed", "9"],
        "TLCG_m4096_kp6_vs8_sl17_b8_nd2_na32_nc32_ne2_n32_h2_d2_abacus_dI7_I9_lr0.000300_Twarm0_T50_B12_wd0.0"),
    # a `+`-join keeps its `+`; LCG in it: k = n and base m; learned positions with one digit: no suffix
    "joined_types_learned_positions": (
        ["--type", "LCG+XSLRR", "--m", "1024", "--control_bits", "1,2", "--no_rope", "--seq_len", "9"],
        "LCG+XSLRR_m1024_cb1_2_kp10_vs1024_sl9_b1024_nd1_na32_nc32_ne1_n64_h1_d1_dI1_I1_lr0.001000_Twarm10_T100_B32"
        "_wd0.5"),
}


def original_readme_command() -> list[str]:
    """The flags of the first command of docs/single_modulus.md, the original README's example."""
    with open(os.path.join(REPO, "docs", "single_modulus.md"), encoding="utf-8") as fh:
        section = fh.read().split("## The original README's example", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:2] == ["python", "prng_train_lowmem.py"]
    return words[2:]


def test_the_docs_give_the_original_readme_command():
    assert original_readme_command() == README_COMMAND


@pytest.mark.parametrize("case", list(SINGLE_CASES))
def test_single_modulus_names_are_the_originals(case):
    args, original = SINGLE_CASES[case]
    assert single_base(args) == original


SMALL = {"model": {"n_layer": 1, "n_head": 2, "n_embd": 32},
         "data": {"seq_len": 9, "n_a": 4, "n_c": 4, "n_test_a": 2, "n_test_c": 2}}

CURRICULUM_YAML_CASES = {
    # lower-case lcg: `_cb0` (the default control bits); phases 4 and -1: `_T3`; `weight_decay: 0` is an
    # integer: `_wd0`; moduli in the YAML's order; only phases with both weight lists get a token
    "lower_case_rest_phase_integer_weight_decay": (
        {**SMALL, "data": {**SMALL["data"], "type": "lcg"},
         "curriculum": {"moduli": [1024, 256], "phases": [
             {"phase_steps": 4, "transition_steps": 2, "transition": "cosine", "start_weights": [1, 0],
              "end_weights": [0.5, 0.5]},
             {"phase_steps": -1, "end_weights": [0, 1]}]},
         "training": {"batch_size": 8, "lr_trgt": "1e-3", "weight_decay": 0, "eval_interval": 2}},
        "lcg_premNone_moduli1024_256_transcosine_cp1s4u0t2dconsta1.0,0.0-0.5,0.5_n32_h2_d1_na4_nc4_ne1_vs1024_sl9_cb0"
        "_T3_B8_lr0.001_wd0_dI1_I1"),
    # `weight_decay: 0.0` stays a float; TLCG has no `_cb`; no phase token, so the name takes
    # curriculum.transition_type; pretrain_m is written
    "float_weight_decay_pretrain_m": (
        {**SMALL, "data": {**SMALL["data"], "type": "TLCG", "control_bits": 2, "base": 1024},
         "curriculum": {"moduli": [256, 1024], "transition_type": "cosine", "bits_to_keep": [6, 8],
                        "phases": [{"phase_steps": 5, "end_weights": [1, 1]}]},
         "training": {"batch_size": 8, "lr_trgt": 0.5, "weight_decay": 0.0},
         "pretrained": {"pretrain_m": 65536}, "seeds": {"main_seed": 4, "data_seed": 6}},
        "TLCG_prem65536_moduli256_1024_transcosine_n32_h2_d1_na4_nc4_ne1_vs1024_sl9_T5_B8_lr0.5_wd0.0_dI6_I4"),
}


def curriculum_base(argv) -> str:
    cfg = curriculum_lowmem.load_config([str(a) for a in argv])
    return curriculum_lowmem.base_name(curriculum_lowmem.setup_config(cfg, 1, log=lambda *a, **k: None))


def test_readme_yaml_name_is_the_originals():
    assert curriculum_base(["--config", os.path.join(REPO, "configs", "curriculum.yaml")]) == (
        "XSLRR_premNone_moduli65536_262144_transexp_cp1s4000u500t4000dconsta0.001,0.999-0.0,1.0"
        "_p2s1000u0t0dcosa0.0,1.0-0.0,1.0_n1024_h8_d4_na1024_nc1024_ne1_vs1024_sl513_cb3_T5000_B256_lr0.0005_wd0.1"
        "_dI2_I1")


@pytest.mark.parametrize("case", list(CURRICULUM_YAML_CASES))
def test_curriculum_yaml_names_are_the_originals(case, tmp_path):
    config, original = CURRICULUM_YAML_CASES[case]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert curriculum_base(["--config", path]) == original


def test_curriculum_flag_mode_name_is_the_originals():
    # No YAML: no prem; the moduli sorted; the control bits string as written (commas and space kept);
    # the weight decay flag is a float. (--base 1024: the original's default base, max(moduli).)
    phases = ('[{"phase_steps": 3, "warmup_steps": 1, "lr_decay": "cosine", "transition": "step", '
              '"transition_steps": 2, "start_weights": [1, 0], "end_weights": [0, 1]}]')
    argv = ["--moduli", "1024,256", "--type", "XSLRR", "--control_bits", "1, 2", "--custom_phases", phases,
            "--base", "1024", "--weight_decay", "0", "--n_layer", "1", "--n_head", "2", "--n_embd", "32",
            "--seq_len", "9", "--batch_size", "4", "--grad_acc_steps", "2", "--lr_trgt", "2e-4", "--data_seed", "3",
            "--main_seed", "5", "--n_a", "4", "--n_c", "4", "--n_test_a", "2", "--n_test_c", "2"]
    assert curriculum_base(argv) == ("XSLRR_moduli256_1024_transstep_cp1s3u1t2dcosa1.0,0.0-0.0,1.0_n32_h2_d1_na4_nc4"
                                     "_ne1_vs1024_sl9_cb1, 2_T3_B8_lr0.0002_wd0.0_dI3_I5")
