"""Weights & Biases (flags: utils/config.py), off unless asked for, an error when asked
for and unavailable. Only the master process talks to W&B."""
from __future__ import annotations

import os
import platform
import sys

import psutil
import torch

# Never written into a run's config: the key would be readable by everyone who can see the run.
SECRET_KEYS = ("wandb_api_key",)


def require_wandb():
    try:
        import wandb
    except ImportError:
        raise ValueError("--use_wandb was given but the wandb package is not installed (pip install wandb)") from None
    return wandb


def mask_argument(argv: list[str], flag: str) -> None:
    """Replace the value of `flag` (`flag VALUE` or `flag=VALUE`) in argv, in place."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            argv[i + 1] = "***"
        elif arg.startswith(flag + "="):
            argv[i] = flag + "=***"


def environment_info() -> dict:
    return {"python_version": sys.version.split()[0], "torch_version": torch.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "total_ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "cuda_available": torch.cuda.is_available(), "cuda_device_count": torch.cuda.device_count()}


class WandbRun:
    """A W&B run on the master process, or a no-op everywhere else / when not asked for.

    `run_config` is the validated config as plain values (with the real world_size, device and ddp);
    the run's config adds the original's `effective_batch_size` and the environment, and drops the API
    key. Every `log` also records the original's system metrics: CPU use, and GPU memory on CUDA.
    """

    def __init__(self, cfg, run_config: dict, default_name: str, master: bool):
        self.run = None
        if not (cfg.use_wandb and master):
            return
        wandb = require_wandb()
        if cfg.wandb_api_key:
            os.environ["WANDB_API_KEY"] = cfg.wandb_api_key
            mask_argument(sys.argv, "--wandb_api_key")  # W&B records the command line with the run
        config = {k: v for k, v in run_config.items() if k not in SECRET_KEYS}
        config["effective_batch_size"] = cfg.effective_batch
        config.update(environment_info())
        self.cuda = str(config.get("device", "")).startswith("cuda")
        tags = [t.strip() for t in cfg.wandb_tags.split(",") if t.strip()] if cfg.wandb_tags else None
        self.run = wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity,
                              name=cfg.wandb_name or default_name, tags=tags, notes=cfg.wandb_notes,
                              mode="offline" if cfg.wandb_offline else None, config=config)
        psutil.cpu_percent()  # the first call only starts the measurement
        where = self.run.url or f"offline, upload with `wandb sync {os.path.dirname(self.run.dir)}`"
        print(f"W&B run: {self.run.name} ({where})")

    def system_metrics(self) -> dict:
        metrics = {"system/cpu_percent": psutil.cpu_percent()}
        if self.cuda:
            metrics["system/gpu_memory_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
            metrics["system/gpu_memory_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
        return metrics

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log({**metrics, **self.system_metrics()}, step=step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def image(self, key: str, path: str, step: int) -> None:
        if self.run is not None:
            import wandb
            self.run.log({key: wandb.Image(path)}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
