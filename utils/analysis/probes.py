"""Where in the network the generators separate, and what the heads attend to.

The residual stream is read at the input of the first block (layer 0, the embedding) and after every
block (layer i). At a number position p (positions.py) the stream is taken at the last token of number
p, where the model predicts number p + 1. A linear probe (multinomial logistic regression) learns the
generator/control-bit combination from half of the sequences and is scored on the other half."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..gpt2 import apply_rotary
from .. import plots


@torch.no_grad()
def residual_streams(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    """[layer 0 (embedding), after block 1, ...], each (B, T, n_embd) float32 on the CPU."""
    found = []
    blocks = model.transformer.h
    hooks = [blocks[0].register_forward_pre_hook(lambda mod, inp: found.append(inp[0].float().cpu()))]
    hooks += [b.register_forward_hook(lambda mod, inp, out: found.append(out.float().cpu())) for b in blocks]
    try:
        model(tokens)
    finally:
        for h in hooks:
            h.remove()
    return found


def linear_probe(features: np.ndarray, labels: np.ndarray, seed: int = 0, steps: int = 300) -> float:
    """Held-out accuracy of a logistic-regression probe trained on a random half of the rows."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    train, test = order[: len(order) // 2], order[len(order) // 2:]
    x = torch.as_tensor(features, dtype=torch.float32)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    y = torch.as_tensor(labels, dtype=torch.long)
    n_classes = int(labels.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(x.shape[1], n_classes, generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(x[train] @ w + b, y[train]) + 1e-3 * (w**2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((x[test] @ w + b).argmax(1) == y[test]).float().mean())


@torch.no_grad()
def attention_maps(model, tokens: torch.Tensor) -> np.ndarray:
    """Attention weights (layers, heads, T, T) of one sequence (tokens of shape (1, T))."""
    inputs = []
    hooks = [b.attn.register_forward_pre_hook(lambda mod, inp: inputs.append(inp[0])) for b in model.transformer.h]
    try:
        model(tokens)
    finally:
        for h in hooks:
            h.remove()
    T = tokens.size(1)
    rope = model._rope(T)
    maps = []
    for block, x in zip(model.transformer.h, inputs):
        attn = block.attn
        C = x.size(-1)
        q, k, _ = attn.c_attn(x.float()).split(C, dim=2)
        q, k = (t.view(1, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k))
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        scores = q @ k.transpose(-1, -2) / (C // attn.n_head) ** 0.5
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        maps.append(scores.softmax(-1)[0].float().cpu().numpy())
    return np.stack(maps)


def plot_accuracy_by_layer(path, rows, wanted, n_layers, chance, labels):
    """Probe accuracy against position, one line per layer, with the chance level."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for layer in range(n_layers):
        ax.plot(wanted, [r["accuracy"] for r in rows if r["layer"] == layer], marker="o", ms=3,
                label="embedding" if layer == 0 else f"after block {layer}")
    ax.axhline(chance, color="gray", ls="--", lw=1, label="chance")
    ax.set(xscale="log", xlabel="position (numbers in the context)", ylabel="held-out probe accuracy", ylim=(0, 1.02),
           title=f"linear probe for the generator ({', '.join(labels)})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    plots.save(fig, path)


def plot_attention(path, maps, title):
    """A grid of attention maps, layers down and heads across."""
    plt = plots.pyplot()
    n_layer, n_head = maps.shape[:2]
    fig, axes = plt.subplots(n_layer, n_head, figsize=(2.6 * n_head, 2.6 * n_layer), squeeze=False)
    for i in range(n_layer):
        for j in range(n_head):
            axes[i, j].imshow(maps[i, j], cmap="viridis", vmin=0, vmax=1)
            axes[i, j].set_title(f"layer {i + 1} head {j + 1}", fontsize=8)
            axes[i, j].axis("off")
    fig.suptitle(title, fontsize=9)
    plots.save(fig, path, dpi=100)
