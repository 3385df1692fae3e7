"""The one training loop of both scripts: micro-batches, gradient accumulation, clipping, the LR of
the task's schedule, evaluation, checkpoints, exact resume, progress lines, preemption.

What differs between the scripts lives in a `Task`: how a micro-batch is drawn, the LR at an update,
what an evaluation measures and how its row is recorded.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel

from .distributed import DistInfo, all_gather, all_reduce_sum, any_rank
from .data import eval_shards
from .evaluation import autocast, batch_counts, evaluate
from .checkpoint import ACCUM, checkpoint_payload, prune_checkpoints, save_checkpoint
from .preemption import EXIT_PREEMPTED, StopSignals
from .results import WriteError
from .runtime import clean_state_dict, plain_config, prepare_model

SIGNAL_CHECK_EVERY = 10  # updates, and micro-batches within a longer update, between stop agreements under DDP


class NonFiniteLoss(RuntimeError):
    pass


class CheckpointWriteError(RuntimeError):
    """Rank 0 could not write a checkpoint (e.g. the disk is full); raised on every rank."""


class OutputWriteError(RuntimeError):
    """Rank 0 could not rewrite a table; raised on every rank."""


def write_outputs(task: "Task", info: DistInfo) -> None:
    """task.write_outputs() on rank 0, its failure raised on every rank."""
    error = None
    if info.master:
        try:
            task.write_outputs()
        except WriteError as err:
            error = err
    if any_rank(error is not None, info):
        raise OutputWriteError(str(error) if error else "rank 0 could not write its tables")


class Preempted(Exception):
    """Raised after the checkpoint of a run stopped by a stop signal has been written (path None: the
    signal came before this start's first update, so there was nothing new to save)."""

    def __init__(self, step: int, path: str | None):
        saved = f"checkpoint {path}" if path else "nothing new to save"
        super().__init__(f"stopped by signal at step {step}; {saved}")
        self.step, self.path = step, path


@dataclass
class LoopConfig:
    num_steps: int
    grad_acc_steps: int
    eval_interval: int
    checkpoint_interval: int
    save_checkpoints: bool
    dtype: torch.dtype
    digits: int


class IntervalSums:
    """What a rank sums between two evaluations, by name (checkpoint.ACCUM, in its order): views of one
    float64 tensor on the device, so the ranks add them with one all-reduce and a checkpoint keeps them as
    one row (train_state["accum"]). Counts the host knows are added as Python numbers: no copy to the device."""

    def __init__(self, values: list[float], device: torch.device):
        self.values = torch.tensor(values, dtype=torch.float64, device=device)
        (self.loss_x_tokens, self.correct_tokens, self.correct_last, self.tokens, self.sequences, self.grad_norm,
         self.updates) = (self.values[i] for i in range(len(ACCUM)))

    def add_micro_batch(self, loss: torch.Tensor, correct: torch.Tensor, last: torch.Tensor, n_tokens: float,
                        n_sequences: float) -> None:
        self.loss_x_tokens += loss.detach().double() * n_tokens
        self.correct_tokens += correct
        self.correct_last += last
        self.tokens += n_tokens
        self.sequences += n_sequences

    def add_update(self, grad_norm: torch.Tensor) -> None:
        """One update's clipped-gradient norm (rank 0 only: it is the same on every rank)."""
        self.grad_norm += grad_norm.detach().double()
        self.updates += 1.0

    def close_interval(self, info: DistInfo) -> tuple[dict, float]:
        """(the interval's training metrics over all ranks, its tokens), and the sums start again at 0."""
        t = dict(zip(ACCUM, all_reduce_sum(self.values.clone(), info).tolist()))
        self.values.zero_()
        return {"loss": t["loss_x_tokens"] / t["tokens"], "acc": t["correct_tokens"] / t["tokens"],
                "last_acc": t["correct_last"] / t["sequences"], "grad_norm": t["grad_norm"] / t["updates"]}, t["tokens"]


@dataclass
class TrainState:
    """Everything about the loop's progress that a checkpoint must carry for an exact resume."""
    update: int = 0
    micro_step: int = 0
    started: bool = False  # the step-0 evaluation has been done
    # every rank's IntervalSums.values as of the last checkpoint (checkpoint.ACCUM); [] = zeros
    accum: list[list[float]] = field(default_factory=list)

    def state_dict(self) -> dict:
        return {"update": self.update, "micro_step": self.micro_step, "started": self.started,
                "accum": [list(row) for row in self.accum]}

    @classmethod
    def from_state_dict(cls, d: dict) -> "TrainState":
        accum = [[float(v) for v in row] for row in d["accum"]]  # checked at start-up (utils.checkpoint)
        return cls(int(d["update"]), int(d["micro_step"]), bool(d["started"]), accum)

    def sums_for(self, info: DistInfo) -> list[float]:
        """This rank's sums to continue from: its own at the same world size (so the totals are added in
        the same order as without the interruption); at another world size rank 0 takes the totals."""
        if len(self.accum) == info.world_size:
            return list(self.accum[info.rank])
        if self.accum and info.master:
            return [sum(column) for column in zip(*self.accum)]
        return [0.0] * len(ACCUM)


class Task:
    """Hooks the two scripts fill in, and the checkpoint plumbing they share.

    A subclass sets cfg, info, model (the unwrapped model), files (the run's RunFiles), identity, rows
    (evaluation rows, dicts), extra_rows (per-type rows, or []) and positions (per-position accuracy
    rows: {'step': s, label: accuracy by number position}); fit sets optimizer.
    """

    def table_paths(self) -> list[str]:
        """The files write_outputs writes (the manifest lists them when the run finishes)."""
        raise NotImplementedError

    def summary(self) -> list[str]:
        """The lines of the final evaluation that end a run's output."""
        raise NotImplementedError

    def lr(self, update: int) -> float:
        raise NotImplementedError

    def micro_batch(self, micro_step: int, update: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def evaluate(self, model) -> dict:
        """Test metrics (already reduced over ranks)."""
        raise NotImplementedError

    def record(self, step: int, train: dict | None, test: dict, lr: float) -> None:
        """Append the evaluation row and rewrite the tables (master only)."""
        raise NotImplementedError

    def progress(self, step: int, train: dict | None, test: dict, lr: float, tok_per_s: float,
                 eta_s: float) -> str:
        raise NotImplementedError

    def evaluate_dataset(self, model, dataset, positions: bool = False) -> dict:
        """Exact metrics over all of `dataset`, each rank taking its contiguous share (no sequence dropped)."""
        shards = list(eval_shards(len(dataset), self.cfg.batch_size, self.info.rank, self.info.world_size))
        return evaluate(model, dataset, shards, info=self.info, dtype=self.cfg.amp_dtype, digits=self.cfg.digits,
                        positions=positions)

    def on_final_micro_batch(self, hit: torch.Tensor) -> None:
        """Per-token correctness (B, C) of the run's very last micro-batch (curriculum keeps it)."""

    def write_outputs(self) -> None:
        """Rewrite the run's tables (master; called after every evaluation and on resume)."""

    def write_checkpoint(self, state: TrainState, optimizer, path: str) -> None:
        """Write the checkpoint at state.update to `path` (this process only); WriteError names the file."""
        save_checkpoint(checkpoint_payload(
            model=clean_state_dict(self.model), optimizer=optimizer.state_dict(), step=state.update,
            rows=self.rows, extra_rows=self.extra_rows, positions=self.positions,
            train_state=state.state_dict(), amp_dtype=self.cfg.amp_dtype, identity=self.identity,
            config=plain_config(self.cfg),
            cpu_threads=torch.get_num_threads() if self.info.device.type == "cpu" else None), path)

    def save_checkpoint(self, state: TrainState, optimizer) -> str:
        """Write this run's checkpoint at state.update (master), prune its old ones; every rank learns
        whether it worked, so none waits forever for a rank 0 that gave up."""
        path = self.files.path("checkpoint", state.update)
        error = None
        if self.info.master:
            try:
                self.write_checkpoint(state, optimizer, path)
                prune_checkpoints(self.files, self.cfg.keep_checkpoints)
            except (OSError, RuntimeError) as err:
                error = err if isinstance(err, WriteError) else WriteError(path, err)
        if any_rank(error is not None, self.info):
            raise CheckpointWriteError(str(error) if error else f"could not write checkpoint {path}: failed on rank 0")
        return path

    def final_write_failed(self, err: WriteError, state: TrainState) -> int:
        """Rank 0, when a final file could not be written (a full disk): keep the trained model where a
        resume finds it, say where in one line, and return exit status 1. With --save_checkpoints it is
        the last checkpoint; otherwise that checkpoint is written now, in results_dir or, where that
        fails too, in the temporary directory (TMPDIR). --resume auto then writes the final files."""
        final = self.files.path("checkpoint", state.update)
        kept, tried = None, []
        if self.cfg.save_checkpoints and os.path.isfile(final):
            kept = final
        else:
            for folder in (self.cfg.results_dir, tempfile.gettempdir()):
                path = os.path.join(folder, os.path.basename(final))
                try:
                    self.write_checkpoint(state, self.optimizer, path)
                    kept = path
                    break
                except WriteError as failed:
                    tried.append(f"{path}: {failed.cause.strerror if isinstance(failed.cause, OSError) else failed}")
        if kept == final:
            where = (f"the trained model is kept in the checkpoint {kept}: free space and run the same command "
                     f"with --resume auto to write the final files")
        elif kept:
            where = (f"the trained model is kept in the checkpoint {kept}: free space, move it into "
                     f"{self.cfg.results_dir} and run the same command with --resume auto")
        else:
            where = f"the trained model could not be saved anywhere either ({'; '.join(tried)})"
        print(f"error: {err}; {where}", file=sys.stderr, flush=True)
        return 1

    def restore(self, ckpt: dict) -> TrainState:
        """Take the rows and loop state of a checkpoint (model/optimizer are loaded by the caller). Output
        paths are never read from it: they follow from this run's configuration."""
        self.rows = [dict(zip(ckpt["eval_columns"], r)) for r in ckpt["eval_results"]]
        self.extra_rows = list(ckpt["extra_results"])
        self.positions = list(ckpt["positions"])
        torch.set_rng_state(ckpt["torch_rng_state"])
        return TrainState.from_state_dict(ckpt["train_state"])


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def stop_agreed(signals: StopSignals | None, info: DistInfo) -> bool:
    """Whether any rank has received a stop signal (a collective under DDP: every rank must ask)."""
    return signals is not None and any_rank(signals.received is not None, info)


def train(model, train_model, optimizer, task: Task, cfg: LoopConfig, info: DistInfo, state: TrainState,
          signals: StopSignals | None = None, log=print) -> TrainState:
    """Run updates state.update .. cfg.num_steps - 1.

    `model` is used for evaluation (possibly compiled), `train_model` for training (DDP-wrapped when
    distributed). Evaluates at step 0 (if asked), every eval_interval updates and at the last update;
    checkpoints every checkpoint_interval updates and at the last one. A stop signal is read before the
    first update, between micro-batches and between updates; a stop inside an update discards its
    micro-batches, so the checkpoint is that of the last whole update and a resume redoes this one.
    """
    G, device = cfg.grad_acc_steps, info.device
    ddp = isinstance(train_model, DistributedDataParallel)
    params = [p for p in model.parameters() if p.requires_grad]
    sums = IntervalSums(state.sums_for(info), device)
    model.train()

    def evaluate_and_record(train_stats):
        lr_next = task.lr(state.update)  # after the final update: the schedule's end value, as the original reported
        test = task.evaluate(model)
        task.record(state.update, train_stats, test, lr_next)
        write_outputs(task, info)
        return test, lr_next

    if state.update < cfg.num_steps and stop_agreed(signals, info):
        raise Preempted(state.update, None)  # the checkpoint of this update, if any, is where the run resumes
    if not state.started:
        test, lr_next = evaluate_and_record(None)
        if info.master:
            log(task.progress(0, None, test, lr_next, float("nan"), float("nan")))
        state.started = True
        if cfg.save_checkpoints:
            task.save_checkpoint(state, optimizer)

    interval_start, interval_updates = time.perf_counter(), 0
    while state.update < cfg.num_steps:
        lr = task.lr(state.update)
        for group in optimizer.param_groups:
            group["lr"] = lr
        first_micro_step, sums_before = state.micro_step, sums.values.clone() if G > 1 else None
        stop = False
        for g in range(G):
            x, y = task.micro_batch(state.micro_step, state.update)
            last_micro = g == G - 1
            # DDP all-reduces gradients only in the last micro-batch's backward; the others accumulate locally.
            sync = train_model.no_sync() if ddp and not last_micro else contextlib.nullcontext()
            with sync:
                with autocast(device, cfg.dtype):
                    logits, loss = train_model(x, y)
                with torch.no_grad():  # counted before backward, so the logits are freed before it runs
                    correct, last, hit = batch_counts(logits, y, cfg.digits)
                    if last_micro and state.update == cfg.num_steps - 1:
                        task.on_final_micro_batch(hit)
                del logits, hit
                (loss / G).backward()
            with torch.no_grad():
                sums.add_micro_batch(loss, correct, last, float(y.numel()), float(len(y)))
            state.micro_step += 1
            # Between micro-batches too, so a long update (a large grad_acc_steps) cannot hold a stop off.
            look = not info.enabled or g % SIGNAL_CHECK_EVERY == SIGNAL_CHECK_EVERY - 1
            if not last_micro and look and stop_agreed(signals, info):
                state.micro_step = first_micro_step  # the update is dropped whole: resume redoes it
                sums.values.copy_(sums_before)
                optimizer.zero_grad(set_to_none=True)
                stop = True
                break
        if not stop:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            if not torch.isfinite(grad_norm):
                raise NonFiniteLoss(f"non-finite loss or gradient at update {state.update + 1} "
                                    f"(loss {loss.item():.4g}, grad norm {grad_norm.item():.4g}); stopped before "
                                    f"applying it, the checkpoints and tables written so far are kept")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if info.master:  # the same on every rank after the all-reduce
                sums.add_update(grad_norm)
            state.update += 1
            interval_updates += 1

            if state.update % cfg.eval_interval == 0 or state.update == cfg.num_steps:
                train_stats, tokens = sums.close_interval(info)
                elapsed = time.perf_counter() - interval_start
                tok_per_s = tokens / elapsed
                eta = elapsed / interval_updates * (cfg.num_steps - state.update)
                test, lr_next = evaluate_and_record(train_stats)
                if info.master:
                    log(task.progress(state.update, train_stats, test, lr_next, tok_per_s, eta))
                interval_start, interval_updates = time.perf_counter(), 0

            # Under DDP the ranks agree on a stop with an all-reduce, a wait for the device: every
            # SIGNAL_CHECK_EVERY updates only (a few seconds at most on a GPU; schedulers warn minutes ahead).
            look = not info.enabled or state.update % SIGNAL_CHECK_EVERY == 0 or state.update == cfg.num_steps
            stop = look and stop_agreed(signals, info)
        periodic = state.update % cfg.checkpoint_interval == 0 or state.update == cfg.num_steps
        if (cfg.save_checkpoints and periodic) or stop:
            state.accum = all_gather(sums.values, info)  # the interval's sums so far: the next evaluation is unchanged
            path = task.save_checkpoint(state, optimizer)
            if stop:
                raise Preempted(state.update, path)
    state.accum = []
    return state


def load_optimizer_state(optimizer, state: dict) -> None:
    """Load AdamW's state but keep the settings this machine chose (fused on CUDA, not on CPU): a
    checkpoint's param groups would otherwise bring back the implementation of the machine that wrote it."""
    implementation = ("fused", "foreach", "capturable", "differentiable")
    chosen = [{k: g[k] for k in implementation if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, chosen):
        group.update(settings)
        if settings.get("fused") or settings.get("capturable"):  # these kernels want the step on the device
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if "step" in st:
                    st["step"] = st["step"].to(device=p.device, dtype=torch.float32)


def fit(task: Task, model, cfg, info: DistInfo, ckpt: dict | None, signals: StopSignals, *, log=print):
    """Everything between a built model and the final outputs, for both scripts: resume state,
    compile/DDP, AdamW, the loop, and the stop/non-finite/write-failure exits. The checkpoint was
    validated at start-up (utils/run.py, utils/checkpoint.py); so was the disk space.

    Returns (exit code, eval model, final TrainState): 0, EXIT_PREEMPTED after a signal (checkpoint
    written), or 1 after a non-finite loss (nothing applied for that update) or a file that could not
    be written (one line naming it; the files written before are intact).
    """
    state = task.restore(ckpt) if ckpt is not None else TrainState()
    loop = LoopConfig(num_steps=cfg.num_steps, grad_acc_steps=cfg.grad_acc_steps, eval_interval=cfg.eval_interval,
                      checkpoint_interval=cfg.checkpoint_interval, save_checkpoints=cfg.save_checkpoints,
                      dtype=cfg.amp_dtype, digits=cfg.digits)
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state_dict"])
    eval_model, train_model = prepare_model(model, info, cfg.compile, log)
    optimizer = task.optimizer = model.configure_optimizers(cfg.weight_decay, cfg.lr_trgt, (cfg.beta1, cfg.beta2),
                                                            info.device.type)
    if ckpt is not None:
        load_optimizer_state(optimizer, ckpt["optimizer_state_dict"])
    try:
        if ckpt is not None:
            write_outputs(task, info)  # the tables as of the checkpoint (a crash may have left newer rows)
        train(eval_model, train_model, optimizer, task, loop, info, state, signals, log)
    except Preempted as stop:
        log(f"{stop}; continue with --resume auto")
        return EXIT_PREEMPTED, eval_model, state
    except (NonFiniteLoss, CheckpointWriteError, OutputWriteError) as err:
        if info.master:
            print(f"error: {err}", file=sys.stderr, flush=True)
        return 1, eval_model, state
    return 0, eval_model, state
