"""Helpers shared by the tests that launch training processes."""
import os


def clean_env(**extra) -> dict:
    """This environment without launcher variables, one thread per rank, unbuffered output."""
    launch = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in launch and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env
