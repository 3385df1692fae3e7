"""Stop signals and the process's exit: what a terminal, a scheduler or a launcher sends to end a job
(SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1) becomes a flag the training loop reads, from the first
lines of an entry script to its exit status.

This module imports nothing heavy, so an entry script can catch the signals before it imports torch:
a signal that arrives while it imports or parses is recorded, and the run exits 75 before it writes
anything (utils/run.py, RunScope.start).
"""
from __future__ import annotations

import os
import signal
import sys

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on a signal (after a checkpoint once training began); --resume auto
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)

_early: list[int] = []  # signals received before a StopSignals took over
_skip_teardown = False  # set once the process has left a process group (see skip_teardown_at_exit)


def _record_early(signum, frame):
    _early.append(signum)


def catch_stop_signals() -> None:
    """Record stop signals from now on (the first lines of an entry script, before its heavy imports):
    no traceback for a Ctrl-C during imports, and no death by SIGTERM or SIGHUP before training."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _record_early)


class StopSignals:
    """Turn the stop signals into a flag, `received` (a signal caught before it took over counts too).
    The loop reads it between micro-batches and updates, so the work in flight ends cleanly and a
    checkpoint is written; after training it is ignored, so the final files are always written whole."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        if _early and self.received is None:
            self.received = _early[0]
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def skip_teardown_at_exit() -> None:
    """Have exit_with end the process without the interpreter's teardown. For a process that has left
    a (gloo) process group: destroying what the group's threads left behind during that teardown
    sometimes aborted the process (SIGABRT, status 134) after its work was done."""
    global _skip_teardown
    _skip_teardown = True


def exit_with(main) -> None:
    """Run an entry script's `main` and leave the process with its status (returned, or raised as
    SystemExit: 2 for bad input, 75 for a stop before the run started), a stop signal during the
    interpreter's teardown ignored: the run's files are all written (and synced) by then, and the
    status must say so."""
    try:
        code = main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if _skip_teardown:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
