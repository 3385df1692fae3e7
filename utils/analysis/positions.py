"""Accuracy by number position, the context a model needs, and greedy roll-out.

Positions are 1-based: position p is the prediction of the (p+1)-th number of a sequence, made with
the first p numbers in the context. A sequence of seq_len numbers has positions 1 .. seq_len - 1; this
is the column order of `num_acc` in evaluation.py and of the `positions_<base>.npz` arrays.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import eval_shards
from ..distributed import DistInfo
from ..evaluation import autocast, evaluate
from ..results import save_table
from ..tokens import to_tokens

CURVE_COLUMNS = ["source", "m", "label", "position", "accuracy", "sequences"]


def model_accuracy(model, dataset, device: torch.device, dtype: torch.dtype, batch_size: int = 64) -> np.ndarray:
    """Per-number-position test accuracy (length seq_len - 1) of `model` on every sequence of `dataset`."""
    info = DistInfo(device=device)
    result = evaluate(model, dataset, eval_shards(len(dataset), batch_size), info=info, dtype=dtype,
                      digits=dataset.digits, positions=True)
    return np.asarray(result["num_acc"], dtype=np.float64)


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
