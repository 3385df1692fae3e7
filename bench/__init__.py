"""Benchmarks and checks that are not tests. Each runs from the repository root as a module,
`python -m bench.<name>` (as a file, `python bench/<name>.py`, Python puts bench/ on sys.path instead of
the root, so the repository's packages would not import: each script says so in one line and stops)."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The quickstart's one home (README, "Quickstart"): prng_train_lowmem.py reads it as `@configs/quickstart.args`.
QUICKSTART_ARGS = os.path.join("configs", "quickstart.args")
QUICKSTART = ["prng_train_lowmem.py", "@" + QUICKSTART_ARGS]
