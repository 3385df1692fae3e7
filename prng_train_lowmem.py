"""Train a GPT to predict one modulus's generator sequences: parse, validate, build data, build the
model, train, save. Flags, defaults and output files are the original script's (docs/single_modulus.md)."""
from __future__ import annotations

from utils.preemption import catch_stop_signals, exit_with

if __name__ == "__main__":  # before the imports below, which take seconds: a stop signal then ends the run, exit 75
    catch_stop_signals()

import math
import os
import time

import numpy as np

from utils import config, run, settings
from utils.data import EpochOrder, eval_shards
from utils.evaluation import evaluate, plot_accuracy_by_position
from utils.gpt2 import build_model, count_parameters, param_group_summary
from utils.results import plot_or_warn, save_npz, save_positions, save_shared, save_table, save_torch
from utils.run import FileKind
from utils.runtime import clean_state_dict
from utils.schedules import single_lr
from utils.seeds import correctness_sample_rng
from utils.trainer import Task, format_eta

EVAL_COLUMNS = ["step", "train_loss", "test_loss", "train_acc", "test_acc", "train_last_acc", "test_last_acc",
                "grad_norm"]


def build_parser() -> config.ConfigParser:
    """Flags, defaults, bounds and help come from the one parameter table (utils/config.py); the
    parser returns a config.SingleModulusConfig. `@FILE` reads flags from a file, one flag and its value
    per line (configs/quickstart.args); flags after it override it."""
    return config.build_parser(config.SINGLE, __doc__, fromfile_prefix_chars="@")


# Every check and derivation, before anything is built (utils/settings.py, shared with analyze.py).
setup_config = settings.setup_single


def base_name(cfg) -> str:
    """The original's result base name (docs/single_modulus.md, "Output files"): `_cb` unless the type is exactly
    LCG or TLCG (case-sensitive), the control bits as written with commas as `_` (spaces kept: "1, 2" gives
    `_cb1_ 2`)."""
    cb = "" if cfg.type in ("LCG", "TLCG") else "_cb" + cfg.control_bits.replace(",", "_")
    suffix = "_rope" if not cfg.no_rope else ("_abacus" if cfg.digits > 1 else "")
    return (f"{cfg.type}_m{cfg.m}{cb}_kp{cfg.bits_to_keep}_vs{cfg.vocab_size}_sl{cfg.seq_len}_b{cfg.base}"
            f"_nd{cfg.digits}_na{cfg.n_a}_nc{cfg.n_c}_ne{cfg.n_example}_n{cfg.n_embd}_h{cfg.n_head}_d{cfg.n_layer}"
            f"{suffix}_dI{cfg.data_seed}_I{cfg.main_seed}_lr{cfg.lr_trgt:.6f}_Twarm{cfg.warm_steps}"
            f"_T{cfg.num_steps}_B{cfg.effective_batch}_wd{cfg.weight_decay}")


FILES = {"eval": FileKind("eval_", ".tab"), "per_type": FileKind("per_type_eval_", ".csv"),
         "checkpoint": FileKind("checkpoint_", "_step{step}.pt"), "params": FileKind("params_", ".pth"),
         "correctness": FileKind("correctness_", ".npz"), "correctness_plot": FileKind("correctness_", ".png"),
         "positions": FileKind("positions_", ".npz"), "manifest": FileKind("run_", ".json")}


class SingleModulusTask(Task):
    def __init__(self, cfg, info, train_ds, test_ds, per_type, scope, wandb_run, model):
        self.cfg, self.info, self.wandb, self.model = cfg, info, wandb_run, model
        self.train_ds, self.test_ds, self.per_type = train_ds, test_ds, per_type
        self.order = EpochOrder(len(train_ds), cfg.batch_size, cfg.main_seed, info.rank, info.world_size)
        self.files, self.identity = scope.files, scope.identity
        self.rows: list[dict] = []
        self.extra_rows: list[dict] = []  # per-type rows
        self.positions: list[dict] = []  # test accuracy by number position at every evaluation

    def lr(self, update):
        c = self.cfg
        return single_lr(update, lr_trgt=c.lr_trgt, lr_min=c.lr_min, warm_steps=c.warm_steps, num_steps=c.num_steps)

    def micro_batch(self, micro_step, update):
        return self.train_ds.batch(self.order.indices(micro_step), self.info.device)

    def evaluate(self, model):
        if not self.per_type:
            return {**self.evaluate_dataset(model, self.test_ds, positions=True), "per_type": {}}
        # One pass over the combined test set also gives each type's metrics (a row's type follows from
        # its index): the same sequences as test_ds.for_combo(j), without evaluating them a second time.
        shards = eval_shards(len(self.test_ds), self.cfg.batch_size, self.info.rank, self.info.world_size)
        test = evaluate(model, self.test_ds, shards, info=self.info, dtype=self.cfg.amp_dtype, digits=self.cfg.digits,
                        positions=True, per_combo=True)
        by_label = dict(zip((c.label for c in self.test_ds.combos), test.pop("per_combo")))
        test["per_type"] = {label: by_label[label] for label in self.per_type}
        return test

    def record(self, step, train, test, lr):
        train = train or {}
        nan = float("nan")
        row = {"step": step, "train_loss": train.get("loss", nan), "test_loss": test["loss"],
               "train_acc": train.get("acc", nan), "test_acc": test["acc"],
               "train_last_acc": train.get("last_acc", nan), "test_last_acc": test["last_acc"],
               "grad_norm": train.get("grad_norm", nan)}
        self.rows.append(row)
        self.positions.append({"step": step, "test": test["num_acc"].tolist(),
                               **{label: m["num_acc"].tolist() for label, m in test["per_type"].items()}})
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
            self.wandb.log(metrics, step=step)

    def write_outputs(self):
        save_table(self.rows, EVAL_COLUMNS, self.files.path("eval"), sep="\t", index=True)
        if self.per_type:
            cols = ["step"] + [f"{l}_{k}" for l in self.per_type for k in ("loss", "acc", "last_acc")]
            save_table(self.extra_rows, cols, self.files.path("per_type"))
        save_positions(self.files.path("positions"), self.positions)

    def table_paths(self):
        return [self.files.path("eval")] + ([self.files.path("per_type")] if self.per_type else []) + \
            [self.files.path("positions")]

    def summary(self):
        last = self.rows[-1]
        return [f"  {'':10s}{'loss':>10s}{'token acc':>12s}{'last-number acc':>18s}"] + [
            f"  {s:10s}{last[s + '_loss']:>10.4f}{last[s + '_acc']:>12.4f}{last[s + '_last_acc']:>18.4f}"
            for s in ("train", "test")]

    def progress(self, step, train, test, lr, tok_per_s, eta_s):
        line = f"step {step:>6d}/{self.cfg.num_steps}"
        if train:
            line += f" | train loss {train['loss']:.4f} acc {train['acc']:.4f} last {train['last_acc']:.4f}"
        line += f" | test loss {test['loss']:.4f} acc {test['acc']:.4f} last {test['last_acc']:.4f}"
        line += f" | lr {lr:.2e}"
        if train:
            line += f" | {tok_per_s / 1e3:.1f}k tok/s | left {format_eta(eta_s)}"
        return line


def main(argv=None) -> int:
    launch = run.launch(lambda: build_parser().parse_args(argv), setup_config)
    cfg, info, split = launch.cfg, launch.info, launch.splits[launch.cfg.m]
    with run.RunScope(launch, base_name(cfg), FILES) as scope:
        scope.start()
        if scope.finished:
            return 0
        train_ds, test_ds, per_type = build_data(cfg, split, scope.log)
        model = build_model(scope.model_config, cfg.no_rope)
        nd, ndp, nn_, nnp = param_group_summary(model)
        scope.log(f"model: {type(model).__name__}, {count_parameters(model):,} parameters "
                  f"({nd} decayed tensors / {ndp:,}, {nn_} non-decayed / {nnp:,}); device {info.device}, "
                  f"dtype {str(cfg.amp_dtype).replace('torch.', '')}, world size {info.world_size}")
        task = SingleModulusTask(cfg, info, train_ds, test_ds, per_type, scope,
                                 scope.wandb(scope.files.stem.replace("+", "-")), model)
        code, eval_model = scope.fit(task, model)
        if code:
            return code
        # Final files, most valuable first; a signal from here on is ignored until they are written.
        curves = correctness_passes(cfg, task, train_ds, eval_model, info) if cfg.save_correctness else None
        return scope.finish(task, lambda: save_final_outputs(cfg, task, split, curves, scope.log))


def build_data(cfg, split, log) -> tuple:
    """(train set, test set, {type label: its part of the test set} when the run has several types)."""
    t0 = time.perf_counter()
    train_sets, test_sets = settings.datasets(cfg, {cfg.m: split})
    train_ds, test_ds = train_sets[cfg.m], test_sets[cfg.m]
    per_type = {}
    if len(cfg.combos) > 1:
        order = sorted(range(len(cfg.combos)), key=lambda j: test_ds.combos[j].label)
        per_type = {test_ds.combos[j].label: test_ds.for_combo(j) for j in order}
    log(f"data: {len(train_ds):,} train / {len(test_ds):,} test sequences of {cfg.seq_len} numbers "
        f"({', '.join(c.label for c in cfg.combos)}; m={cfg.m}), set up in {time.perf_counter() - t0:.2f} s")
    return train_ds, test_ds, per_type


def correctness_passes(cfg, task, train_ds, model, info) -> dict:
    """Per-token-position accuracy, as the original: 4096 seeded-random training sequences, the whole test
    set, and each type's test set."""
    rng = correctness_sample_rng(cfg.main_seed)
    train_idx = np.sort(rng.choice(len(train_ds), size=min(4096, len(train_ds)), replace=False))
    lo, hi = len(train_idx) * info.rank // info.world_size, len(train_idx) * (info.rank + 1) // info.world_size
    mine = train_idx[lo:hi]
    shards = [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
    test = task.evaluate(model)  # the whole test set and, in the same pass, each type's
    curves = {"train_correct": evaluate(model, train_ds, shards, info=info, dtype=cfg.amp_dtype, digits=cfg.digits,
                                        positions=True)["pos_acc"],
              "test_correct": test["pos_acc"]}
    for label, metrics in test["per_type"].items():
        curves[f"{label}_correct"] = metrics["pos_acc"]
    return curves


def save_final_outputs(cfg, task, split, curves, log) -> list[str]:
    """The files written once at the end, model first, then data and correctness, plots last (a plot that
    fails is a warning). A file that cannot be written raises WriteError; those before it are kept."""
    files, written, d = task.files, [], cfg.results_dir
    if cfg.save_params:
        save_torch(clean_state_dict(task.model), files.path("params"))
        written.append(files.path("params"))
        data = f"{cfg.type}_m{cfg.m}_b{cfg.base}_d{cfg.digits}_na{cfg.n_a}_nc{cfg.n_c}"
        written.append(save_shared(os.path.join(d, f"trainac_{data}_ne{cfg.n_example}_dI{cfg.data_seed}.npz"),
                                   {"train_a": split.train_a, "train_c": split.train_c}, log))
        acv = (f"training_ac_values_m{cfg.m}_na{cfg.n_a}_nc{cfg.n_c}_nta{cfg.n_test_a}_ntc{cfg.n_test_c}"
               f"_ne{cfg.n_example}_vs{cfg.vocab_size}_sl{cfg.seq_len}_dI{cfg.data_seed}_I{cfg.main_seed}.pt")
        keys = ("type", "m", "n_a", "n_c", "n_example", "vocab_size", "seq_len", "control_bits", "data_seed", "main_seed")
        written.append(save_shared(os.path.join(d, acv),
                                   {"training_ac_values": {"train_a": split.train_a.tolist(),
                                                           "train_c": split.train_c.tolist()},
                                    "config": {k: getattr(cfg, k) for k in keys}}, log))
    if cfg.save_test_values:
        testac = os.path.join(d, f"testac_{cfg.type}_m{cfg.m}_b{cfg.base}_d{cfg.digits}_na{cfg.n_a}_nc{cfg.n_c}"
                                 f"_nta{len(split.test_a)}_ntc{len(split.test_c)}_dI{cfg.data_seed}.npz")
        written.append(save_shared(testac, {"test_a": split.test_a, "test_c": split.test_c}, log))
    if curves is not None:
        save_npz(files.path("correctness"), **curves)
        written.append(files.path("correctness"))
        plot = files.path("correctness_plot")
        if plot_or_warn(plot_accuracy_by_position, plot, {k.removesuffix("_correct"): v for k, v in curves.items()},
                        xlabel="position in context (target token)",
                        title=f"{cfg.type} m={cfg.m}: accuracy by position after {cfg.num_steps} steps", log=log):
            task.wandb.image("final_correctness/plot", plot, cfg.num_steps)
            written.append(plot)
    return written


if __name__ == "__main__":
    exit_with(main)
