"""Context needed against the modulus: points from several runs, a power-law fit and the papers' laws.

The fit is least squares of log2(context needed) on log2(m): context = prefactor * m^exponent. With three
or more points the exponent's standard error comes from the fit's covariance; with two it is unknown.

The context needed is one of positions.CONTEXT_RULES: the first position from which accuracy stays
>= tau ("stays"), or the first where it reaches tau ("reaches")."""
from __future__ import annotations

import math
import os
import re

import numpy as np

from ..data import PCG_KINDS
from .. import plots
from ..results import load_npz
from .positions import CONTEXT_RULES


# Columns of analyze.py eval's context_needed.csv holding each definition's tau and context needed.
CSV_COLUMNS = {"stays": ("tau", "context_needed"), "reaches": ("reach_tau", "context_reached")}

# The papers' laws for the context needed against m, each with where its numbers come from. An LCG
# model compares with the first paper, a PCG model with the second; the second paper's truncated-LCG
# (TLCG) result is about one output bit, not a law in m, so TLCG has none.
LAWS = {
    "LCG": {"paper": "arXiv 2502.10390", "name": "m^(1/4) (prefactor unknown)", "exponent": 0.25, "prefactor": 1.0,
            "source": "abstract: the context 'needed to reach high accuracy scales sublinearly with the modulus' "
                      "(no exponent, no threshold); m^(1/4) from a secondary summary only; its prefactor is "
                      "unknown (drawn as 1)"},
    "PCG": {"paper": "arXiv 2510.26792", "name": "sqrt(m)/2", "exponent": 0.5, "prefactor": 0.5,
            "source": "abstract: the context 'required for near-perfect prediction grows as sqrt(m)'; the 1/2, at "
                      "about 90% accuracy, from a secondary summary only"},
}


def paper_law(label: str) -> dict | None:
    """The law a paper states for a generator label (LCG, XSLRR_cb3, ...); None for TLCG and for labels
    that name no generator (an .npz's test_m<m>)."""
    kind = label.split("_cb")[0]
    return LAWS["LCG"] if kind == "LCG" else LAWS["PCG"] if kind in PCG_KINDS else None


def law_value(law: dict, m):
    """The law's context at modulus m (a number or an array)."""
    return law["prefactor"] * np.asarray(m, dtype=np.float64) ** law["exponent"]


def points_from(path: str, tau: float, source: str = "model", rule: str = "stays") -> list[dict]:
    """(m, label, context needed by `rule`) from an `analyze.py eval` context_needed.csv, or from an .npz
    whose keys `test_m<m>` hold accuracy by number position (a curriculum correctness file; for a positions
    file, the last evaluation's row), with threshold `tau`."""
    if not os.path.isfile(path):
        raise ValueError(f"run file not found: {path}")
    if path.endswith(".csv"):
        import pandas as pd  # here: analyze.py's other commands start without it (utils/results.py, save_table)
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise ValueError(f"{path} is not a readable CSV: {err}") from None
        tau_column, column = CSV_COLUMNS[rule]
        missing = {"source", "m", "label", column} - set(df.columns)
        if missing:
            raise ValueError(f"{path} lacks the columns {sorted(missing)} of analyze.py eval's context_needed.csv"
                             + (" (written before the 'reaches' definition: run eval again)" if rule == "reaches"
                                else ""))
        df = df[df.source == source]
        return [{"run": path, "m": int(r.m), "label": str(r.label),
                 "tau": float(getattr(r, tau_column)) if tau_column in df.columns else tau,
                 "context_needed": None if pd.isna(getattr(r, column)) else int(getattr(r, column))}
                for r in df.itertuples()]
    if path.endswith(".npz"):
        arrays = load_npz(path, "run file")
        out = []
        for key, values in arrays.items():
            match = re.fullmatch(r"test_m(\d+)", key)
            if match:
                acc = values[-1] if values.ndim == 2 else values
                out.append({"run": path, "m": int(match.group(1)), "label": key, "tau": tau,
                            "context_needed": CONTEXT_RULES[rule](acc, tau)})
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


def plot(path: str, points: list[dict], fit: dict, rule: str) -> None:
    """Log-log context needed against m: the runs, the fit, and the law of each paper the runs' generators
    fall under (paper_law)."""
    plt = plots.pyplot()
    m = np.array([p["m"] for p in points], dtype=np.float64)
    y = np.array([p["context_needed"] for p in points], dtype=np.float64)
    grid = np.geomspace(m.min() / 1.5, m.max() * 1.5, 50)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.loglog(m, y, "o", label="runs")
    err = "" if math.isnan(fit["exponent_stderr"]) else f" ± {fit['exponent_stderr']:.2f}"
    ax.loglog(grid, fit["prefactor"] * grid ** fit["exponent"], "-", label=f"fit: m^{fit['exponent']:.2f}{err}")
    laws = {id(law): law for law in (paper_law(p["label"]) for p in points) if law}
    for style, law in zip(("--", ":"), laws.values()):
        ax.loglog(grid, law_value(law, grid), style, color="gray",
                  label=f"{law['paper']}: {law['name']}")
    ax.set(xlabel="modulus m", ylabel=f"context needed (numbers; rule '{rule}')", title="context needed against m")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    plots.save(fig, path)
