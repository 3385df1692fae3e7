"""Train one GPT on several moduli at once, with modulus weights and LR that move by phase (a
curriculum), optionally starting from pretrained weights. Configuration from a YAML file (keys in
docs/parameters.md), flags written on the command line override it; output files and their names as
the original's (docs/curriculum.md)."""
from __future__ import annotations

from utils.preemption import catch_stop_signals, exit_with

if __name__ == "__main__":  # before the imports below, which take seconds: a stop signal then ends the run, exit 75
    catch_stop_signals()

import os

import numpy as np
import torch

from utils import config, curriculum_config, distributed, plots, run, settings
from utils.config import fail
from utils.curriculum import ModulusSampler
from utils.data import to_device
from utils.evaluation import number_correct, plot_accuracy_by_position
from utils.gpt2 import GPTConfig, build_model, count_parameters
from utils.pretrained import load_pretrained
from utils.results import plot_or_warn, save_npz, save_positions, save_shared, save_table, save_torch
from utils.run import FileKind
from utils.runtime import clean_state_dict, plain_config
from utils.schedules import modulus_weights, phase_lr
from utils.trainer import Task, format_eta


def build_parser() -> config.ConfigParser:
    """Flags, defaults, bounds and help come from the one parameter table (utils/config.py); the
    parser returns a config.CurriculumConfig."""
    return config.build_parser(config.CURRICULUM, __doc__)


def load_config(argv) -> config.CurriculumConfig:
    """The YAML given by --config with the flags written on the command line over it, or the flags alone
    (docs/curriculum.md; utils/curriculum_config.py)."""
    return curriculum_config.load_config(build_parser(), argv)


# Every check and derivation, before anything is built (utils/settings.py, shared with analyze.py).
setup_config = settings.setup_curriculum


def base_name(cfg) -> str:
    """The original's curriculum base name (docs/curriculum.md, "Output files")."""
    first = cfg.phases[0].get("transition") if cfg.phases else None
    weights = lambda ws: ",".join(str(float(w)) for w in ws)
    tokens = [f"p{i}s{ph.phase_steps}u{ph.warmup_steps}t{ph.transition_steps}"
              f"d{'cos' if ph.lr_decay == 'cosine' else 'const'}a{weights(ph.start_weights)}-{weights(ph.end_weights)}"
              for i, (raw, ph) in enumerate(zip(cfg.phases, cfg.phase_list), 1)
              if "start_weights" in raw and "end_weights" in raw]
    phases = "_c" + "_".join(tokens) if tokens else ""
    # As the original's checks: case-sensitive (`lcg` gets _cb0), the control_bits string as written.
    cb = f"_cb{cfg.control_bits}" if cfg.type not in ("LCG", "TLCG") and str(cfg.control_bits) else ""
    # The original's YAML mode always writes prem<m>_ (premNone_ without one); its flag mode has no pretrain_m.
    prem = f"prem{cfg.pretrain_m}_" if cfg.config or cfg.pretrain_m is not None else ""
    total = sum(ph.phase_steps for ph in cfg.phase_list)  # the original's sum: a -1 phase counts as -1
    return (f"{cfg.type}_{prem}moduli{'_'.join(map(str, cfg.moduli))}_trans{first or cfg.transition_type}"
            f"{phases}_n{cfg.n_embd}_h{cfg.n_head}_d{cfg.n_layer}_na{cfg.n_a}_nc{cfg.n_c}_ne{cfg.n_example}"
            f"_vs{cfg.vocab_size}_sl{cfg.seq_len}{cb}_T{total}_B{cfg.effective_batch}_lr{cfg.lr_trgt}"
            f"_wd{weight_decay_as_written(cfg)}_dI{cfg.data_seed}_I{cfg.main_seed}")


def weight_decay_as_written(cfg):
    """weight_decay as the original's name wrote it: it took the YAML value uncast, so an integer stays one
    (`weight_decay: 0` gives `_wd0`, where the flag and `0.0` give `_wd0.0`)."""
    if cfg.config and "weight_decay" in getattr(cfg, "_names", {}):  # from the YAML, not from a flag
        written = (cfg._yaml_config.get("training") or {}).get("weight_decay")
        if isinstance(written, int) and not isinstance(written, bool):
            return written
    return cfg.weight_decay


FILES = {"csv": FileKind("", ".csv"), "checkpoint": FileKind("multi_curriculum_checkpoint_", "_step{step}.pt"),
         "correctness": FileKind("correctness_", ".npz"), "accuracy_plot": FileKind("accuracy_by_position_", ".png"),
         "schedule_plot": FileKind("schedule_", ".png"), "model": FileKind("multi_curriculum_model_lazy_", ".pt"),
         "positions": FileKind("positions_", ".npz"), "manifest": FileKind("run_", ".json")}


class CurriculumTask(Task):
    def __init__(self, cfg, info, train_sets, test_sets, scope, wandb_run, model):
        self.cfg, self.info, self.model, self.wandb = cfg, info, model, wandb_run
        self.files, self.identity = scope.files, scope.identity
        self.moduli = cfg.moduli
        self.train_sets, self.test_sets = train_sets, test_sets
        self.sampler = ModulusSampler([len(train_sets[m]) for m in self.moduli], self.weights,
                                      cfg.sampler_update_interval, cfg.batch_size, cfg.main_seed,
                                      info.rank, info.world_size)
        self.rows: list[dict] = []
        self.extra_rows: list[dict] = []
        self.positions: list[dict] = []  # test accuracy by number position per modulus at every evaluation
        self.final_train_correct = None

    def weights(self, step: int) -> np.ndarray:
        return modulus_weights(step, self.cfg.phase_list)

    def lr(self, update):
        return phase_lr(update, self.cfg.phase_list, lr_trgt=self.cfg.lr_trgt, lr_min=self.cfg.lr_min,
                        num_steps=self.cfg.num_steps)

    def micro_batch(self, micro_step, update):
        which, seq = self.sampler.draw(micro_step, update)
        device = self.info.device
        x = torch.empty((len(which), self.cfg.context_len), dtype=torch.long, device=device)
        y = torch.empty_like(x)
        for i, m in enumerate(self.moduli):
            rows = np.flatnonzero(which == i)
            if len(rows):
                xm, ym = self.train_sets[m].batch(seq[rows], device)
                rows_t = to_device(rows, device)  # pinned, non-blocking on CUDA: no host wait
                x[rows_t], y[rows_t] = xm, ym
        return x, y

    def evaluate(self, model):
        return {m: self.evaluate_dataset(model, self.test_sets[m], positions=True) for m in self.moduli}

    def record(self, step, train, test, lr):
        train, nan = train or {}, float("nan")
        row = {"step": step, "lr": lr, "train_loss": train.get("loss", nan), "train_acc": train.get("acc", nan),
               "train_last_acc": train.get("last_acc", nan), "grad_norm": train.get("grad_norm", nan)}
        row.update({f"alpha_m{m}": float(w) for m, w in zip(self.moduli, self.weights(step))})
        for m in self.moduli:
            row.update({f"test_loss_m{m}": test[m]["loss"], f"test_acc_m{m}": test[m]["acc"],
                        f"test_last_acc_m{m}": test[m]["last_acc"]})
        self.rows.append(row)
        self.positions.append({"step": step, **{f"test_m{m}": test[m]["num_acc"].tolist() for m in self.moduli}})
        if self.info.master:
            metrics = {"training/step": step, "training/learning_rate": lr}
            if train:
                metrics.update({"learning_curves/train_loss": train["loss"], "learning_curves/train_acc": train["acc"],
                                "learning_curves/train_last_acc": train["last_acc"],
                                "training/grad_norm": train["grad_norm"]})
            metrics.update({f"curriculum/alpha_m{m}": row[f"alpha_m{m}"] for m in self.moduli})
            metrics.update({f"test_m{m}/{k}": test[m][k] for m in self.moduli for k in ("loss", "acc", "last_acc")})
            self.wandb.log(metrics, step=step)

    def write_outputs(self):
        save_table(self.rows, list(self.rows[-1]), self.files.path("csv"))
        save_positions(self.files.path("positions"), self.positions)

    def table_paths(self):
        return [self.files.path("csv"), self.files.path("positions")]

    def summary(self):
        last = self.rows[-1]
        return [f"  m={m:<10d} loss {last[f'test_loss_m{m}']:.4f}  token acc {last[f'test_acc_m{m}']:.4f}  "
                f"last-number acc {last[f'test_last_acc_m{m}']:.4f}" for m in self.moduli]

    def progress(self, step, train, test, lr, tok_per_s, eta_s):
        line = f"step {step:>6d}/{self.cfg.num_steps}"
        if train:
            line += f" | train loss {train['loss']:.4f} acc {train['acc']:.4f} last {train['last_acc']:.4f}"
        w = self.weights(step)
        for i, m in enumerate(self.moduli):
            line += f" | m={m} (w {w[i]:.2f}) loss {test[m]['loss']:.3f} acc {test[m]['acc']:.3f} last {test[m]['last_acc']:.3f}"
        line += f" | lr {lr:.2e}"
        if train:
            line += f" | {tok_per_s / 1e3:.1f}k tok/s | left {format_eta(eta_s)}"
        return line

    def on_final_micro_batch(self, hit):
        correct = number_correct(hit, self.cfg.digits).double()
        self.final_train_correct = torch.cat([correct.sum(0), correct.new_tensor([len(correct)])])  # sums, rows


def main(argv=None) -> int:
    launch = run.launch(lambda: load_config(argv), setup_config)
    cfg, info = launch.cfg, launch.info
    launch.log(f"experiment: {cfg.experiment_name} ({cfg.description}); moduli {cfg.moduli}, {cfg.num_steps} updates")
    check_pretrained(cfg)
    with run.RunScope(launch, base_name(cfg), FILES) as scope:
        scope.start()
        if scope.finished:
            return 0
        train_sets, test_sets = settings.datasets(cfg, launch.splits)
        for m, k in zip(cfg.moduli, cfg.bits_to_keep):
            scope.log(f"data m={m}: {len(train_sets[m]):,} train / {len(test_sets[m]):,} test sequences "
                      f"({', '.join(c.label for c in cfg.combos_by_m[m])}, k={k})")
        model = build_model(scope.model_config, cfg.no_rope)
        scope.log(f"model: {type(model).__name__}, {count_parameters(model):,} parameters; device {info.device}, "
                  f"dtype {str(cfg.amp_dtype).replace('torch.', '')}, world size {info.world_size}")
        if scope.ckpt is None and cfg.pretrained_path:
            try:
                load_pretrained(model, cfg.pretrained_path, scope.log)
            except ValueError as err:
                fail(str(err))
        task = CurriculumTask(cfg, info, train_sets, test_sets, scope, scope.wandb(scope.files.stem), model)
        code, eval_model = scope.fit(task, model)
        if code:
            return code
        # Final files, most valuable first; a signal from here on is ignored until they are written.
        curves = {m: task.evaluate_dataset(eval_model, test_sets[m], positions=True)["num_acc"] for m in cfg.moduli}
        train_correct = None  # None when a resume started at the last update
        if task.final_train_correct is not None:  # the last micro-batch of every rank, averaged, as the original
            totals = distributed.all_reduce_sum(task.final_train_correct.clone(), info)
            train_correct = (totals[:-1] / totals[-1]).cpu().numpy()
        return scope.finish(task, lambda: save_final_outputs(cfg, task, launch.splits, curves, train_correct,
                                                             scope.log))


def check_pretrained(cfg) -> None:
    """A pretrained file that does not fit the model is bad input: refused (one line, exit 2) before the run
    claims its files, on a model built on the meta device (nothing allocated)."""
    if cfg.pretrained_path and not cfg.resume:
        with torch.device("meta"):
            probe = build_model(GPTConfig.for_run(cfg), cfg.no_rope)
        try:
            load_pretrained(probe, cfg.pretrained_path, log=lambda *a, **k: None)
        except ValueError as err:
            fail(str(err))


def save_final_outputs(cfg, task, splits, curves, train_correct, log) -> list[str]:
    """The files written once at the end: model first, then data and correctness, plots last (a plot that
    fails is a warning). A file that cannot be written raises WriteError; those before it are kept."""
    files, written = task.files, []
    if cfg.save_params:
        config = plain_config(cfg)
        config["curriculum_config"] = {"moduli": cfg.moduli, "phases": cfg.phases,  # as the original's
                                       "transition_type": cfg.transition_type}
        save_torch({"model_state_dict": clean_state_dict(task.model), "config": config,
                    "final_step": cfg.num_steps, "lowmem": True}, files.path("model"))
        written.append(files.path("model"))
        moduli = "_".join(map(str, cfg.moduli))
        acv = (f"training_ac_values_moduli{moduli}_na{cfg.n_a}_nc{cfg.n_c}_nta{cfg.n_test_a}_ntc{cfg.n_test_c}"
               f"_ne{cfg.n_example}_vs{cfg.vocab_size}_sl{cfg.seq_len}_dI{cfg.data_seed}_I{cfg.main_seed}.pt")
        keys = ("type", "moduli", "n_a", "n_c", "n_example", "vocab_size", "seq_len", "control_bits", "data_seed", "main_seed")
        written.append(save_shared(os.path.join(cfg.results_dir, acv),
                                   {"training_ac_values": {m: {"train_a": s.train_a.tolist(), "train_c": s.train_c.tolist()}
                                                           for m, s in splits.items()},
                                    "config": {k: getattr(cfg, k) for k in keys}}, log))
    if cfg.save_correctness:
        arrays = {f"test_m{m}": curves[m] for m in cfg.moduli}
        if train_correct is not None:
            arrays["train_correct"] = train_correct
        save_npz(files.path("correctness"), **arrays)
        written.append(files.path("correctness"))
    plot = files.path("accuracy_plot")
    if plot_or_warn(plot_accuracy_by_position, plot, {f"m={m}": curves[m] for m in cfg.moduli},
                    xlabel="number position in the sequence",
                    title=f"{cfg.type}: test accuracy by position after {cfg.num_steps} updates", log=log):
        task.wandb.image("final_correctness/plot", plot, cfg.num_steps)
        written.append(plot)
    if plot_or_warn(plot_schedule, files.path("schedule_plot"), cfg, task, log=log):
        written.append(files.path("schedule_plot"))
    return written


def plot_schedule(path: str, cfg, task) -> None:
    """Modulus weights and LR against the update, from the schedule functions themselves."""
    plt = plots.pyplot()
    steps = np.unique(np.linspace(0, cfg.num_steps - 1, min(cfg.num_steps, 2000)).astype(int))
    weights = np.array([task.weights(s) for s in steps])
    fig, (ax_w, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for i, m in enumerate(cfg.moduli):
        ax_w.plot(steps, weights[:, i], label=f"m={m}")
    ax_w.set(ylabel="P(modulus)", ylim=(-0.02, 1.02), title="curriculum: modulus weights and learning rate")
    ax_w.legend(fontsize=8)
    ax_lr.plot(steps, [task.lr(s) for s in steps], color="k")
    ax_lr.set(xlabel="update", ylabel="learning rate", yscale="log" if cfg.lr_min > 0 else "linear")
    for ax in (ax_w, ax_lr):
        ax.grid(alpha=0.3)
    plots.save(fig, path)


if __name__ == "__main__":
    exit_with(main)
