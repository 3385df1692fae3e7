"""Exact test metrics over a whole dataset (D13), per-position correctness (spec 8.2) and its plots."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from .distributed import DistInfo, all_reduce_sum


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast where asked (always on CUDA); float32 runs without autocast. Never float16 (D11)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def batch_counts(logits: torch.Tensor, y: torch.Tensor, digits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(correct tokens, sequences whose last number is fully correct, per-token correctness (B, C) bool)."""
    hit = logits.argmax(-1) == y
    return hit.sum(), hit[:, -digits:].all(-1).sum(), hit


def number_correct(hit: torch.Tensor, digits: int) -> torch.Tensor:
    """Per-number correctness (B, seq_len - 1): drop the first digits-1 targets (the first number is
    never fully predicted), group the rest into numbers, all digits right."""
    rest = hit[:, digits - 1:]
    return rest.reshape(hit.size(0), -1, digits).all(-1)


@torch.no_grad()
def evaluate(model, dataset, index_batches, *, info: DistInfo, dtype: torch.dtype, digits: int,
             positions: bool = False) -> dict:
    """Loss (token-weighted mean), token accuracy and last-number accuracy over this rank's
    `index_batches`, summed exactly over all ranks. With positions=True also per-token-position
    ('pos_acc', length C) and per-number-position ('num_acc', length seq_len - 1) accuracy."""
    was_training = model.training
    model.eval()
    C = dataset.seq_len * digits - 1
    totals = torch.zeros(5, dtype=torch.float64, device=info.device)  # loss, tokens, correct, last, seqs
    pos = torch.zeros(C, dtype=torch.float64, device=info.device)
    num = torch.zeros(dataset.seq_len - 1, dtype=torch.float64, device=info.device)
    for idx in index_batches:
        x, y = dataset.batch(idx, info.device)  # made on the device already
        with autocast(info.device, dtype):
            logits, _ = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        correct, last, hit = batch_counts(logits, y, digits)
        totals += torch.stack([loss.double(), torch.tensor(y.numel(), device=info.device, dtype=torch.float64),
                               correct.double(), last.double(), torch.tensor(len(y), device=info.device, dtype=torch.float64)])
        if positions:
            pos += hit.sum(0)
            num += number_correct(hit, digits).sum(0)
    flat = all_reduce_sum(torch.cat([totals, pos, num]), info).cpu().numpy()
    model.train(was_training)
    loss_sum, tokens, correct, last, seqs = flat[:5].tolist()  # python floats: checkpoints load weights_only
    if tokens == 0:
        raise ValueError("evaluation over an empty dataset")
    out = {"loss": loss_sum / tokens, "acc": correct / tokens, "last_acc": last / seqs}
    if positions:
        out["pos_acc"] = flat[5:5 + C] / seqs
        out["num_acc"] = flat[5 + C:] / seqs
    return out


def plot_accuracy_by_position(path: str, curves: dict[str, np.ndarray], *, xlabel: str, title: str) -> None:
    """One line per curve of accuracy against position in the context, saved as PNG (atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .results import atomic_write

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=label, lw=1.2)
    ax.set(xlabel=xlabel, ylabel="accuracy", title=title, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
