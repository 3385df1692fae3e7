"""The one training loop of both scripts: micro-batches, gradient accumulation, clipping, the LR of
the task's schedule, evaluation, checkpoints, exact resume, progress lines, preemption.

What differs between the scripts lives in a `Task`: how a micro-batch is drawn, the LR at an update,
what an evaluation measures and how its row is recorded.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field

import torch

from .distributed import DistInfo, all_reduce_sum
from .evaluation import autocast, batch_counts

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on a signal after writing a checkpoint; resume with --resume auto


class NonFiniteLoss(RuntimeError):
    pass


class Preempted(Exception):
    """Raised after the checkpoint of a run stopped by SIGTERM/SIGUSR1 has been written."""

    def __init__(self, step: int, path: str | None):
        super().__init__(f"stopped by signal at step {step}; checkpoint {path}")
        self.step, self.path = step, path


@dataclass
class LoopConfig:
    num_steps: int
    grad_acc_steps: int
    eval_interval: int
    checkpoint_interval: int
    save_checkpoints: bool
    eval_at_start: bool
    dtype: torch.dtype
    digits: int


@dataclass
class TrainState:
    """Everything about the loop's progress that a checkpoint must carry for an exact resume."""
    update: int = 0
    micro_step: int = 0
    started: bool = False  # the step-0 evaluation has been done
    # sums since the last evaluation: loss (unscaled), correct tokens, correct last numbers,
    # micro-batches, tokens, sequences, grad norm, updates
    accum: list[float] = field(default_factory=lambda: [0.0] * 8)

    def state_dict(self) -> dict:
        return {"update": self.update, "micro_step": self.micro_step, "started": self.started,
                "accum": list(self.accum)}

    @classmethod
    def from_state_dict(cls, d: dict) -> "TrainState":
        return cls(int(d["update"]), int(d["micro_step"]), bool(d["started"]), [float(v) for v in d["accum"]])


class Task:
    """Hooks the two scripts fill in."""

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

    def save_checkpoint(self, state: TrainState, optimizer) -> str | None:
        """Write a checkpoint at state.update (master) and return its path."""
        raise NotImplementedError

    def progress(self, step: int, train: dict | None, test: dict, lr: float, tok_per_s: float,
                 eta_s: float) -> str:
        raise NotImplementedError

    def on_final_micro_batch(self, hit: torch.Tensor) -> None:
        """Per-token correctness (B, C) of the run's very last micro-batch (curriculum keeps it)."""


class StopSignals:
    """Turn SIGTERM/SIGUSR1 (what SLURM sends before a kill or requeue) into a flag checked once per
    update, so the update in flight finishes and a checkpoint is written."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def train(model, train_model, optimizer, task: Task, cfg: LoopConfig, info: DistInfo, state: TrainState,
          signals: StopSignals | None = None, log=print) -> TrainState:
    """Run updates state.update .. cfg.num_steps - 1.

    `model` is used for evaluation (possibly compiled), `train_model` for training (DDP-wrapped when
    distributed). Evaluates at step 0 (if asked), every eval_interval updates and at the last update;
    checkpoints every checkpoint_interval updates and at the last one.
    """
    G, device = cfg.grad_acc_steps, info.device
    params = [p for p in model.parameters() if p.requires_grad]
    acc = torch.tensor(state.accum, dtype=torch.float64, device=device)
    model.train()

    def evaluate_and_record(train_stats):
        lr_next = task.lr(min(state.update, cfg.num_steps - 1))
        test = task.evaluate(model)
        task.record(state.update, train_stats, test, lr_next)
        return test, lr_next

    if cfg.eval_at_start and not state.started:
        test, lr_next = evaluate_and_record(None)
        if info.master:
            log(task.progress(0, None, test, lr_next, float("nan"), float("nan")))
        state.started = True
        if cfg.save_checkpoints:
            task.save_checkpoint(state, optimizer)
    state.started = True

    interval_start, interval_updates = time.perf_counter(), 0
    while state.update < cfg.num_steps:
        lr = task.lr(state.update)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for g in range(G):
            x, y = task.micro_batch(state.micro_step, state.update)
            last_micro = g == G - 1
            sync = contextlib.nullcontext() if last_micro or not info.enabled else train_model.no_sync()
            with sync:
                with autocast(device, cfg.dtype):
                    logits, loss = train_model(x, y)
                (loss / G).backward()
            with torch.no_grad():
                correct, last, hit = batch_counts(logits, y, cfg.digits)
                acc[:6] += torch.stack([loss.detach().double(), correct.double(), last.double(),
                                        torch.ones((), dtype=torch.float64, device=device),
                                        torch.tensor(float(y.numel()), dtype=torch.float64, device=device),
                                        torch.tensor(float(len(y)), dtype=torch.float64, device=device)])
                if last_micro and state.update == cfg.num_steps - 1:
                    task.on_final_micro_batch(hit)
            state.micro_step += 1
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if not torch.isfinite(grad_norm):
            raise NonFiniteLoss(f"non-finite loss or gradient at update {state.update + 1} "
                                f"(loss {loss.item():.4g}, grad norm {grad_norm.item():.4g}); "
                                f"the last good checkpoint is kept")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        acc[6:] += torch.stack([grad_norm.detach().double(), torch.ones((), dtype=torch.float64, device=device)])
        state.update += 1
        interval_updates += 1

        if state.update % cfg.eval_interval == 0 or state.update == cfg.num_steps:
            totals = all_reduce_sum(acc.clone(), info).tolist()
            loss_sum, correct, last, micro, tokens, seqs, norm_sum, updates = totals
            train_stats = {"loss": loss_sum / micro, "acc": correct / tokens, "last_acc": last / seqs,
                           "grad_norm": norm_sum / updates}
            acc.zero_()
            elapsed = time.perf_counter() - interval_start
            tok_per_s = tokens / elapsed
            eta = elapsed / interval_updates * (cfg.num_steps - state.update)
            test, lr_next = evaluate_and_record(train_stats)
            if info.master:
                log(task.progress(state.update, train_stats, test, lr_next, tok_per_s, eta))
            interval_start, interval_updates = time.perf_counter(), 0

        stop = signals is not None and _agree(signals.received is not None, info)
        periodic = state.update % cfg.checkpoint_interval == 0 or state.update == cfg.num_steps
        if (cfg.save_checkpoints and periodic) or stop:
            # The checkpoint keeps the sums over all ranks; on resume rank 0 starts from them and the
            # other ranks from zero, so the next evaluation's totals are unchanged.
            state.accum = all_reduce_sum(acc.clone(), info).tolist()
            path = task.save_checkpoint(state, optimizer)
            if stop:
                raise Preempted(state.update, path)
    state.accum = [0.0] * 8
    return state


def _agree(flag: bool, info: DistInfo) -> bool:
    """True on every rank if any rank received a stop signal."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64, device=info.device)
    return bool(all_reduce_sum(t, info).item() > 0)
