"""Run one training command for several seeds and print how each run ended.

Every (main_seed, data_seed) pair is run as its own process with one thread (OMP_NUM_THREADS=1 unless
--threads says otherwise; --threads 0 leaves it unset, so the script picks its count as when typed) and its
own results directory, `--jobs` at a time. The numbers come from the files the run writes, not from its
printed lines: `eval_<base>.tab` of prng_train_lowmem.py (tab-separated, an index column, then step,
train_loss, test_loss, ..., test_last_acc, grad_norm) or `<base>.csv` of curriculum_lowmem.py (one
`test_last_acc_m<m>` column per modulus; the largest modulus is reported unless --modulus names another).

    python -m bench.quickstart_seeds --seeds 1-5 --data_seeds 1,2 --jobs 2 --results_dir results/qs_bench
    python -m bench.quickstart_seeds --seeds 1,2 -- python prng_train_lowmem.py @configs/quickstart.args --n_embd 96

Without a command after `--`, the quickstart (README, "Quickstart": `python prng_train_lowmem.py
@configs/quickstart.args`) is run. Flags --main_seed, --data_seed and --results_dir are appended to the
command, so they override what it says.
The table: seed, data_seed, final test last-number accuracy, the first evaluated update at which it
reached --threshold (0.9), updates, wall time and seconds per update (wall time / updates, so it
includes start-up and evaluations). --log appends the same rows, tab-separated, to a file.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import glob
import os
import re
import shlex
import subprocess
import sys
import time

if not __package__:  # run as a file: bench/, not the repository root, is on sys.path (bench/__init__.py)
    sys.exit(f"error: run it from the repository root as a module: python -m bench.{os.path.basename(__file__)[:-3]}")

from bench import QUICKSTART, ROOT  # noqa: E402
from utils.int_list import parse_int_list  # noqa: E402


def read_curve(results_dir: str, modulus: int | None = None) -> list[tuple[int, float]]:
    """(step, test last-number accuracy) rows of the run in results_dir, from its eval table or CSV."""
    tabs = glob.glob(os.path.join(results_dir, "eval_*.tab"))
    if tabs:
        with open(tabs[0], newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        return [(int(float(r["step"])), float(r["test_last_acc"])) for r in rows]
    csvs = [p for p in glob.glob(os.path.join(results_dir, "*.csv")) if not os.path.basename(p).startswith("per_type")]
    if not csvs:
        return []
    with open(csvs[0], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    cols = {int(k.rsplit("_m", 1)[1]): k for k in rows[0] if re.fullmatch(r"test_last_acc_m\d+", k)}
    if not cols:
        return []
    col = cols[modulus] if modulus is not None else cols[max(cols)]
    return [(int(float(r["step"])), float(r[col])) for r in rows if r[col] not in ("", "nan")]


def num_updates(command: list[str]) -> int | None:
    """The last --num_steps written in the command (None when a YAML or an @file gives it: the last evaluated
    step is used)."""
    value = None
    for i, word in enumerate(command):
        if word == "--num_steps" and i + 1 < len(command):
            value = int(command[i + 1])
        elif word.startswith("--num_steps="):
            value = int(word.split("=", 1)[1])
    return value


def run_env(threads: int) -> dict:
    """The run's environment: OMP_NUM_THREADS (and MKL's) set to `threads`; for 0 both are unset, so the
    script chooses its thread count by its start-up rule, as the command runs when typed (utils/threads.py)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return env if threads == 0 else dict(env, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def run_one(command: list[str], seed: int, data_seed: int, results_root: str, threads: int, modulus,
            threshold: float, keep_output: bool) -> dict:
    out_dir = os.path.join(results_root, f"seed{seed}_data{data_seed}")
    os.makedirs(out_dir, exist_ok=True)
    full = command + ["--main_seed", str(seed), "--data_seed", str(data_seed), "--results_dir", out_dir]
    env = run_env(threads)
    t0 = time.perf_counter()
    with open(os.path.join(out_dir, "stdout.txt"), "w") as log:
        proc = subprocess.run(full, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    curve = read_curve(out_dir, modulus)
    final = curve[-1][1] if curve else float("nan")
    first = next((step for step, acc in curve if acc >= threshold), None)
    updates = num_updates(command) or (curve[-1][0] if curve else None)
    return {"seed": seed, "data_seed": data_seed, "rc": proc.returncode, "final": final, "first": first,
            "updates": updates, "wall": wall, "s_per_update": wall / updates if updates else float("nan"),
            "dir": out_dir}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1-5", help="main seeds: '1-5', '1,3,7' (default 1-5)")
    p.add_argument("--data_seeds", default="1", help="data seeds, same forms (default 1)")
    p.add_argument("--jobs", type=int, default=2, help="processes at a time (default 2)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run (default 1; 0: unset, the command as written)")
    p.add_argument("--results_dir", required=True, help="each run writes under <results_dir>/seed<S>_data<D>")
    p.add_argument("--modulus", type=int, default=None, help="curriculum CSV: report this modulus (default largest)")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--log", default=None, help="append the rows (tab-separated) to this file")
    p.add_argument("--label", default="", help="a name for this command in --log")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- python <script> <flags> (default: the quickstart, python " + " ".join(QUICKSTART) + ")")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        command = ["python", *QUICKSTART]
    if os.path.basename(command[0]).startswith("python") and not os.path.isfile(os.path.join(ROOT, command[0])):
        command = [sys.executable] + command[1:]  # `python` or a .venv not made here: this interpreter
    try:  # utils/int_list.py's grammar, with ranges: '1-5', '1,3,7', '1-3,9'
        pairs = [(s, d) for d in parse_int_list(args.data_seeds, "--data_seeds", ranges=True)
                 for s in parse_int_list(args.seeds, "--seeds", ranges=True)]
    except ValueError as err:
        p.error(str(err))
    print("command:", shlex.join(command), flush=True)
    with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, command, s, d, args.results_dir, args.threads, args.modulus, args.threshold,
                               False) for s, d in pairs]
        results = []
        for fut in cf.as_completed(futures):
            r = fut.result()
            results.append(r)
            print(f"  done seed {r['seed']} data_seed {r['data_seed']}: {r['final']:.3f} in {r['wall']:.0f} s"
                  + (f" (exit {r['rc']}, see {r['dir']}/stdout.txt)" if r["rc"] else ""), flush=True)
    results.sort(key=lambda r: (r["data_seed"], r["seed"]))
    header = f"{'seed':>5} {'data_seed':>9} {'final acc':>9} {'first >= ' + str(args.threshold):>12} " \
             f"{'updates':>8} {'wall s':>7} {'s/update':>9} {'exit':>4}"
    print(header)
    for r in results:
        first = "-" if r["first"] is None else str(r["first"])
        print(f"{r['seed']:>5} {r['data_seed']:>9} {r['final']:>9.3f} {first:>12} {str(r['updates']):>8} "
              f"{r['wall']:>7.0f} {r['s_per_update']:>9.3f} {r['rc']:>4}")
    finals = [r["final"] for r in results]
    passed = sum(f >= args.threshold for f in finals)
    print(f"{passed} of {len(finals)} runs reached {args.threshold}; worst {min(finals):.3f}")
    if args.log:
        new = not os.path.exists(args.log)
        with open(args.log, "a") as f:
            if new:
                f.write("label\tseed\tdata_seed\tfinal\tfirst\tupdates\twall_s\ts_per_update\trc\tcommand\n")
            for r in results:
                f.write(f"{args.label}\t{r['seed']}\t{r['data_seed']}\t{r['final']:.4f}\t{r['first']}\t{r['updates']}\t"
                        f"{r['wall']:.1f}\t{r['s_per_update']:.4f}\t{r['rc']}\t{shlex.join(command)}\n")
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
