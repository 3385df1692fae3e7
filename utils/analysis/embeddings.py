"""Principal components of the token embedding and how well they separate bitwise classes of tokens.

The second paper's claim to test (arXiv 2510.26792, abstract): the top components group tokens into
"bitwise rotationally-invariant clusters". Each token value t (w bits, w = bits of the largest token)
gets these labels:
- popcount;
- lowest_bit: the lowest set bit (w for t = 0);
- rotation_class: the smallest value among the w rotations of t's bits (an id, not a quantity);
- zero_bits = w - popcount, the number of 0 bits;
- zero_runs_cyclic: maximal runs of 0 bits with the w bits on a circle (bit w-1 next to bit 0), so
  invariant under rotation (1 for t = 0, 0 for all ones);
- zero_runs_linear: maximal runs of 0 bits in the plain w-bit string.
That the components follow the number of zero bits and of zero runs is how a secondary summary of the
paper puts it; the abstract does not say which zero-run count is meant, so both are given (only the
cyclic one is rotation-invariant).

The score of a labelling is the leave-one-out nearest-centroid accuracy in the space of the top
components, beside the same score with the labels shuffled (what chance gives). Each component's
Pearson and Spearman correlation with each numeric label (all but rotation_class) says which quantity
it follows; a component's sign, and so its correlations' sign, is arbitrary."""
from __future__ import annotations

import numpy as np

from .. import plots

PROPERTIES = ("popcount", "lowest_bit", "rotation_class", "zero_bits", "zero_runs_cyclic", "zero_runs_linear")
NUMERIC = tuple(p for p in PROPERTIES if p != "rotation_class")


def token_properties(n_tokens: int) -> tuple[int, dict[str, np.ndarray]]:
    """(w, {property: label per token 0..n_tokens-1})."""
    w = max(1, int(n_tokens - 1).bit_length())
    t = np.arange(n_tokens, dtype=np.int64)
    bits = (t[:, None] >> np.arange(w)) & 1
    popcount = bits.sum(1)
    lowest = np.where(t == 0, w, np.argmax(bits, axis=1))
    mask = (1 << w) - 1
    rotations = np.stack([((t >> r) | (t << (w - r))) & mask for r in range(w)], 1)
    zero = bits == 0
    # A run of zeros starts at bit i when bit i is 0 and the bit below it is 1 (plain: or i = 0).
    starts_linear = zero & np.concatenate([np.ones((len(t), 1), bool), ~zero[:, :-1]], 1)
    starts_cyclic = zero & ~np.roll(zero, 1, axis=1)
    return w, {"popcount": popcount, "lowest_bit": lowest, "rotation_class": rotations.min(1),
               "zero_bits": w - popcount, "zero_runs_cyclic": np.where(t == 0, 1, starts_cyclic.sum(1)),
               "zero_runs_linear": starts_linear.sum(1)}


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


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank (what Spearman's correlation correlates)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


def pearson(x, y) -> float:
    """Pearson correlation; nan when either has no spread."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / norm) if norm > 0 else float("nan")


def component_correlations(coords: np.ndarray, labels: dict[str, np.ndarray], components: int) -> list[dict]:
    """Pearson and Spearman correlation of each of the first `components` components with each label."""
    return [{"component": i + 1, "label": name, "pearson": pearson(coords[:, i], lab),
             "spearman": pearson(average_ranks(coords[:, i]), average_ranks(lab))}
            for i in range(components) for name, lab in labels.items()]


def plot_pairs(path: str, coords: np.ndarray, labels: np.ndarray, name: str, pairs, title: str) -> None:
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4), squeeze=False,
                             layout="constrained")
    for ax, (i, j) in zip(axes[0], pairs):
        sc = ax.scatter(coords[:, i], coords[:, j], c=labels, s=9,
                        cmap="tab20" if name in ("lowest_bit", "rotation_class") else "viridis")
        ax.set(xlabel=f"PC{i + 1}", ylabel=f"PC{j + 1}")
    fig.colorbar(sc, ax=axes[0].tolist(), label=name)
    fig.suptitle(title, fontsize=10)
    plots.save(fig, path, dpi=100, tight=False)
