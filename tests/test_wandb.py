"""W&B in both scripts.

Each script is run as a user runs it, logging to an offline W&B run in the test's directory (no
network is touched), and the run is read back from its `.wandb` file: the run's name, project and
tags, its config, every logged history row against the eval table the script wrote, the summary and
the final accuracy-by-position image. Asking for W&B without the package installed is an error
(tests/test_inputs.py, with the other command-line bad input).
"""

import json
import math
import os
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import TINY
from utils.schedules import single_lr

REPO = Path(__file__).resolve().parent.parent
SECRET = "not-a-real-key-0123456789"


def offline_env(tmp_path: Path) -> dict:
    """Offline W&B with every W&B directory inside tmp_path."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
           "WANDB_DATA_DIR": str(tmp_path / "wandb-data"), "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_API_KEY", None)
    return env


def run_script(script: str, args: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def assert_ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# --------------------------------------------------------------------------------------------------
# Reading an offline run back. The .wandb file is a LevelDB-style log: a 7-byte header (":W&B",
# magic, version), then 32 KiB blocks of chunks (crc32c, length, type) holding protobuf Records.

@dataclass
class OfflineRun:
    directory: Path
    raw: bytes
    run: object = None  # the RunRecord: project, display_name, tags, notes
    config: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)  # step -> {key: value}
    summary: dict = field(default_factory=dict)


def wandb_records(data: bytes):
    from wandb.proto import wandb_internal_pb2 as pb
    assert data[:4] == b":W&B", f"not a .wandb file (starts {data[:7]!r})"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def items(updates) -> dict:
    """History, summary or config items as a dict; a nested key (an image's fields) as nested dicts."""
    out = {}
    for item in updates:
        keys = [item.key] if item.key else list(item.nested_key)
        target = out
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = json.loads(item.value_json)
    return out


def read_offline_run(wandb_dir: Path) -> OfflineRun:
    runs = sorted(wandb_dir.glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline run in {wandb_dir}, found {runs}"
    files = list(runs[0].glob("run-*.wandb"))
    assert len(files) == 1, files
    out = OfflineRun(runs[0], files[0].read_bytes())
    for record in wandb_records(out.raw):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.run = record.run
            out.config.update(items(record.run.config.update))
        elif kind == "config":
            out.config.update(items(record.config.update))
        elif kind == "history":
            row = items(record.history.item)
            out.history.setdefault(row["_step"], {}).update(row)
        elif kind == "summary":
            out.summary.update(items(record.summary.update))
    return out


def assert_close(logged: dict, expected: dict, step):
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert key not in logged, f"step {step}: {key} logged although the table has no value"
        else:
            assert key in logged, f"step {step}: {key} not logged (logged: {sorted(logged)})"
            assert logged[key] == pytest.approx(value, rel=1e-9, abs=1e-12), f"step {step}: {key}"


def assert_final_image(run: OfflineRun, step: int):
    image = run.history[step].get("final_correctness/plot")
    assert image is not None and image["_type"] == "image-file", run.history[step]
    assert (run.directory / "files" / image["path"]).is_file()


# --------------------------------------------------------------------------------------------------
# prng_train_lowmem.py with the W&B flags: two types for the per-type keys, the correctness plot.

SINGLE_ARGS = ["--type", "LCG+TLCG", "--m", "256", *TINY, "--num_steps", "4", "--eval_interval", "2",
               "--warm_steps", "1", "--save_correctness", "--use_wandb", "--wandb_offline",
               "--wandb_project", "prng_test", "--wandb_name", "tiny-single", "--wandb_tags", "a, b",
               "--wandb_notes", "a test run", "--wandb_api_key", SECRET]
SINGLE_BASE = "LCG+TLCG_m256_cb0_kp8_vs256_sl9_b256_nd1_na4_nc4_ne1_n32_h2_d1_rope_dI1_I1_lr0.001000_Twarm1_T4_B4_wd0.5"


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wandb_single")
    result = run_script("prng_train_lowmem.py", [*SINGLE_ARGS, "--results_dir", tmp / "results"], offline_env(tmp))
    assert_ok(result)
    return tmp / "results", read_offline_run(tmp / "wandb"), result


def test_single_run_names_project_tags_and_notes(single_run):
    _, run, result = single_run
    assert (run.run.project, run.run.display_name, list(run.run.tags), run.run.notes) == \
        ("prng_test", "tiny-single", ["a", "b"], "a test run")
    assert "W&B run: tiny-single (offline" in result.stdout


def test_single_run_config_has_the_real_world_size_device_and_effective_batch(single_run):
    _, run, _ = single_run
    c = run.config
    assert (c["world_size"], c["device"], c["ddp"], c["effective_batch_size"]) == (1, "cpu", False, 4)
    assert (c["type"], c["m"], c["n_embd"], c["num_steps"], c["lr_trgt"], c["wandb_offline"]) == \
        ("LCG+TLCG", 256, 32, 4, 1e-3, True)
    assert {"python_version", "torch_version", "cpu_count", "total_ram_gb", "cuda_available"} <= set(c)


def test_the_api_key_is_not_stored_in_the_run(single_run):
    _, run, _ = single_run
    assert "wandb_api_key" not in run.config
    assert SECRET.encode() not in run.raw  # neither in the config nor in W&B's record of the command line


def test_single_run_history_matches_the_eval_tables(single_run):
    results, run, _ = single_run
    table = pd.read_csv(results / f"eval_{SINGLE_BASE}.tab", sep="\t", index_col=0)
    per_type = pd.read_csv(results / f"per_type_eval_{SINGLE_BASE}.csv")
    assert sorted(run.history) == table["step"].tolist() == [0, 2, 4]
    for row, type_row in zip(table.to_dict("records"), per_type.to_dict("records")):
        step, logged = int(row["step"]), run.history[int(row["step"])]
        expected = {f"learning_curves/{k}": v for k, v in row.items() if k != "step"}
        expected.update({f"per_type/{label}/{k}": type_row[f"{label}_{k}"]
                         for label in ("LCG", "TLCG") for k in ("loss", "acc", "last_acc")})
        assert_close(logged, expected, step)
        assert 0 <= logged["system/cpu_percent"] <= 100 * os.cpu_count()
        if step == 0:
            assert "training/step" not in logged and "learning_curves/learning_rate" not in logged
        else:
            lr = single_lr(step, lr_trgt=1e-3, lr_min=1e-7, warm_steps=1, num_steps=4)  # lr_min after the last
            assert_close(logged, {"training/step": step, "learning_curves/learning_rate": lr}, step)
            assert logged["training/epoch"] > 0


def test_single_run_final_image_and_summary(single_run):
    results, run, _ = single_run
    assert_final_image(run, 4)
    table = pd.read_csv(results / f"eval_{SINGLE_BASE}.tab", sep="\t", index_col=0)
    assert run.summary["training/final_step"] == 4
    assert run.summary["training/total_time_seconds"] > 0
    assert run.summary["learning_curves/test_loss"] == pytest.approx(table["test_loss"].iloc[-1], rel=1e-9)


# --------------------------------------------------------------------------------------------------
# curriculum_lowmem.py with W&B set in the YAML's wandb section.

CURRICULUM_YAML = {
    "experiment_name": "wandb_test",
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 32},
    "data": {"type": "LCG", "seq_len": 9, "n_a": 4, "n_c": 4, "n_test_a": 2, "n_test_c": 2},
    "curriculum": {"moduli": [256, 1024], "sampler_update_interval": 1, "phases": [
        {"name": "move", "phase_steps": 3, "warmup_steps": 1, "transition_steps": 3, "transition": "linear",
         "start_weights": [1.0, 0.0], "end_weights": [0.0, 1.0]},
        {"name": "decay", "phase_steps": 2, "lr_decay": "cosine", "end_weights": [0.0, 1.0]}]},
    "training": {"batch_size": 4, "lr_trgt": 1e-3, "weight_decay": 0.1, "eval_interval": 2},
    "wandb": {"use_wandb": True, "offline": True, "project": "prng_curriculum_test", "name": "tiny-curriculum",
              "tags": ["x", "y"], "notes": "from the YAML"},
}


@pytest.fixture(scope="module")
def curriculum_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wandb_curriculum")
    config = tmp / "curriculum.yaml"
    config.write_text(yaml.safe_dump(CURRICULUM_YAML, sort_keys=False))
    result = run_script("curriculum_lowmem.py", ["--config", config, "--results_dir", tmp / "results"],
                        offline_env(tmp))
    assert_ok(result)
    return tmp / "results", read_offline_run(tmp / "wandb")


@pytest.mark.slow  # a W&B process run (the single-modulus one stays fast)
def test_curriculum_run_takes_its_wandb_settings_from_the_yaml(curriculum_run):
    _, run = curriculum_run
    assert (run.run.project, run.run.display_name, list(run.run.tags), run.run.notes) == \
        ("prng_curriculum_test", "tiny-curriculum", ["x", "y"], "from the YAML")
    c = run.config
    assert (c["world_size"], c["device"], c["ddp"], c["effective_batch_size"]) == (1, "cpu", False, 4)
    assert (c["moduli"], c["num_steps"], c["experiment_name"]) == ([256, 1024], 5, "wandb_test")


@pytest.mark.slow  # a W&B process run (the single-modulus one stays fast)
def test_curriculum_run_history_matches_the_csv(curriculum_run):
    results, run = curriculum_run
    [csv] = results.glob("LCG_*.csv")
    table = pd.read_csv(csv)
    assert sorted(run.history) == table["step"].tolist() == [0, 2, 4, 5]
    for row in table.to_dict("records"):
        step, logged = int(row["step"]), run.history[int(row["step"])]
        expected = {"training/step": step, "training/learning_rate": row["lr"], "training/grad_norm": row["grad_norm"],
                    **{f"learning_curves/{k}": row[k] for k in ("train_loss", "train_acc", "train_last_acc")}}
        for m in (256, 1024):
            expected[f"curriculum/alpha_m{m}"] = row[f"alpha_m{m}"]
            expected.update({f"test_m{m}/{k}": row[f"test_{k}_m{m}"] for k in ("loss", "acc", "last_acc")})
        assert_close(logged, expected, step)
        assert "system/cpu_percent" in logged
    assert run.history[0]["curriculum/alpha_m256"] == 1.0 and run.history[4]["curriculum/alpha_m1024"] == 1.0


@pytest.mark.slow  # a W&B process run (the single-modulus one stays fast)
def test_curriculum_run_final_image_and_summary(curriculum_run):
    _, run = curriculum_run
    assert_final_image(run, 5)
    assert run.summary["training/final_step"] == 5
