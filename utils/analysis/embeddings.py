"""Principal components of the token embedding and how well they separate bitwise classes of tokens.

The paper's claim to test: the top components group tokens into classes that are invariant under bit
rotation. Each token value t (w bits, w = bits of the largest token) gets three labels: its popcount,
its lowest set bit (w for t = 0), and its rotation class (the smallest value among the w rotations of
its bits). The score of a labelling is the leave-one-out nearest-centroid accuracy in the space of the
top components, beside the same score with the labels shuffled (what chance gives)."""
from __future__ import annotations

import numpy as np

from . import plots

PROPERTIES = ("popcount", "lowest_bit", "rotation_class")


def token_properties(n_tokens: int) -> tuple[int, dict[str, np.ndarray]]:
    """(w, {property: label per token 0..n_tokens-1})."""
    w = max(1, int(n_tokens - 1).bit_length())
    t = np.arange(n_tokens, dtype=np.int64)
    bits = (t[:, None] >> np.arange(w)) & 1
    popcount = bits.sum(1)
    lowest = np.where(t == 0, w, np.argmax(bits, axis=1))
    mask = (1 << w) - 1
    rotations = np.stack([((t >> r) | (t << (w - r))) & mask for r in range(w)], 1)
    return w, {"popcount": popcount, "lowest_bit": lowest, "rotation_class": rotations.min(1)}


def pca(matrix) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates of the centred rows on all components, explained-variance ratio per component)."""
    x = np.asarray(matrix, dtype=np.float64)
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    var = s**2
    return u * s, var / var.sum()


def nearest_centroid_accuracy(points: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest-centroid accuracy over the points whose class has at least two members."""
    classes, y, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(classes), points.shape[1]))
    np.add.at(sums, y, points)
    centroids = sums / counts[:, None]
    dist = ((points[:, None, :] - centroids[None]) ** 2).sum(-1)
    usable = counts[y] >= 2
    own = (sums[y] - points) / np.maximum(counts[y] - 1, 1)[:, None]
    dist[np.arange(len(points)), y] = ((points - own) ** 2).sum(-1)
    if not usable.any():
        return float("nan")
    return float((dist.argmin(1) == y)[usable].mean())


def separation_scores(coords: np.ndarray, labels: dict[str, np.ndarray], components: int, shuffles: int = 20,
                      seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    pts = coords[:, :components]
    for name, lab in labels.items():
        shuffled = [nearest_centroid_accuracy(pts, rng.permutation(lab)) for _ in range(shuffles)]
        rows.append({"property": name, "components": components, "classes": len(np.unique(lab)),
                     "accuracy": nearest_centroid_accuracy(pts, lab), "shuffled_accuracy": float(np.mean(shuffled))})
    return rows


def plot_pairs(path: str, coords: np.ndarray, labels: np.ndarray, name: str, pairs, title: str) -> None:
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4), squeeze=False,
                             layout="constrained")
    for ax, (i, j) in zip(axes[0], pairs):
        sc = ax.scatter(coords[:, i], coords[:, j], c=labels, cmap="tab20" if name != "popcount" else "viridis", s=9)
        ax.set(xlabel=f"PC{i + 1}", ylabel=f"PC{j + 1}")
    fig.colorbar(sc, ax=axes[0].tolist(), label=name)
    fig.suptitle(title, fontsize=10)
    plots.save(fig, path, dpi=100, tight=False)
