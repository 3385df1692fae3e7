"""Random kill/resume trials of both training scripts: does every interrupted run end exactly as the
uninterrupted one?

Each trial starts a tiny run in a fresh folder and sends it one signal, drawn from those that end a
job (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1) and SIGKILL, at a random moment: half the trials while
the script starts (0-3 s after launch: imports, parsing, claiming its files), half during training (a
random delay after its manifest appears). It then runs the same command with `--resume auto` until it
exits 0, and compares the eval table / CSV (bytes) and the final model (tensors) with an uninterrupted
reference run of the same command. A stop signal must end the first start with status 75 (or 0 when
the run had finished first); SIGKILL with -9.

    python -m bench.faults --trials 20 --seed 1
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

if not __package__:  # run as a file: bench/, not the repository root, is on sys.path (bench/__init__.py)
    sys.exit(f"error: run it from the repository root as a module: python -m bench.{os.path.basename(__file__)[:-3]}")

import torch  # noqa: E402

from bench import ROOT  # noqa: E402
from tests.helpers import TINY as HELPER_TINY  # noqa: E402  (the tests' tiny run sizes)

TINY = [*HELPER_TINY, "--device", "cpu", "--dtype", "float32", "--save_checkpoints", "--save_params"]
PHASES = ('[{"phase_steps": 1800, "warmup_steps": 10, "transition_steps": 1500, "start_weights": [1, 0], '
          '"end_weights": [0.3, 0.7]}, {"phase_steps": 1200, "lr_decay": "cosine", "end_weights": [0.3, 0.7]}]')
SCRIPTS = {
    "prng_train_lowmem.py": [*TINY, "--m", "256", "--num_steps", "3000", "--eval_interval", "250",
                             "--checkpoint_interval", "200", "--save_correctness"],
    "curriculum_lowmem.py": [*TINY, "--moduli", "256,512", "--custom_phases", PHASES, "--eval_interval", "250",
                             "--checkpoint_interval", "200", "--lr_trgt", "1e-3", "--save_correctness"],
}
SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGKILL]
STARTING = 3.0  # seconds after launch in which a "start" trial's signal falls (the imports alone take ~2 s)


def env() -> dict:
    launch = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    out = {k: v for k, v in os.environ.items() if k not in launch and not k.startswith("SLURM_")}
    out.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return out


def start(script: str, folder: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, script, *SCRIPTS[script], "--results_dir", folder, *extra], cwd=ROOT,
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def outputs(folder: str) -> tuple[bytes, dict]:
    """(eval table or CSV bytes, final model tensors) of the one run in `folder`."""
    names = os.listdir(folder)
    table = next(n for n in names if n.startswith("eval_") or (n.endswith(".csv") and "_" in n))
    model = next(n for n in names if n.startswith(("params_", "multi_curriculum_model_lazy_")))
    with open(os.path.join(folder, table), "rb") as fh:
        data = fh.read()
    state = torch.load(os.path.join(folder, model), map_location="cpu", weights_only=True)
    return data, state.get("model_state_dict", state)


def listing(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def left_behind(folder: str) -> str:
    """What a first start left: nothing, only its manifest (it had claimed its files), or more."""
    names = listing(folder)
    if not names:
        return "nothing"
    return "manifest" if all(n.startswith(("run_", ".run_")) for n in names) else "files"


def same(a: tuple[bytes, dict], b: tuple[bytes, dict]) -> bool:
    return a[0] == b[0] and set(a[1]) == set(b[1]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max_delay", type=float, default=15.0, help="seconds after the run's manifest appears")
    args = p.parse_args()
    rng = random.Random(args.seed)
    root = tempfile.mkdtemp(prefix="faults_")
    reference = {}
    for script in SCRIPTS:
        folder = os.path.join(root, "reference_" + script.split("_")[0])
        t0 = time.perf_counter()
        proc = start(script, folder)
        assert proc.wait() == 0, proc.stderr.read()
        reference[script] = outputs(folder)
        print(f"reference {script}: {time.perf_counter() - t0:.1f} s")
    identical, first_exits = 0, {}
    print(f"{'trial':>5}  {'script':<22}{'signal':<9}{'moment':<10}{'delay s':>8}  {'first exit':>10}  {'left':<11}"
          f"{'starts':>6}  result")
    for trial in range(args.trials):
        script, sig = rng.choice(list(SCRIPTS)), rng.choice(SIGNALS)
        moment = rng.choice(["start", "training"])
        delay = rng.uniform(0.0, STARTING if moment == "start" else args.max_delay)
        folder = os.path.join(root, f"trial{trial}")
        proc = start(script, folder)
        if moment == "training":
            while proc.poll() is None and not any(n.startswith("run_") for n in listing(folder)):  # its manifest
                time.sleep(0.02)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
        first = proc.wait()
        left = left_behind(folder)
        starts, code = 1, first
        while code != 0 and starts < 6:
            resumed = start(script, folder, "--resume", "auto")
            code = resumed.wait()
            starts += 1
            if code not in (0, 75):
                print(resumed.stderr.read().strip()[-300:])
        ok = code == 0 and same(outputs(folder), reference[script])
        identical += ok
        first_exits.setdefault(signal.Signals(sig).name, Counter())[first] += 1
        print(f"{trial:>5}  {script:<22}{signal.Signals(sig).name:<9}{moment:<10}{delay:>8.1f}  {first:>10}  {left:<11}"
              f"{starts:>6}  {'identical' if ok else 'DIFFERENT'}", flush=True)
    print(f"{identical} of {args.trials} runs ended identical to the uninterrupted run (files in {root})")
    print("first exit status by signal (75: stopped, with a checkpoint once training had begun; 0: finished first; "
          "-9: SIGKILL):")
    expected_ok = True
    for name, counter in sorted(first_exits.items()):
        print(f"  {name:<8} {dict(sorted(counter.items()))}")
        allowed = {-signal.SIGKILL, 0} if name == "SIGKILL" else {75, 0}
        expected_ok &= set(counter) <= allowed
    return 0 if identical == args.trials and expected_ok else 1


if __name__ == "__main__":
    sys.exit(main())
