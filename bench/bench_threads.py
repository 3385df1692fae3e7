"""Thread-count benchmark: seconds per update of bench_train.py's CPU cases (the quickstart shape at its
batch of 32, the README shape at batch 8) on a quiet machine, with one core kept busy and with all of
them busy, for today's rule (torch's default, one thread per physical core), the start-up rule of
utils/threads.py (auto), and every fixed count from 1 to the CPUs of this process; each row's ratio to
the best fixed count of its condition and case.

Run from the repository root, on a machine with nothing else running (each cell is a process of its
own; the README shape takes a minute or more per cell on 2 cores):
  python -m bench.bench_threads
  python -m bench.bench_threads --cases quickstart --busy 0 1 --steps 4      # a shorter run

The busy cores are processes spinning in a loop, one pinned to each of the first N CPUs of this
process's affinity, started before the measured process: the auto rule decides inside the measured
process, under the load it is measured under, as a run started on a busy machine does. A cell is a
fresh process, so torch's thread pool starts from the count each rule sets.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

if not __package__:  # run as a file: bench/, not the repository root, is on sys.path (bench/__init__.py)
    sys.exit(f"error: run it from the repository root as a module: python -m bench.{os.path.basename(__file__)[:-3]}")

import torch  # noqa: E402

from bench import ROOT, bench_train  # noqa: E402
from utils import threads  # noqa: E402
from utils.distributed import DistInfo  # noqa: E402

SPIN_START_S = 0.5  # for the spinners to be running before the measured process starts
CONDITIONS = {0: "quiet", 1: "1 core busy"}


def condition_name(busy: int, cpus: int) -> str:
    return CONDITIONS.get(busy) or ("all cores busy" if busy >= cpus else f"{busy} cores busy")


def worker(args) -> None:
    """One cell, in its own process: set the rule's thread count, time the case, print a JSON line."""
    reason = "torch default"
    if args.worker != "default":  # as the scripts start: OMP_NUM_THREADS for a fixed count, else the rule
        _, reason = threads.use_threads(DistInfo(), threads.requested_threads(), log=lambda *a: None)
    name, batch, micro, warmup, steps = next(c for c in bench_train.cases()["cpu"] if c[0] == args.case)
    torch.set_grad_enabled(True)
    row = bench_train.measure(name, torch.device("cpu"), getattr(torch, args.dtype), False, batch, micro,
                              warmup, args.steps or steps, eval_batches=1)
    print(json.dumps({"threads": torch.get_num_threads(), "reason": reason, "step_s": row["step_s"]}))


def spin(cpus: list[int]) -> list[subprocess.Popen]:
    """One busy-looping process pinned to each of `cpus`."""
    spinners = []
    for cpu in cpus:
        proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.sched_setaffinity(proc.pid, {cpu})
        spinners.append(proc)
    time.sleep(SPIN_START_S if cpus else 0)
    return spinners


def cell(rule: str, case: str, args) -> dict:
    """Run one (rule, case) in a fresh process: today's rule and auto without OMP_NUM_THREADS, a fixed count
    with it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if rule not in ("default", "auto"):
        env["OMP_NUM_THREADS"] = rule
    cmd = [sys.executable, "-m", "bench.bench_threads", "--worker", rule, "--case", case, "--dtype", args.dtype]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    runs = []
    for _ in range(args.repeats):
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: {rule} / {case} failed:\n{done.stderr.strip()}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {**runs[0], "step_s": statistics.median(r["step_s"] for r in runs)}


def main(argv=None):
    cpus = sorted(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=None, choices=[c[0] for c in bench_train.cases()["cpu"]],
                   help="default: all CPU cases of bench_train.py")
    p.add_argument("--busy", nargs="+", type=int, default=None,
                   help=f"cores kept busy, one condition each (default: 0 1 {len(cpus)})")
    p.add_argument("--steps", type=int, default=None, help="timed updates per cell (default: bench_train.py's)")
    p.add_argument("--repeats", type=int, default=1, help="processes per cell; the median is reported")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    busy = args.busy if args.busy is not None else sorted({0, 1, len(cpus)})
    if any(not 0 <= b <= len(cpus) for b in busy) or args.repeats < 1 or (args.steps is not None and args.steps < 1):
        p.error(f"--busy takes 0..{len(cpus)} cores; --repeats and --steps at least 1")
    cases = [c[0] for c in bench_train.cases()["cpu"] if args.cases is None or c[0] in args.cases]
    rules = ["default", "auto"] + [str(n) for n in range(1, len(cpus) + 1)]
    print(f"# python -m bench.bench_threads {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"# {len(cpus)} CPUs in this process's affinity, {threads.physical_cores(cpus)} cores; torch "
          f"{torch.__version__}, its default {torch.get_num_threads()} threads here; {args.dtype}; "
          f"{args.repeats} process(es) per cell")
    print(f"# before the run, other processes kept {threads.busy_cpus(cpus) or 0:.1f} CPUs busy (the quiet rows "
          f"assume none)")
    rows = []
    for n_busy in busy:
        spinners = spin(cpus[:n_busy])
        try:
            for case in cases:
                for rule in rules:
                    rows.append({"condition": condition_name(n_busy, len(cpus)), "case": case, "rule": rule,
                                 **cell(rule, case, args)})
        finally:
            for proc in spinners:
                proc.kill()
                proc.wait()
    print(f"\n{'condition':<16}{'case':<14}{'rule':<16}{'threads':>8}{'s/update':>11}{'vs best fixed':>15}  reason")
    for r in rows:
        fixed = [x["step_s"] for x in rows if (x["condition"], x["case"]) == (r["condition"], r["case"])
                 and x["rule"].isdigit()]
        label = {"default": "today (default)", "auto": "auto"}.get(r["rule"], f"fixed {r['rule']}")
        print(f"{r['condition']:<16}{r['case']:<14}{label:<16}{r['threads']:>8}{r['step_s']:>11.4f}"
              f"{r['step_s'] / min(fixed):>14.2f}x  {r['reason']}")
    return rows


if __name__ == "__main__":
    main()
