"""The one place a figure starts and is saved, for the training scripts' plots and analyze.py's
(matplotlib is imported on first use: runs and commands that draw nothing start faster)."""
from __future__ import annotations

from .results import atomic_write


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path: str, dpi: int = 110, tight: bool = True) -> None:
    """Lay out (unless the figure has its own layout), write the PNG atomically and close the figure."""
    if tight:
        fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
