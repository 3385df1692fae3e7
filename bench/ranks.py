"""Exit statuses of 2-rank runs (gloo, CPU): every rank of a run that finishes must exit 0, every rank
of a run stopped by a signal 75, or srun and the requeue recipe (docs/clusters.md, "Preemption and resuming")
see a failure.

Each run starts both ranks the way srun does (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, MASTER_ADDR,
MASTER_PORT; one process per rank), in a fresh folder, alternating the two scripts. A stopped run gets
one stop signal, drawn from SIGTERM, SIGINT, SIGHUP, SIGQUIT and SIGUSR1, sent to both ranks (as srun
forwards it) a random delay after rank 0 printed its first evaluation.

    OMP_NUM_THREADS=1 python -m bench.ranks --runs 20 --seed 1
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

if not __package__:  # run as a file: bench/, not the repository root, is on sys.path (bench/__init__.py)
    sys.exit(f"error: run it from the repository root as a module: python -m bench.{os.path.basename(__file__)[:-3]}")

from bench import ROOT as REPO  # noqa: E402
from tests.helpers import TINY as HELPER_TINY  # noqa: E402  (the tests' tiny run sizes)

TINY = [*HELPER_TINY, "--device", "cpu", "--dtype", "float32", "--save_params", "--save_correctness"]
SCRIPTS = {  # (arguments of a run that finishes, arguments of a run long enough to be stopped)
    "prng_train_lowmem.py": ([*TINY, "--m", "256", "--num_steps", "20", "--eval_interval", "10"],
                             [*TINY, "--m", "256", "--num_steps", "100000", "--eval_interval", "10"]),
    "curriculum_lowmem.py": ([*TINY, "--moduli", "256,512", "--eval_interval", "10",
                              "--custom_phases", '[{"phase_steps": 20, "end_weights": [1, 1]}]'],
                             [*TINY, "--moduli", "256,512", "--eval_interval", "10",
                              "--custom_phases", '[{"phase_steps": 100000, "end_weights": [1, 1]}]']),
}
STOP_SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1]
TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, args: list[str], folder: str, ranks: int = 2) -> list[subprocess.Popen]:
    """One process per rank with the variables srun sets on one node."""
    port = str(free_port())
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    base = {k: v for k, v in os.environ.items() if k not in launcher and not k.startswith("SLURM_")}
    return [subprocess.Popen([sys.executable, script, *args, "--results_dir", folder], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**base, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                                  "PYTHONUNBUFFERED": "1", "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r),
                                  "SLURM_NTASKS": str(ranks), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
            for r in range(ranks)]


def finish(procs: list[subprocess.Popen]) -> tuple[list[int], list[str]]:
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    return [p.returncode for p in procs], outs


def stopped(procs: list[subprocess.Popen], sig: int, delay: float) -> tuple[list[int], list[str]]:
    """Send `sig` to every rank `delay` seconds after rank 0's first evaluation line."""
    head = []
    for line in procs[0].stdout:
        head.append(line)
        if line.startswith("step"):
            break
    time.sleep(delay)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    codes, outs = finish(procs)
    return codes, ["".join(head) + outs[0], *outs[1:]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20, help="runs of each kind (finished, stopped)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max_delay", type=float, default=2.0, help="seconds after the first evaluation line")
    args = p.parse_args()
    rng = random.Random(args.seed)
    root = tempfile.mkdtemp(prefix="ranks_")
    counts = {"finished": [Counter(), Counter()], "stopped": [Counter(), Counter()]}
    t0 = time.perf_counter()
    for i in range(args.runs * 2):
        kind = "finished" if i % 2 == 0 else "stopped"
        script = list(SCRIPTS)[(i // 2) % len(SCRIPTS)]
        folder = os.path.join(root, f"run{i}")
        if kind == "finished":
            codes, outs = finish(launch(script, SCRIPTS[script][0], folder))
            what = ""
        else:
            sig, delay = rng.choice(STOP_SIGNALS), rng.uniform(0.0, args.max_delay)
            codes, outs = stopped(launch(script, SCRIPTS[script][1], folder), sig, delay)
            what = f" {signal.Signals(sig).name} after {delay:.1f} s"
        for rank, code in enumerate(codes):
            counts[kind][rank][code] += 1
        expected = 0 if kind == "finished" else 75
        print(f"{i:>3} {kind:<9}{script:<22}{what:<20} exit statuses {codes}"
              + ("" if all(c == expected for c in codes) else "   <-- unexpected"), flush=True)
        for rank, (code, out) in enumerate(zip(codes, outs)):
            if code != expected:
                print(f"    rank {rank}: ...{out.strip()[-400:]}")
        shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    good = True
    for kind, expected in (("finished", 0), ("stopped", 75)):
        for rank, counter in enumerate(counts[kind]):
            print(f"{kind} runs, rank {rank}: {counter[expected]} of {args.runs} exited {expected} "
                  f"(all statuses: {dict(sorted(counter.items()))})")
            good &= counter[expected] == args.runs
    print(f"{time.perf_counter() - t0:.0f} s in all")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
