"""Training benchmark on the CPU in float32: tokens per second, the share of step time spent making
batches, and achieved FLOP/s as a fraction of this machine's measured float32 matmul peak.

Run from the repository root:  python bench/bench_train.py

A timed step is what the training loop does per update with grad_acc_steps 1: draw a micro-batch with
PRNGDataset.batch (timed on its own), forward, backward, clip the gradient norm to 1, AdamW step.

FLOPs per step = (6 * n_params + 12 * n_layer * n_embd * T) * tokens, with T the context length and
tokens = batch * T: 6 N for the forward and backward matmuls over the parameters (the tied
embedding counted once, as it is the output layer's matmul) plus the attention scores and weighted
sum (PaLM appendix B / nanoGPT's estimate_mfu).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.data import Combo, EpochOrder, PRNGDataset  # noqa: E402
from utils.gpt2 import GPTConfig, build_model, count_parameters  # noqa: E402
from utils.params import split_ac  # noqa: E402
from utils.tokens import context_len  # noqa: E402

COMMAND = "python bench/bench_train.py"
PEAK_SIZE, PEAK_REPEATS = 2048, 7

# (name, combo, m, base/vocab, n_layer, n_head, n_embd, seq_len, batch, warm-up steps, timed steps)
CASES = [
    # Mirrors the README quickstart; update it with the quickstart.
    ("quickstart", Combo("LCG"), 256, 256, 2, 4, 64, 129, 32, 2, 16),
    # The README example's model and sequence shape, with a batch of 8 instead of 512.
    ("README shape", Combo("XSLRR", 3, 9), 2**18, 512, 4, 8, 1024, 513, 8, 1, 2),
]


def matmul_peak_flops() -> float:
    """Best of several float32 square matmuls: the achievable peak of this machine and thread count."""
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE), torch.randn(PEAK_SIZE, PEAK_SIZE)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(PEAK_REPEATS):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * PEAK_SIZE**3 / best


def measure(name, combo, m, base, n_layer, n_head, n_embd, seq_len, batch, warmup, steps):
    split = split_ac(m, 32, 32, 8, 8, np.random.default_rng(1))  # 1024 training sequences
    ds = PRNGDataset(m, [combo], split.train_a, split.train_c, 1, seq_len, base, 1, data_seed=1)
    order = EpochOrder(len(ds), batch, main_seed=1)
    T = context_len(seq_len, 1)
    torch.manual_seed(1)
    model = build_model(GPTConfig(block_size=T, vocab_size=base, n_layer=n_layer, n_head=n_head, n_embd=n_embd),
                        no_rope=False)
    model.train()
    optimizer = model.configure_optimizers(0.1, 5e-4, (0.9, 0.999), "cpu")
    params = [p for p in model.parameters() if p.requires_grad]

    data_s, compute_s = [], []
    for step in range(warmup + steps):
        start = time.perf_counter()
        x, y = ds.batch(order.indices(step), "cpu")
        made = time.perf_counter()
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        if step >= warmup:
            data_s.append(made - start)
            compute_s.append(done - made)

    n_params = count_parameters(model)
    tokens = batch * T
    flops_per_step = (6 * n_params + 12 * n_layer * n_embd * T) * tokens
    step_s = (sum(data_s) + sum(compute_s)) / steps
    return {"name": name, "n_params": n_params, "batch": batch, "T": T, "steps": steps,
            "step_s": step_s, "tok_s": tokens / step_s, "data_share": sum(data_s) / (sum(data_s) + sum(compute_s)),
            "flops": flops_per_step / step_s}


def main():
    torch.set_grad_enabled(True)
    print(f"# {COMMAND}")
    print(f"# CPU float32 (no autocast, no compile); torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs")
    print("# FLOPs/step = (6 * n_params + 12 * n_layer * n_embd * T) * batch * T")
    rows = [measure(*case) for case in CASES]
    peak = matmul_peak_flops()  # after the cases, so the peak and the runs see the same machine state
    print(f"# float32 matmul peak: {peak / 1e9:.1f} GFLOP/s (best of {PEAK_REPEATS} {PEAK_SIZE}x{PEAK_SIZE} matmuls)")
    print()
    print(f"{'case':<14}{'params':>12}{'batch':>7}{'T':>5}{'steps':>7}{'s/step':>9}{'tok/s':>10}{'data %':>8}"
          f"{'GFLOP/s':>9}{'of peak':>9}")
    for r in rows:
        print(f"{r['name']:<14}{r['n_params']:>12,}{r['batch']:>7}{r['T']:>5}{r['steps']:>7}{r['step_s']:>9.3f}"
              f"{r['tok_s']:>10,.0f}{100 * r['data_share']:>7.2f}%{r['flops'] / 1e9:>9.1f}{r['flops'] / peak:>8.1%}")


if __name__ == "__main__":
    main()
