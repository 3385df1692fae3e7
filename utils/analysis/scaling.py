"""Context needed against the modulus: points from several runs and a power-law fit.

The fit is least squares of log2(context needed) on log2(m): context = prefactor * m^exponent. With three
or more points the exponent's standard error comes from the fit's covariance; with two it is unknown."""
from __future__ import annotations

import math
import os
import re
import zipfile

import numpy as np
import pandas as pd

from . import plots
from .positions import context_needed


def points_from(path: str, tau: float, source: str = "model") -> list[dict]:
    """(m, label, context needed) from an `analyze.py eval` context_needed.csv, or from an .npz whose keys
    `test_m<m>` hold accuracy by number position (a curriculum correctness file; for a positions file, the
    last evaluation's row)."""
    if not os.path.isfile(path):
        raise ValueError(f"run file not found: {path}")
    if path.endswith(".csv"):
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise ValueError(f"{path} is not a readable CSV: {err}") from None
        missing = {"source", "m", "label", "context_needed"} - set(df.columns)
        if missing:
            raise ValueError(f"{path} lacks the columns {sorted(missing)} of analyze.py eval's context_needed.csv")
        df = df[df.source == source]
        return [{"run": path, "m": int(r.m), "label": str(r.label), "tau": float(r.tau) if "tau" in df.columns else tau,
                 "context_needed": None if pd.isna(r.context_needed) else int(r.context_needed)}
                for r in df.itertuples()]
    if path.endswith(".npz"):
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # EOFError: an empty file
            raise ValueError(f"{path} is not a readable .npz: {err}") from None
        out = []
        for key, values in arrays.items():
            match = re.fullmatch(r"test_m(\d+)", key)
            if match:
                acc = values[-1] if values.ndim == 2 else values
                out.append({"run": path, "m": int(match.group(1)), "label": key, "tau": tau,
                            "context_needed": context_needed(acc, tau)})
        if not out:
            raise ValueError(f"{path} has no test_m<m> arrays (single-modulus files do not name m: use analyze.py "
                             f"eval's context_needed.csv)")
        return out
    raise ValueError(f"{path}: expected analyze.py eval's context_needed.csv or an .npz with test_m<m> arrays")


def fit_power_law(m, needed) -> dict:
    x, y = np.log2(np.asarray(m, dtype=np.float64)), np.log2(np.asarray(needed, dtype=np.float64))
    if len(np.unique(x)) < 2:
        raise ValueError("a scaling fit needs context needed at two or more different moduli")
    slope, intercept = np.polyfit(x, y, 1)
    stderr = float("nan")
    if len(x) >= 3:  # ordinary least squares: residual variance over the spread of log2 m
        resid = y - (slope * x + intercept)
        stderr = float(math.sqrt((resid @ resid) / (len(x) - 2) / ((x - x.mean()) ** 2).sum()))
    return {"exponent": float(slope), "exponent_stderr": stderr, "prefactor": float(2.0**intercept), "points": len(x)}


def plot(path: str, points: list[dict], fit: dict) -> None:
    plt = plots.pyplot()
    m = np.array([p["m"] for p in points], dtype=np.float64)
    y = np.array([p["context_needed"] for p in points], dtype=np.float64)
    grid = np.geomspace(m.min() / 1.5, m.max() * 1.5, 50)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.loglog(m, y, "o", label="runs")
    err = "" if math.isnan(fit["exponent_stderr"]) else f" ± {fit['exponent_stderr']:.2f}"
    ax.loglog(grid, fit["prefactor"] * grid ** fit["exponent"], "-", label=f"fit: m^{fit['exponent']:.2f}{err}")
    ax.loglog(grid, np.sqrt(grid) / 2, "--", color="gray", label="sqrt(m)/2 (the paper's 1/2)")
    ax.set(xlabel="modulus m", ylabel="context needed (numbers)", title="context needed against m")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    plots.save(fig, path)
