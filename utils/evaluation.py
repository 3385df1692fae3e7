"""Exact test metrics over a whole dataset (no sequence dropped), per-position correctness and its plots."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from . import plots
from .data import to_device
from .distributed import DistInfo, all_reduce_sum


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast where asked (always on CUDA); float32 runs without autocast. Never float16: without a grad scaler its gradients underflow."""
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
             positions: bool = False, per_combo: bool = False) -> dict:
    """Loss (token-weighted mean), token accuracy and last-number accuracy over this rank's
    `index_batches`, summed exactly over all ranks. With positions=True also per-token-position
    ('pos_acc', length C) and per-number-position ('num_acc', length seq_len - 1) accuracy.

    With per_combo=True (a PRNGDataset) also 'per_combo': the same metrics for each of the dataset's
    combinations, in its order, from the same pass: the combination of each row is known from its
    index (PRNGDataset.locate), so a multi-type test set is evaluated once, not once more per type.

    What the host knows (token and sequence counts) is counted on the host; the device's sums are
    read once, after the last batch, so evaluation does not wait for the device batch by batch."""
    was_training = model.training
    model.eval()
    C = dataset.seq_len * digits - 1
    K = len(dataset.combos) if per_combo else 0
    sums = torch.zeros(3 + 3 * K, dtype=torch.float64, device=info.device)  # loss, correct, last (+ per combo)
    pos = torch.zeros(C, dtype=torch.float64, device=info.device)
    num = torch.zeros(dataset.seq_len - 1, dtype=torch.float64, device=info.device)
    pos_k = torch.zeros(K, C, dtype=torch.float64, device=info.device)  # per combo, with positions
    num_k = torch.zeros(K, dataset.seq_len - 1, dtype=torch.float64, device=info.device)
    counts = np.zeros(1 + K)  # sequences (+ per combo), counted on the host
    compiled, full = hasattr(model, "_orig_mod"), None  # torch.compile's wrapper; the first batch's rows
    for idx in index_batches:
        idx = np.asarray(idx)
        full = full or len(idx)
        run = idx
        if compiled and len(idx) < full:
            # A short last batch would make torch.compile compile the model once more (with a dynamic
            # batch size, slower for every later batch): pad it with its last row, drop those outputs.
            run = np.concatenate([idx, np.repeat(idx[-1:], full - len(idx))])
        x, y = dataset.batch(run, info.device)  # made on the device already
        with autocast(info.device, dtype):
            logits, _ = model(x)
        if len(run) != len(idx):
            logits, y = logits[:len(idx)], y[:len(idx)]
        flat_logits = logits.float().reshape(-1, logits.size(-1))
        counts[0] += len(idx)
        # The combined loss is one reduction over the batch, as it always was (its rounding, and so the
        # eval table, stays the same); per-type losses come from the rows' own sums.
        loss = F.cross_entropy(flat_logits, y.reshape(-1), reduction="sum")
        if K:
            token_loss = F.cross_entropy(flat_logits, y.reshape(-1), reduction="none").view(len(idx), -1)
        correct, last, hit = batch_counts(logits, y, digits)
        sums[:3] += torch.stack([loss.double(), correct.double(), last.double()])
        if K:
            combo = dataset.locate(idx)[0]
            counts[1:] += np.bincount(combo, minlength=K)
            rows = torch.stack([token_loss.double().sum(1), hit.sum(1).double(),
                                hit[:, -digits:].all(-1).double()], 1)  # (B, 3)
            combo_dev = to_device(combo.astype(np.int64), info.device)
            per = torch.zeros(K, 3, dtype=torch.float64, device=info.device)
            per.index_add_(0, combo_dev, rows)
            sums[3:] += per.reshape(-1)
        if positions:
            numbers = number_correct(hit, digits)
            pos += hit.sum(0)
            num += numbers.sum(0)
            if K:
                pos_k.index_add_(0, combo_dev, hit.double())
                num_k.index_add_(0, combo_dev, numbers.double())
    host = torch.from_numpy(counts).to(info.device)
    flat = all_reduce_sum(torch.cat([sums, host, pos, num, pos_k.reshape(-1), num_k.reshape(-1)]), info).cpu().numpy()
    model.train(was_training)
    sums_h, counts_h = flat[:3 + 3 * K], flat[3 + 3 * K:4 + 4 * K]
    S1 = dataset.seq_len - 1
    pos_h, num_h = flat[4 + 4 * K:4 + 4 * K + C], flat[4 + 4 * K + C:4 + 4 * K + C + S1]
    pos_kh = flat[4 + 4 * K + C + S1:4 + 4 * K + C + S1 + K * C].reshape(K, C)
    num_kh = flat[4 + 4 * K + C + S1 + K * C:].reshape(K, S1)

    def metrics(loss_sum, correct, last, seqs):  # python floats: checkpoints load weights_only
        tokens = seqs * C
        return {"loss": float(loss_sum / tokens), "acc": float(correct / tokens), "last_acc": float(last / seqs)}

    if counts_h[0] == 0:
        raise ValueError("evaluation over an empty dataset")
    out = metrics(*sums_h[:3], counts_h[0])
    if positions:
        out["pos_acc"] = pos_h / counts_h[0]
        out["num_acc"] = num_h / counts_h[0]
    if K:
        out["per_combo"] = []
        for k in range(K):
            seqs = counts_h[1 + k]
            if seqs == 0:  # no row of this combination was evaluated
                out["per_combo"].append(None)
                continue
            one = metrics(*sums_h[3 + 3 * k:6 + 3 * k], seqs)
            if positions:
                one["pos_acc"], one["num_acc"] = pos_kh[k] / seqs, num_kh[k] / seqs
            out["per_combo"].append(one)
    return out


def plot_accuracy_by_position(path: str, curves: dict[str, np.ndarray], *, xlabel: str, title: str) -> None:
    """One line per curve of accuracy against position in the context, saved as PNG (atomically)."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=label, lw=1.2)
    ax.set(xlabel=xlabel, ylabel="accuracy", title=title, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    plots.save(fig, path)
