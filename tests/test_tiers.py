"""Two test tiers and what pyproject.toml says of the repository.

`python -m pytest` runs everything (README, "Tests"; .ci/run): a missing Slurm or C++ compiler fails
there, naming what is missing. `python -m pytest -m "not slow"` is the fast tier for iterating: it leaves out
the tests marked `slow` (seconds each, or Slurm, a compiler or root) and needs none of these. Every module
keeps at least one fast end-to-end test, a test that runs the module's code the way a run uses it (through
a script, analyze.py or the benchmark, in this process; W&B as a process), listed in FAST_END_TO_END.
"""
import importlib
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import slow_files_first
from tests.helpers import REPO, repo_files

IMPORTS_AS_BENCH = "test_bench.py::test_each_bench_module_imports_as_bench_dot_its_name_and_documents_that_form"
# module -> one fast test (under tests/) that runs it end to end (a test function: all its cases are fast).
FAST_END_TO_END = {
    "prng_train_lowmem.py": "test_quickstart.py::test_the_quickstart_runs_its_first_updates",
    "curriculum_lowmem.py": "test_curriculum.py::test_no_yaml_run_end_to_end_batches_follow_the_refreshed_weights",
    "analyze.py": "test_analysis.py::test_eval_regenerates_the_runs_test_set",
    "utils/bounds.py": "test_inputs.py::test_bad_input_is_one_line_exit_2_and_touches_nothing",
    "utils/checkpoint.py": "test_train_single.py::test_resume_reproduces_the_uninterrupted_run_exactly",
    "utils/config.py": "test_quickstart.py::test_the_quickstart_parses_and_validates_as_an_lcg_tested_on_unseen_pairs",
    "utils/curriculum.py": "test_curriculum.py::test_no_yaml_run_end_to_end_batches_follow_the_refreshed_weights",
    "utils/curriculum_config.py": "test_curriculum.py::test_exclusions_reach_the_run_through_main",
    "utils/data.py": "test_train_single.py::test_resume_reproduces_the_uninterrupted_run_exactly",
    "utils/distributed.py": "test_distributed.py::test_accumulation_all_reduces_once_per_update",
    "utils/evaluation.py": "test_train_single.py::test_resume_reproduces_the_uninterrupted_run_exactly",
    "utils/gpt2.py": "test_analysis.py::test_eval_of_the_final_checkpoint_reproduces_the_runs_last_evaluation",
    "utils/int_list.py": "test_curriculum.py::test_no_yaml_mode_takes_the_flags_and_sorts_the_moduli",
    "utils/params.py": "test_train_single.py::test_resume_reproduces_the_uninterrupted_run_exactly",
    "utils/plots.py": "test_curriculum.py::test_correctness_npz_training_ac_values_and_plots",
    "utils/precision.py": "test_analysis.py::test_eval_of_the_final_checkpoint_reproduces_the_runs_last_evaluation",
    "utils/pretrained.py": "test_inputs.py::test_pretrained_of_another_depth_through_the_script",
    "utils/prng.py": "test_analysis.py::test_eval_of_the_final_checkpoint_reproduces_the_runs_last_evaluation",
    "utils/results.py": "test_train_single.py::test_resume_reproduces_the_uninterrupted_run_exactly",
    "utils/run.py": "test_train_single.py::test_resume_reproduces_the_uninterrupted_run_exactly",
    "utils/preemption.py": "test_runs.py::test_a_stop_inside_an_update_drops_it_and_resume_is_exact",
    "utils/runtime.py": "test_train_single.py::test_resume_reproduces_the_uninterrupted_run_exactly",
    "utils/schedules.py": "test_train_single.py::test_lr_applied_at_every_update_follows_the_schedule",
    "utils/seeds.py": "test_train_single.py::test_resume_reproduces_the_uninterrupted_run_exactly",
    "utils/settings.py": "test_quickstart.py::test_the_quickstart_parses_and_validates_as_an_lcg_tested_on_unseen_pairs",
    "utils/threads.py": "test_threads.py::test_the_suite_pins_one_thread_the_way_a_user_does",
    "utils/tokens.py": "test_analysis.py::test_eval_of_a_two_digit_abacus_model_matches_the_training_positions_file",
    "utils/trainer.py": "test_train_single.py::test_resume_reproduces_the_uninterrupted_run_exactly",
    "utils/wandb_utils.py": "test_wandb.py::test_single_run_history_matches_the_eval_tables",
    "utils/analysis/baselines.py": "test_analysis.py::test_eval_regenerates_the_runs_test_set",
    "utils/analysis/bit_accuracy.py": "test_analysis.py::test_eval_regenerates_the_runs_test_set",
    "utils/analysis/embeddings.py": "test_analysis.py::test_embed_end_to_end",
    "utils/analysis/loading.py": "test_analysis.py::test_eval_reads_params_files_and_the_originals_files",
    "utils/analysis/positions.py": "test_analysis.py::test_eval_on_fresh_and_unseen_settings",
    "utils/analysis/probes.py": "test_analysis.py::test_layers_end_to_end",
    "utils/analysis/scaling.py": "test_analysis.py::test_scaling_fits_the_exponent",
    "bench/quickstart_seeds.py": "test_quickstart.py::test_the_seed_benchmark_runs_the_file_by_default",
    "bench/bench_train.py": "test_quickstart.py::test_the_training_benchmark_takes_its_quickstart_case_from_the_file",
    "bench/bench_baselines.py": "test_bench.py::test_the_baseline_benchmark_runs_end_to_end_at_a_tiny_size",
    "bench/bench_data.py": "test_bench.py::test_the_data_benchmark_runs_end_to_end_at_a_tiny_size",
    "bench/bench_threads.py": "test_bench.py::test_a_thread_benchmark_cell_runs_end_to_end_in_this_process",
    "bench/faults.py": IMPORTS_AS_BENCH,
    "bench/ranks.py": IMPORTS_AS_BENCH,
}


def modules() -> set[str]:
    """The repository's modules: the top-level scripts and every non-package file of its packages."""
    root = Path(REPO)
    found = {p.name for p in root.glob("*.py")}
    for package in ("utils", "bench"):
        found |= {str(p.relative_to(root)) for p in (root / package).rglob("*.py")
                  if p.name != "__init__.py" and "__pycache__" not in p.parts}
    return found


def marks(obj) -> set[str]:
    """The names of the marks on a test function or module (a module's pytestmark may be one mark or a list)."""
    found = getattr(obj, "pytestmark", [])
    return {m.name for m in (found if isinstance(found, list) else [found])}


def test_every_module_has_a_fast_end_to_end_test():
    assert set(FAST_END_TO_END) == modules()


@pytest.mark.parametrize("test", sorted(set(FAST_END_TO_END.values())))
def test_each_listed_test_exists_and_is_not_slow(test):
    path, name = test.split("::")
    module = importlib.import_module("tests." + path.removesuffix(".py"))
    function = getattr(module, name)
    assert callable(function) and name.startswith("test_")
    assert "slow" not in marks(module) | marks(function), f"{test} is marked slow"


def test_the_slow_marker_is_declared_and_a_missing_toolchain_fails():
    """`slow` is a declared marker (--strict-markers refuses others); the tests needing Slurm or a compiler are
    slow and fail, not skip, without it."""
    settings = tomllib.loads(Path(REPO, "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert {line.split(":")[0] for line in settings["markers"]} == {"slow", "cuda"}
    assert "--strict-markers" in settings["addopts"] and settings["testpaths"] == ["tests"]
    # workers take whole files in the order tests/conftest.py gives them, not xdist's own (most tests first)
    assert {"--dist", "loadfile", "--no-loadscope-reorder"} <= set(settings["addopts"].split())
    slurm = importlib.import_module("tests.test_slurm")
    accel = importlib.import_module("tests.test_accel_cpu")
    assert "slow" in marks(slurm)
    assert "slow" in marks(accel.test_torchrun_two_gloo_ranks_with_compile_match_one_eager_rank)
    assert "slow" in marks(accel.test_compiled_bf16_run_resumed_at_half_way_gives_the_same_tables)


def test_the_package_layout_names_the_repositorys_packages_and_scripts():
    layout = tomllib.loads(Path(REPO, "pyproject.toml").read_text())["tool"]["setuptools"]
    root = Path(REPO)
    packages = {str(p.parent.relative_to(root)).replace("/", ".") for p in repo_files(("__init__.py",))}
    assert set(layout["packages"]) == packages - {"tests"}
    assert set(layout["py-modules"]) == {p.stem for p in root.glob("*.py")}


def test_the_files_with_the_most_slow_tests_run_first_each_keeping_its_order():
    def item(module, name, slow):
        return SimpleNamespace(module=SimpleNamespace(__name__=module), name=name,
                               get_closest_marker=lambda mark, slow=slow: object() if slow and mark == "slow" else None)
    items = [item("a", "a1", False), item("a", "a2", False), item("b", "b1", True), item("b", "b2", False),
             item("c", "c1", True), item("c", "c2", True), item("d", "d1", False)]
    slow_files_first(items)
    assert [i.name for i in items] == ["c1", "c2", "b1", "b2", "a1", "a2", "d1"]
