"""Train a GPT to predict one modulus's generator sequences: parse, validate, build data, build the
model, train, save. Flags and output files follow the original script (spec sections 5 and 9.1)."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

from utils import distributed, prng
from utils.data import EpochOrder, PRNGDataset, parse_combos
from utils.evaluation import evaluate, plot_accuracy_by_position
from utils.gpt2 import GPTConfig, build_model, count_parameters, param_group_summary
from utils.params import load_exclusions, split_ac
from utils.results import checkpoint_path, load_checkpoint, save_npz, save_table, save_torch, unique_path
from utils.runtime import (add_optimizer_args, add_runtime_args, check_same_run, clean_state_dict, fail, find_resume,
                           plain_config, resolve_dtype, seed_everything)
from utils.schedules import single_lr, validate_single_schedule
from utils.tokens import check_vocab, context_len
from utils.trainer import Task, fit, format_eta
from utils.wandb_utils import WandbRun, add_wandb_args, require_wandb

EVAL_COLUMNS = ["step", "train_loss", "test_loss", "train_acc", "test_acc", "train_last_acc", "test_last_acc",
                "grad_norm"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--main_seed", type=int, default=1, help="seeds model init, batch order, correctness subset")
    p.add_argument("--data_seed", type=int, default=1, help="seeds the (a, c) choice and start states")
    p.add_argument("--type", type=str, default="LCG",
                   help="LCG, TLCG, RS, RR, XSHRR, XSHRS, XSLRR, XSPCGs, or a '+'-join of these")
    p.add_argument("--m", type=int, default=65536, help="modulus")
    p.add_argument("--control_bits", type=str, default="", help="an int or a comma list (PCG types)")
    p.add_argument("--bits_to_keep", type=int, default=None, help="k; default n = ceil(log2 m) (n//2 for XSLRR)")
    p.add_argument("--vocab_size", type=int, default=None, help="default: base")
    p.add_argument("--seq_len", type=int, default=513, help="numbers per sequence")
    p.add_argument("--base", type=int, default=None, help="default: m with LCG, else 2^k")
    p.add_argument("--digits", type=int, default=1, help="base-b digits per number")
    p.add_argument("--n_a", type=int, default=32)
    p.add_argument("--n_c", type=int, default=32)
    p.add_argument("--n_test_a", type=int, default=16)
    p.add_argument("--n_test_c", type=int, default=16)
    p.add_argument("--n_example", type=int, default=1, help="training sequences per (a, c)")
    p.add_argument("--n_layer", type=int, default=1)
    p.add_argument("--n_head", type=int, default=1)
    p.add_argument("--n_embd", type=int, default=64)
    p.add_argument("--no_rope", action="store_true", help="learned positions (abacus when digits > 1)")
    p.add_argument("--num_steps", type=int, default=100, help="optimizer updates")
    p.add_argument("--warm_steps", type=int, default=10)
    add_optimizer_args(p, lr_trgt=1e-3, batch_size=32, weight_decay=0.5, eval_interval=20)
    p.add_argument("--results_dir", type=str, default="results/train")
    p.add_argument("--save_correctness", action="store_true")
    p.add_argument("--save_params", action="store_true")
    p.add_argument("--save_test_values", action="store_true")
    p.add_argument("--save_checkpoints", action="store_true")
    p.add_argument("--checkpoint_interval", type=int, default=2000)
    p.add_argument("--num_workers", type=int, default=8,
                   help="accepted for the original's command lines; batches are made in-process by one "
                        "vectorized call (on the GPU when training there), so no workers are started")
    p.add_argument("--exclude_ac_paths", type=str, nargs="*", default=None)
    add_wandb_args(p)
    add_runtime_args(p)
    return p


def setup_config(cfg: argparse.Namespace, world_size: int, log=print) -> argparse.Namespace:
    """Fill the defaults of spec section 3 and validate everything; raise ValueError on bad input."""
    positive = ["m", "seq_len", "digits", "n_a", "n_c", "n_test_a", "n_test_c", "n_example", "n_layer", "n_head",
                "n_embd", "num_steps", "batch_size", "grad_acc_steps", "eval_interval", "checkpoint_interval"]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.seq_len < 2:
        raise ValueError(f"--seq_len must be >= 2 (inputs are the sequence without its last number), got {cfg.seq_len}")
    if cfg.keep_checkpoints is not None and cfg.keep_checkpoints < 1:
        raise ValueError(f"--keep_checkpoints must be >= 1, got {cfg.keep_checkpoints}")
    if not 0 < cfg.lr_min <= cfg.lr_trgt:
        raise ValueError(f"need 0 < lr_min <= lr_trgt, got lr_min={cfg.lr_min}, lr_trgt={cfg.lr_trgt}")
    validate_single_schedule(warm_steps=cfg.warm_steps, num_steps=cfg.num_steps)
    if cfg.warm_steps >= cfg.num_steps:
        log(f"warning: warm_steps={cfg.warm_steps} >= num_steps={cfg.num_steps}: the whole run is LR warmup")
    cfg.type_list = [t.strip() for t in cfg.type.split("+")]
    n = prng.bit_length(cfg.m)
    has_lcg = any(t.upper() == "LCG" for t in cfg.type_list)
    only_xslrr = all(t.upper() == "XSLRR" for t in cfg.type_list)
    if cfg.bits_to_keep is None:
        cfg.bits_to_keep = n // 2 if only_xslrr else n  # XSLRR emits n//2 bits whatever k says (D3)
    combos = parse_combos(cfg.type, cfg.control_bits, cfg.m, cfg.bits_to_keep, log=log)
    if any(c.kind == "XSLRR" for c in combos) and cfg.bits_to_keep != n // 2:
        log(f"warning: XSLRR always outputs n//2 = {n // 2} bits; bits_to_keep={cfg.bits_to_keep} is not used for it")
    if not cfg.control_bits.strip() and all(c.kind in ("LCG", "TLCG") for c in combos):
        cfg.control_bits = "0"
    cfg.combos = combos
    if cfg.base is None:
        cfg.base = cfg.m if has_lcg else 2 ** cfg.bits_to_keep
    if cfg.vocab_size is None:
        cfg.vocab_size = cfg.base
    max_value = max(c.max_output(cfg.m) for c in combos)
    check_vocab(max_value, cfg.base, cfg.digits, cfg.vocab_size, what=f"{cfg.type} (m={cfg.m})")
    cfg.context_len = context_len(cfg.seq_len, cfg.digits)
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"--n_embd {cfg.n_embd} must be divisible by --n_head {cfg.n_head}")
    if not cfg.no_rope and (cfg.n_embd // cfg.n_head) % 2:
        raise ValueError(f"RoPE needs an even head size, got n_embd/n_head = {cfg.n_embd // cfg.n_head}")
    if cfg.use_wandb:
        require_wandb()
    cfg.world_size = world_size
    cfg.effective_batch = cfg.batch_size * cfg.grad_acc_steps * world_size
    n_train = len(combos) * cfg.n_a * cfg.n_c * cfg.n_example
    if n_train < cfg.batch_size * world_size:
        raise ValueError(f"the training set has {n_train} sequences (types x n_a x n_c x n_example), fewer than "
                         f"one batch of {cfg.batch_size} x {world_size} process(es)")
    return cfg


def base_name(cfg) -> str:
    """Spec 9.1 result base name."""
    cb = "" if cfg.type in ("LCG", "TLCG") else "_cb" + cfg.control_bits.replace(" ", "").replace(",", "_")
    suffix = "_rope" if not cfg.no_rope else ("_abacus" if cfg.digits > 1 else "")
    return (f"{cfg.type}_m{cfg.m}{cb}_kp{cfg.bits_to_keep}_vs{cfg.vocab_size}_sl{cfg.seq_len}_b{cfg.base}"
            f"_nd{cfg.digits}_na{cfg.n_a}_nc{cfg.n_c}_ne{cfg.n_example}_n{cfg.n_embd}_h{cfg.n_head}_d{cfg.n_layer}"
            f"{suffix}_dI{cfg.data_seed}_I{cfg.main_seed}_lr{cfg.lr_trgt:.6f}_Twarm{cfg.warm_steps}"
            f"_T{cfg.num_steps}_B{cfg.effective_batch}_wd{cfg.weight_decay}")


class SingleModulusTask(Task):
    def __init__(self, cfg, info, train_ds, test_ds, per_type, paths, wandb_run, model):
        self.cfg, self.info, self.wandb, self.model = cfg, info, wandb_run, model
        self.train_ds, self.test_ds, self.per_type = train_ds, test_ds, per_type
        self.order = EpochOrder(len(train_ds), cfg.batch_size, cfg.main_seed, info.rank, info.world_size)
        self.paths = paths
        self.rows: list[dict] = []
        self.extra_rows: list[dict] = []  # per-type rows

    def lr(self, update):
        c = self.cfg
        return single_lr(update, lr_trgt=c.lr_trgt, lr_min=c.lr_min, warm_steps=c.warm_steps, num_steps=c.num_steps)

    def micro_batch(self, micro_step, update):
        return self.train_ds.batch(self.order.indices(micro_step), self.info.device)

    def evaluate(self, model):
        test = self.evaluate_dataset(model, self.test_ds)
        test["per_type"] = {label: self.evaluate_dataset(model, ds) for label, ds in self.per_type.items()}
        return test

    def record(self, step, train, test, lr):
        train = train or {}
        nan = float("nan")
        row = {"step": step, "train_loss": train.get("loss", nan), "test_loss": test["loss"],
               "train_acc": train.get("acc", nan), "test_acc": test["acc"],
               "train_last_acc": train.get("last_acc", nan), "test_last_acc": test["last_acc"],
               "grad_norm": train.get("grad_norm", nan)}
        self.rows.append(row)
        metrics = {f"learning_curves/{k}": v for k, v in row.items() if k != "step" and not math.isnan(v)}
        if train:
            metrics.update({"training/step": step, "training/epoch": step * self.cfg.grad_acc_steps / self.order.per_epoch,
                            "learning_curves/learning_rate": lr})
        if self.per_type:
            type_row = {"step": step}
            for label, m in test["per_type"].items():
                type_row.update({f"{label}_loss": m["loss"], f"{label}_acc": m["acc"], f"{label}_last_acc": m["last_acc"]})
                metrics.update({f"per_type/{label}/{k}": m[k] for k in ("loss", "acc", "last_acc")})
            self.extra_rows.append(type_row)
        if self.info.master:
            self.write_tables()
            self.wandb.log(metrics, step=step)

    def write_tables(self):
        save_table(self.rows, EVAL_COLUMNS, self.paths["eval"], sep="\t", index=True)
        if self.per_type:
            cols = ["step"] + [f"{l}_{k}" for l in self.per_type for k in ("loss", "acc", "last_acc")]
            save_table(self.extra_rows, cols, self.paths["per_type"])

    def progress(self, step, train, test, lr, tok_per_s, eta_s):
        line = f"step {step:>6d}/{self.cfg.num_steps}"
        if train:
            line += f" | train loss {train['loss']:.4f} acc {train['acc']:.4f} last {train['last_acc']:.4f}"
        line += f" | test loss {test['loss']:.4f} acc {test['acc']:.4f} last {test['last_acc']:.4f}"
        line += f" | lr {lr:.2e}"
        if train:
            line += f" | {tok_per_s / 1e3:.1f}k tok/s | left {format_eta(eta_s)}"
        return line


def output_paths(cfg, base: str) -> dict:
    d = cfg.results_dir
    return {"base": base,
            "eval": unique_path(os.path.join(d, f"eval_{base}.tab")),
            "per_type": unique_path(os.path.join(d, f"per_type_eval_{base}.csv")),
            "params": os.path.join(d, f"params_{base}.pth"),
            "correctness": os.path.join(d, f"correctness_{base}.npz")}


def main(argv=None) -> int:
    cfg = build_parser().parse_args(argv)
    try:
        world = distributed.launch_env()[2]
        setup_config(cfg, world)
        exclusions = load_exclusions(cfg.exclude_ac_paths)
        ex_a, ex_c = exclusions.for_modulus(cfg.m)
        split = split_ac(cfg.m, cfg.n_a, cfg.n_c, cfg.n_test_a, cfg.n_test_c, np.random.default_rng(cfg.data_seed),
                         ex_a, ex_c)
        base = base_name(cfg)
        resume_path = find_resume(cfg, Task.checkpoint_prefix, base)
        ckpt = load_checkpoint(resume_path) if resume_path else None
        if ckpt is not None:
            check_same_run(ckpt["config"], cfg, resume_path)
    except ValueError as err:
        fail(str(err))

    try:
        info = distributed.setup(cfg.device)
    except ValueError as err:
        fail(str(err))
    log = print if info.master else (lambda *a, **k: None)
    cfg.amp_dtype = resolve_dtype(cfg.dtype, info.device)
    seed_everything(cfg.main_seed)
    t0 = time.perf_counter()
    make = lambda a, c, n_ex, combos=cfg.combos: PRNGDataset(cfg.m, combos, a, c, n_ex, cfg.seq_len, cfg.base,
                                                             cfg.digits, cfg.data_seed)
    train_ds = make(split.train_a, split.train_c, cfg.n_example)
    test_ds = make(split.test_a, split.test_c, 1)
    per_type = {}
    if len(cfg.combos) > 1:
        per_type = {test_ds.combos[j].label: test_ds.for_combo(j) for j in sorted(range(len(cfg.combos)),
                                                                                   key=lambda j: test_ds.combos[j].label)}
    log(f"data: {len(train_ds):,} train / {len(test_ds):,} test sequences of {cfg.seq_len} numbers "
        f"({', '.join(c.label for c in cfg.combos)}; m={cfg.m}), set up in {time.perf_counter() - t0:.2f} s")

    model = build_model(GPTConfig(block_size=cfg.context_len, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                                  n_head=cfg.n_head, n_embd=cfg.n_embd, digits=cfg.digits), cfg.no_rope)
    nd, ndp, nn_, nnp = param_group_summary(model)
    log(f"model: {type(model).__name__}, {count_parameters(model):,} parameters "
        f"({nd} decayed tensors / {ndp:,}, {nn_} non-decayed / {nnp:,}); device {info.device}, "
        f"dtype {str(cfg.amp_dtype).replace('torch.', '')}, world size {info.world_size}")
    os.makedirs(cfg.results_dir, exist_ok=True)
    wandb_run = WandbRun(cfg, {**plain_config(cfg), "device": str(info.device), "ddp": info.enabled},
                         base.replace("+", "-"), info.master)
    task = SingleModulusTask(cfg, info, train_ds, test_ds, per_type, output_paths(cfg, base), wandb_run, model)
    t_train = time.perf_counter()
    code, eval_model, state = fit(task, model, cfg, info, ckpt, eval_at_start=True, log=log)
    if code:
        wandb_run.finish()
        distributed.cleanup(info)
        return code

    written = [task.paths["eval"]] + ([task.paths["per_type"]] if per_type else [])
    if info.master:
        written += save_final_outputs(cfg, task, split, train_ds, eval_model, info, log)
        if cfg.save_checkpoints:
            written.append(checkpoint_path(cfg.results_dir, Task.checkpoint_prefix, base, cfg.num_steps))
        wandb_run.summary({"training/total_time_seconds": time.perf_counter() - t_train,
                           "training/final_step": state.update})
    elif cfg.save_correctness:
        correctness_passes(cfg, task, train_ds, eval_model, info)  # every rank takes part in the reductions
    wandb_run.finish()
    if info.master:
        print_summary(task.rows, written)
    distributed.cleanup(info)
    return 0


def correctness_passes(cfg, task, train_ds, model, info) -> dict:
    """Per-token-position accuracy (spec 8.2): 4096 seeded-random training sequences, the whole test
    set, and each type's test set."""
    rng = np.random.default_rng([cfg.main_seed, 8_2])
    train_idx = np.sort(rng.choice(len(train_ds), size=min(4096, len(train_ds)), replace=False))
    lo, hi = len(train_idx) * info.rank // info.world_size, len(train_idx) * (info.rank + 1) // info.world_size
    mine = train_idx[lo:hi]
    shards = [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    curves = {"train_correct": evaluate(model, train_ds, shards, info=info, dtype=cfg.amp_dtype, digits=cfg.digits,
                                        positions=True)["pos_acc"],
              "test_correct": task.evaluate_dataset(model, task.test_ds, positions=True)["pos_acc"]}
    for label, ds in task.per_type.items():
        curves[f"{label}_correct"] = task.evaluate_dataset(model, ds, positions=True)["pos_acc"]
    return curves


def save_final_outputs(cfg, task, split, train_ds, model, info, log) -> list[str]:
    written = []
    d, type_name = cfg.results_dir, cfg.type
    if cfg.save_params:
        path = unique_path(task.paths["params"])
        save_torch(clean_state_dict(task.model), path)
        trainac = os.path.join(d, f"trainac_{type_name}_m{cfg.m}_b{cfg.base}_d{cfg.digits}_na{cfg.n_a}_nc{cfg.n_c}"
                                  f"_ne{cfg.n_example}_dI{cfg.data_seed}.npz")
        save_npz(trainac, train_a=split.train_a, train_c=split.train_c)
        acv = os.path.join(d, f"training_ac_values_m{cfg.m}_na{cfg.n_a}_nc{cfg.n_c}_nta{cfg.n_test_a}"
                              f"_ntc{cfg.n_test_c}_ne{cfg.n_example}_vs{cfg.vocab_size}_sl{cfg.seq_len}"
                              f"_dI{cfg.data_seed}_I{cfg.main_seed}.pt")
        keys = ("type", "m", "n_a", "n_c", "n_example", "vocab_size", "seq_len", "control_bits", "data_seed", "main_seed")
        save_torch({"training_ac_values": {"train_a": split.train_a.tolist(), "train_c": split.train_c.tolist()},
                    "config": {k: getattr(cfg, k) for k in keys}}, acv)
        written += [path, trainac, acv]
    if cfg.save_test_values:
        testac = os.path.join(d, f"testac_{type_name}_m{cfg.m}_b{cfg.base}_d{cfg.digits}_na{cfg.n_a}_nc{cfg.n_c}"
                                 f"_nta{len(split.test_a)}_ntc{len(split.test_c)}_dI{cfg.data_seed}.npz")
        if os.path.exists(testac):
            log(f"test values file exists, kept: {testac}")
        else:
            save_npz(testac, test_a=split.test_a, test_c=split.test_c)
            written.append(testac)
    if cfg.save_correctness:
        curves = correctness_passes(cfg, task, train_ds, model, info)
        path = unique_path(task.paths["correctness"])
        save_npz(path, **curves)
        plot = path[:-4] + ".png"
        plot_accuracy_by_position(plot, {k.removesuffix("_correct"): v for k, v in curves.items()},
                                  xlabel="position in context (target token)",
                                  title=f"{cfg.type} m={cfg.m}: accuracy by position after {cfg.num_steps} steps")
        task.wandb.image("final_correctness/plot", plot, cfg.num_steps)
        written += [path, plot]
    return written


def print_summary(rows: list[dict], written: list[str]) -> None:
    last = rows[-1]
    print("\nfinal evaluation (unseen a and c):")
    print(f"  {'':10s}{'loss':>10s}{'token acc':>12s}{'last-number acc':>18s}")
    for split in ("train", "test"):
        print(f"  {split:10s}{last[split + '_loss']:>10.4f}{last[split + '_acc']:>12.4f}{last[split + '_last_acc']:>18.4f}")
    print("files written:")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    sys.exit(main())
