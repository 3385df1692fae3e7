"""Training benchmark: tokens per second, FLOP/s as a share of the device's peak (MFU), the share of
step time spent making batches and evaluating, and peak memory, on the CPU or a CUDA GPU.

Run from the repository root:
  python -m bench.bench_train                      # CPU: float32 and bf16 autocast, compile off
  python -m bench.bench_train --device cuda        # GPU: bf16 autocast, compile on, fused AdamW

A timed update is what the training loop does: grad_acc_steps micro-batches drawn with
PRNGDataset.batch (on the GPU when training there), forward and backward under autocast, clip the
gradient norm to 1, AdamW step (fused on CUDA, as utils/gpt2.py configures it).

FLOPs per update = (6 * n_params + 12 * n_layer * n_embd * T) * tokens, with T the context length and
tokens = batch * T: 6 N for the forward and backward matmuls over the parameters (the tied
embedding counted once, as it is the output layer's matmul) plus the attention scores and weighted
sum (PaLM appendix B / nanoGPT's estimate_mfu). Peak: on the CPU the best measured square matmul of
the same dtype (an achievable peak); on CUDA the GPU's dense bf16 tensor-core peak from its data
sheet (table DENSE_BF16_TFLOPS; --peak_tflops for another GPU), the usual MFU denominator.

Data share: the time to make an update's batches (timed alone, synchronised) over the update's time.
Eval share: one evaluation of the case's test set over (eval_interval updates + that evaluation), with
the README example's --eval_interval 2000.
"""
import argparse
import functools
import os
import sys
import time

if not __package__:  # run as a file: bench/, not the repository root, is on sys.path (bench/__init__.py)
    sys.exit(f"error: run it from the repository root as a module: python -m bench.{os.path.basename(__file__)[:-3]}")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import prng_train_lowmem  # noqa: E402
from bench import QUICKSTART_ARGS, ROOT  # noqa: E402
from utils.data import Combo, EpochOrder, PRNGDataset, eval_shards  # noqa: E402
from utils.distributed import DistInfo  # noqa: E402
from utils.evaluation import autocast, evaluate  # noqa: E402
from utils.gpt2 import GPTConfig, build_model, count_parameters  # noqa: E402
from utils.params import split_ac  # noqa: E402
from utils.settings import derive_single, quiet  # noqa: E402
from utils.tokens import context_len  # noqa: E402

PEAK_SIZE, PEAK_REPEATS = 2048, 7
EVAL_INTERVAL = 2000  # the README example's

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, by name fragment.
DENSE_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                     ("GH200", 989.4), ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0),
                     ("L4", 121.0)]


@functools.cache
def quickstart_case(path: str = os.path.join(ROOT, QUICKSTART_ARGS)) -> tuple[tuple, int, int]:
    """The quickstart's shapes() entry, batch per update and micro-batch, read from its flags file as
    prng_train_lowmem.py reads it."""
    cfg = prng_train_lowmem.build_parser().parse_args(["@" + path])
    derive_single(cfg, log=quiet)
    if len(cfg.combos) != 1:
        raise ValueError(f"{path}: the benchmark's quickstart case has one generator, not {len(cfg.combos)}")
    shape = (cfg.combos[0], cfg.m, cfg.base, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.seq_len, cfg.n_test_a,
             cfg.n_test_c)
    return shape, cfg.batch_size * cfg.grad_acc_steps, cfg.batch_size


# The README example's model, sequence shape and test set.
README_SHAPE = (Combo("XSLRR", 3, 9), 2**18, 512, 4, 8, 1024, 513, 128, 64)


def shapes() -> dict:
    """name -> (combo, m, base/vocab, n_layer, n_head, n_embd, seq_len, n_test_a, n_test_c)."""
    return {"quickstart": quickstart_case()[0], "README shape": README_SHAPE}


def cases() -> dict:
    """Per device: (shape, batch per update, micro-batch, warm-up updates, timed updates)."""
    _, batch, micro = quickstart_case()
    return {"cpu": [("quickstart", batch, micro, 2, 16), ("README shape", 8, 8, 1, 2)],
            "cuda": [("quickstart", batch, micro, 20, 100), ("README shape", 512, 128, 3, 10)]}


def gpu_peak(name: str, override: float | None) -> tuple[float, str]:
    if override:
        return override * 1e12, f"{override:g} TFLOP/s dense bf16 (--peak_tflops)"
    for fragment, tflops in DENSE_BF16_TFLOPS:
        if fragment in name:
            return tflops * 1e12, f"{tflops:g} TFLOP/s dense bf16 ({fragment} data sheet)"
    raise SystemExit(f"no dense bf16 peak known for {name!r}: pass --peak_tflops")


def cpu_matmul_peak(dtype: torch.dtype) -> float:
    """Best of several square matmuls in `dtype`: the achievable peak of this machine and thread count."""
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE, dtype=dtype), torch.randn(PEAK_SIZE, PEAK_SIZE, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(PEAK_REPEATS):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * PEAK_SIZE**3 / best


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name, device, dtype, use_compile, batch, micro, warmup, steps, eval_batches=None, compile_mode=None):
    combo, m, base, n_layer, n_head, n_embd, seq_len, n_test_a, n_test_c = shapes()[name]
    split = split_ac(m, 32, 32, n_test_a, n_test_c, np.random.default_rng(1))  # 1024 training pairs
    ds = PRNGDataset(m, [combo], split.train_a, split.train_c, 1, seq_len, base, 1, data_seed=1)
    test_ds = PRNGDataset(m, [combo], split.test_a, split.test_c, 1, seq_len, base, 1, data_seed=1)
    order = EpochOrder(len(ds), micro, main_seed=1)
    acc_steps = batch // micro
    T = context_len(seq_len, 1)
    torch.manual_seed(1)
    model = build_model(GPTConfig(block_size=T, vocab_size=base, n_layer=n_layer, n_head=n_head, n_embd=n_embd),
                        no_rope=False).to(device)
    model.train()
    optimizer = model.configure_optimizers(0.1, 5e-4, (0.9, 0.999), device.type)
    params = [p for p in model.parameters() if p.requires_grad]
    run = torch.compile(model, mode=compile_mode) if use_compile else model
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)

    def update(micro_step):
        for g in range(acc_steps):
            x, y = ds.batch(order.indices(micro_step + g), device)
            with autocast(device, dtype):
                _, loss = run(x, y)
            (loss / acc_steps).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for step in range(warmup):
        update(step * acc_steps)
    sync(device)
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        update(step * acc_steps)
    sync(device)
    step_s = (time.perf_counter() - start) / steps

    start = time.perf_counter()
    for step in range(steps):
        for g in range(acc_steps):
            ds.batch(order.indices((warmup + step) * acc_steps + g), device)
    sync(device)
    data_s = (time.perf_counter() - start) / steps

    # One evaluation of the test set (on the CPU its first eval_batches batches, scaled up), timed
    # after a warm-up batch.
    n_eval = len(test_ds) if eval_batches is None else min(len(test_ds), eval_batches * micro)
    shards = list(eval_shards(n_eval, micro))
    info = DistInfo(device=device)
    evaluate(run, test_ds, shards[:1], info=info, dtype=dtype, digits=1)
    sync(device)
    start = time.perf_counter()
    evaluate(run, test_ds, shards, info=info, dtype=dtype, digits=1)
    sync(device)
    eval_s = (time.perf_counter() - start) * len(test_ds) / n_eval

    n_params = count_parameters(model)
    tokens = batch * T
    flops = (6 * n_params + 12 * n_layer * n_embd * T) * tokens
    peak_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"name": name, "dtype": str(dtype).replace("torch.", ""), "compile": use_compile, "n_params": n_params,
            "batch": batch, "micro": micro, "T": T, "steps": steps, "step_s": step_s, "tok_s": tokens / step_s,
            "data_share": data_s / step_s, "eval_share": eval_s / (EVAL_INTERVAL * step_s + eval_s),
            "flops": flops / step_s, "peak_mem": peak_mem, "warm_s": warm_s}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", nargs="+", default=None, choices=["float32", "bfloat16"],
                   help="default: both on the CPU, bfloat16 on CUDA")
    p.add_argument("--compile", nargs="+", default=None, choices=["on", "off"],
                   help="default: off on the CPU, on on CUDA")
    p.add_argument("--cases", nargs="+", default=None, choices=list(shapes()), help="default: all")
    p.add_argument("--peak_tflops", type=float, default=None, help="dense bf16 peak of an unlisted GPU")
    p.add_argument("--compile_mode", default=None, choices=["default", "reduce-overhead", "max-autotune",
                                                            "max-autotune-no-cudagraphs"],
                   help="torch.compile mode to try (the scripts use the default)")
    p.add_argument("--micro", type=int, default=None,
                   help="micro-batch of the README shape (the update stays 512 sequences); default 128 on CUDA")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtypes = [getattr(torch, d) for d in (args.dtype or (["float32", "bfloat16"] if device.type == "cpu"
                                                         else ["bfloat16"]))]
    compiles = [c == "on" for c in (args.compile or (["off"] if device.type == "cpu" else ["on"]))]
    selected = [c for c in cases()[device.type] if args.cases is None or c[0] in args.cases]
    if args.micro:
        selected = [(n, b, args.micro if n == "README shape" else mi, w, s) for n, b, mi, w, s in selected]
    torch.set_grad_enabled(True)
    print(f"# python -m bench.bench_train {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        peak, peak_text = gpu_peak(gpu, args.peak_tflops)
        peaks = {d: peak for d in dtypes}
        print(f"# {gpu}; torch {torch.__version__}; MFU against {peak_text}")
    else:
        print(f"# CPU; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    if args.compile_mode:
        print(f"# torch.compile mode {args.compile_mode}")
    print("# FLOPs/update = (6 * n_params + 12 * n_layer * n_embd * T) * batch * T; "
          f"eval share with --eval_interval {EVAL_INTERVAL}")
    rows = []
    for name, batch, micro, warmup, steps in selected:
        for dtype in dtypes:
            for use_compile in compiles:
                rows.append(measure(name, device, dtype, use_compile, batch, micro, warmup, steps,
                                    eval_batches=None if device.type == "cuda" else 2,
                                    compile_mode=args.compile_mode))
    if device.type == "cpu":  # after the cases, so the peaks and the runs see the same machine state
        peaks = {d: cpu_matmul_peak(d) for d in dtypes}
        for d, v in peaks.items():
            print(f"# CPU {str(d).replace('torch.', '')} matmul peak: {v / 1e9:.1f} GFLOP/s "
                  f"(best of {PEAK_REPEATS} {PEAK_SIZE}x{PEAK_SIZE})")
    print()
    print(f"{'case':<14}{'dtype':>9}{'compile':>8}{'params':>12}{'batch':>7}{'micro':>6}{'T':>5}{'steps':>6}"
          f"{'s/update':>10}{'tok/s':>12}{'data %':>8}{'eval %':>8}{'TFLOP/s':>9}{'MFU':>7}{'peak mem':>10}"
          f"{'warm-up s':>10}")
    for r in rows:
        peak = peaks[getattr(torch, r["dtype"])]
        mem = f"{r['peak_mem'] / 2**30:.1f} GiB" if r["peak_mem"] is not None else "-"
        print(f"{r['name']:<14}{r['dtype']:>9}{'on' if r['compile'] else 'off':>8}{r['n_params']:>12,}{r['batch']:>7}"
              f"{r['micro']:>6}{r['T']:>5}{r['steps']:>6}{r['step_s']:>10.4f}{r['tok_s']:>12,.0f}"
              f"{100 * r['data_share']:>7.2f}%{100 * r['eval_share']:>7.2f}%{r['flops'] / 1e12:>9.3f}"
              f"{r['flops'] / peak:>7.1%}{mem:>10}{r['warm_s']:>10.1f}")
    return rows


if __name__ == "__main__":
    main()
