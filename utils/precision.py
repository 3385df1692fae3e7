"""What `--dtype auto` means on a CPU: bf16 autocast only where the processor has native bf16
matrix units and bf16 measured faster there; float32 everywhere else.

The choice is made from the processor's flags (/proc/cpuinfo), not by timing at start-up: a start-up
measurement on a shared machine flips from run to run, and a run, its resumption and its ranks must all
use one dtype. What the flags decide follows the benchmark (`python -m bench.bench_train` reports both
dtypes on the machine it runs on; its numbers are in docs/benchmarks.md):
- no AVX512-BF16 and no AMX: bf16 is emulated and many times slower -> float32;
- AVX512-BF16 without AMX (the 2-core test machine): bf16 autocast was slower than float32 for the
  quickstart's model and faster only for wide ones -> float32, the safe choice for the small models CPUs
  train; `--dtype bfloat16` asks for bf16 on wide models;
- AMX bf16 tiles -> bfloat16 (not measured by this project; run the benchmark there and set
  PCG_CPU_AUTO_DTYPE=float32 if it disagrees).
The environment variable PCG_CPU_AUTO_DTYPE (float32 or bfloat16) overrides the rule; the test suite
pins float32 with it (tests/conftest.py).
"""
from __future__ import annotations

import os

import torch

CPU_AUTO_DTYPE_ENV = "PCG_CPU_AUTO_DTYPE"
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of the native bf16 matmul units


def cpu_bf16_units(cpuinfo: str | None = None) -> list[str]:
    """The native bf16 matrix instruction sets this CPU reports (the `flags` of /proc/cpuinfo; where
    there is no such file, torch's CPU capability, which names AMX only)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            capability = str(torch.backends.cpu.get_cpu_capability()).lower()
            return ["amx_bf16"] if "amx" in capability else []
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in BF16_CPU_FLAGS if f in flags]
    return []


def auto_cpu_dtype(cpuinfo: str | None = None) -> tuple[torch.dtype, str]:
    """(dtype, why) for --dtype auto on this CPU."""
    pinned = os.environ.get(CPU_AUTO_DTYPE_ENV, "").strip()
    if pinned:
        if pinned not in ("float32", "bfloat16"):
            raise ValueError(f"{CPU_AUTO_DTYPE_ENV} must be float32 or bfloat16, got {pinned!r}")
        return getattr(torch, pinned), f"set by {CPU_AUTO_DTYPE_ENV}"
    units = cpu_bf16_units(cpuinfo)
    if "amx_bf16" in units:
        return torch.bfloat16, "this CPU has AMX bf16 tiles"
    if units:
        return torch.float32, (f"this CPU has {'+'.join(units)} but no AMX: bf16 is slower for small models "
                               f"there (python -m bench.bench_train); --dtype bfloat16 asks for it")
    return torch.float32, "this CPU has no native bf16 matrix units"


def describe_auto(device: torch.device, dtype: torch.dtype, why: str) -> str:
    return f"dtype auto on {device.type}: {str(dtype).replace('torch.', '')} ({why})"
