"""Exact test metrics over a whole dataset (no sequence dropped), per-position correctness and its plots."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from . import plots
from .data import to_device
from .distributed import DistInfo, all_reduce_parts


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
    zeros = lambda *shape: torch.zeros(shape, dtype=torch.float64, device=info.device)
    # The sums, each by name; all ranks add them up at the end in one all-reduce (all_reduce_parts).
    sums = {"total": zeros(3), "per_combo": zeros(K, 3),  # loss, correct tokens, correct last numbers
            "sequences": np.zeros(1), "per_combo_sequences": np.zeros(K),  # counted on the host
            "pos": zeros(C), "num": zeros(dataset.seq_len - 1),  # with positions: correct by token, by number
            "per_combo_pos": zeros(K, C), "per_combo_num": zeros(K, dataset.seq_len - 1)}
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
        sums["sequences"] += len(idx)
        # The combined loss is one reduction over the batch, as it always was (its rounding, and so the
        # eval table, stays the same); per-type losses come from the rows' own sums.
        loss = F.cross_entropy(flat_logits, y.reshape(-1), reduction="sum")
        if K:
            token_loss = F.cross_entropy(flat_logits, y.reshape(-1), reduction="none").view(len(idx), -1)
        correct, last, hit = batch_counts(logits, y, digits)
        sums["total"] += torch.stack([loss.double(), correct.double(), last.double()])
        if K:
            combo = dataset.locate(idx)[0]
            sums["per_combo_sequences"] += np.bincount(combo, minlength=K)
            rows = torch.stack([token_loss.double().sum(1), hit.sum(1).double(),
                                hit[:, -digits:].all(-1).double()], 1)  # (B, 3)
            combo_dev = to_device(combo.astype(np.int64), info.device)
            per = zeros(K, 3)
            per.index_add_(0, combo_dev, rows)
            sums["per_combo"] += per
        if positions:
            numbers = number_correct(hit, digits)
            sums["pos"] += hit.sum(0)
            sums["num"] += numbers.sum(0)
            if K:
                sums["per_combo_pos"].index_add_(0, combo_dev, hit.double())
                sums["per_combo_num"].index_add_(0, combo_dev, numbers.double())
    # The host's counts go to the device to join the one all-reduce.
    sums.update({k: torch.from_numpy(v).to(info.device) for k, v in sums.items() if isinstance(v, np.ndarray)})
    found = all_reduce_parts(sums, info)
    model.train(was_training)

    def metrics(loss_sum, correct, last, seqs):  # python floats: checkpoints load weights_only
        tokens = seqs * C
        return {"loss": float(loss_sum / tokens), "acc": float(correct / tokens), "last_acc": float(last / seqs)}

    seqs = found["sequences"][0]
    if seqs == 0:
        raise ValueError("evaluation over an empty dataset")
    out = metrics(*found["total"], seqs)
    if positions:
        out["pos_acc"] = found["pos"] / seqs
        out["num_acc"] = found["num"] / seqs
    if K:
        out["per_combo"] = []
        for k, seqs in enumerate(found["per_combo_sequences"]):
            if seqs == 0:  # no row of this combination was evaluated
                out["per_combo"].append(None)
                continue
            one = metrics(*found["per_combo"][k], seqs)
            if positions:
                one["pos_acc"], one["num_acc"] = found["per_combo_pos"][k] / seqs, found["per_combo_num"][k] / seqs
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
