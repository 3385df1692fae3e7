"""Model predictions and accuracy by number position, the context a model needs (two definitions),
and greedy roll-out.

Positions are 1-based: position p is the prediction of the (p+1)-th number of a sequence, made with
the first p numbers in the context. A sequence of seq_len numbers has positions 1 .. seq_len - 1; this
is the column order of `num_acc` in evaluation.py and of the `positions_<base>.npz` arrays.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import eval_shards
from ..evaluation import autocast
from ..results import load_npz, save_table
from ..tokens import to_tokens
from .. import plots

CURVE_COLUMNS = ["source", "m", "label", "position", "accuracy", "sequences"]


@torch.no_grad()
def model_predictions(model, dataset, device: torch.device, dtype: torch.dtype,
                      batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(predictions (B, seq_len - 1), sequences (B, seq_len)) for every sequence of `dataset`.

    Teacher-forced, as evaluation.py's number accuracy: each digit token of number p+1 is the model's
    argmax given the true tokens before it, and the digits (least significant first) make the predicted
    number. So a prediction equals its target exactly when every digit is right, and the number accuracy
    by position is (predictions == sequences[:, 1:]).mean(0), evaluation.py's `num_acc`. A digit token
    outside [0, base) (a vocabulary larger than the base) has no value: the prediction is -1, never right."""
    d, base = dataset.digits, dataset.base
    preds, numbers = [], []
    for idx in eval_shards(len(dataset), batch_size):
        x_numbers = np.asarray(dataset.numbers(idx))
        tokens = torch.as_tensor(np.asarray(to_tokens(x_numbers, base, d)), device=device)
        with autocast(device, dtype):
            logits, _ = model(tokens[:, :-1])
        digits = logits.argmax(-1)[:, d - 1:].reshape(len(idx), -1, d).cpu().numpy().astype(np.int64)
        value = (digits * base ** np.arange(d, dtype=np.int64)).sum(-1)
        preds.append(np.where((digits < base).all(-1), value, -1))
        numbers.append(x_numbers)
    return np.concatenate(preds), np.concatenate(numbers)


def context_needed(accuracy, tau: float = 0.99) -> int | None:
    """The first position p from which accuracy stays >= tau up to the last position; None if the
    last position is below tau."""
    acc = np.asarray(accuracy, dtype=np.float64)
    below = np.flatnonzero(~(acc >= tau))
    if len(below) == 0:
        return 1
    if below[-1] == len(acc) - 1:
        return None
    return int(below[-1]) + 2


def context_reached(accuracy, tau: float = 0.9) -> int | None:
    """The first position p where accuracy is >= tau (it may fall again later); None if it never is."""
    hits = np.flatnonzero(np.asarray(accuracy, dtype=np.float64) >= tau)
    return int(hits[0]) + 1 if len(hits) else None


# The two definitions of the context a model needs, with their default tau. "stays" is this project's
# (0.99; the second paper's abstract speaks of "near-perfect prediction" without a number). "reaches"
# is the papers' wording: the first paper's abstract counts the elements "needed to reach high
# accuracy" (no number given); 0.9 is the accuracy at which the second paper's (1/2) sqrt(m) holds
# according to a secondary summary of it, a number not checked against the paper's text.
CONTEXT_RULES = {"stays": context_needed, "reaches": context_reached}
DEFAULT_TAU = {"stays": 0.99, "reaches": 0.9}


def curve_rows(source: str, m: int, label: str, accuracy, sequences: int) -> list[dict]:
    return [{"source": source, "m": int(m), "label": label, "position": p + 1, "accuracy": float(v),
             "sequences": int(sequences)} for p, v in enumerate(np.asarray(accuracy))]


def write_curves(path: str, rows: list[dict]) -> None:
    save_table(rows, CURVE_COLUMNS, path)


@torch.no_grad()
def rollout(model, dataset, start: int, device: torch.device, dtype: torch.dtype, batch_size: int = 64) -> np.ndarray:
    """Greedy roll-out: the first `start` numbers of each sequence are given, then the model's own
    predictions are fed back. Returns, per sequence, how many generated numbers in a row are exact
    (at most seq_len - start)."""
    if not 1 <= start < dataset.seq_len:
        raise ValueError(f"roll-out start {start} must lie in [1, seq_len - 1 = {dataset.seq_len - 1}]")
    d = dataset.digits
    runs = []
    for idx in eval_shards(len(dataset), batch_size):
        truth = torch.as_tensor(np.asarray(to_tokens(dataset.numbers(idx), dataset.base, d)), device=device)
        seq = truth.clone()
        for t in range(start * d, truth.size(1)):
            with autocast(device, dtype):
                logits, _ = model(seq[:, :t])
            seq[:, t] = logits[:, -1].argmax(-1)
        gen_ok = (seq == truth)[:, start * d:].reshape(len(idx), -1, d).all(-1)  # (B, numbers generated)
        wrong = ~gen_ok
        first_wrong = torch.where(wrong.any(1), wrong.float().argmax(1), torch.full_like(wrong[:, 0], gen_ok.size(1),
                                                                                         dtype=torch.long))
        runs.append(first_wrong.cpu().numpy())
    return np.concatenate(runs).astype(np.int64)


def read_positions(path: str) -> dict[str, np.ndarray]:
    """The arrays of a positions_<base>.npz: `step` (S,) and (S, positions) accuracy arrays."""
    arrays = load_npz(path, "positions file")
    if "step" not in arrays or arrays["step"].ndim != 1:
        raise ValueError(f"{path} has no 1-D array `step` (not a positions file)")
    S = len(arrays["step"])
    curves = {k: v for k, v in arrays.items() if k != "step"}
    if not curves:
        raise ValueError(f"{path} holds no accuracy arrays besides `step`")
    for key, value in curves.items():
        if value.ndim != 2 or value.shape[0] != S:
            raise ValueError(f"{path}: array {key!r} has shape {value.shape}, expected ({S}, positions)")
    return {"step": arrays["step"], **curves}


def plot_over_training(path: str, steps, acc: np.ndarray, title: str) -> None:
    """One accuracy-by-position line per evaluation, coloured from early (dark) to late (light)."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("viridis")
    for i, (step, row) in enumerate(zip(steps, acc)):
        ax.plot(np.arange(1, len(row) + 1), row, color=cmap(i / max(len(steps) - 1, 1)), lw=1)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(float(steps[0]), float(steps[-1])))
    fig.colorbar(sm, ax=ax, label="update")
    ax.set(xlabel="position (numbers in the context)", ylabel="accuracy", ylim=(-0.02, 1.02), title=title)
    ax.grid(alpha=0.3)
    plots.save(fig, path)


def plot_needed_over_training(path: str, steps, needed: dict, n_positions: int) -> None:
    """Context needed against the update: per curve (one colour), one line per definition (`needed`:
    {curve: {definition: values}}); evaluations where it is not reached are left out."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (key, lines) in enumerate(needed.items()):
        for style, (rule, values) in zip(("-", "--", ":"), lines.items()):
            ok = [(s, v) for s, v in zip(steps, values) if v is not None]
            ax.plot([s for s, _ in ok], [v for _, v in ok], style, marker="o", ms=3, color=f"C{i}",
                    label=f"{key}: {rule}")
    ax.set(xlabel="update", ylabel="context needed (numbers)", ylim=(0, n_positions + 1),
           title="context needed during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plots.save(fig, path)
