"""Preemption and divergence: the signals a run acts on and the exit codes launchers act on.

Slurm sends SIGUSR1 (or SIGTERM) before a time limit or a preemption. The handler only sets a flag, and
it is installed before anything slow happens (imports of torch and DeepSpeed, data, engine build): a
signal at any moment leads to exit code 75 and a PREEMPTED marker, and slurm/*.sh requeue the job. The
flag is read where every rank is at the same point (each step's reduction, and the ends of start-up),
so all ranks stop together.
"""

from __future__ import annotations

import signal

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: slurm/*.sh requeue the job on it
PREEMPTED_MARKER = "PREEMPTED"  # launchers may fold the exit code; the marker survives them
DIVERGED_EXIT = 3  # not 1 (a crash), not 2 (the user's input), not 75 (requeue): the run went non-finite
DIVERGED_MARKER = "DIVERGED"


class Preempted(Exception):
    """Raised after the preemption checkpoint (if any step was taken); the CLI exits with PREEMPTED_EXIT."""

    exit_code = PREEMPTED_EXIT


class Diverged(Exception):
    """Raised after `train.nonfinite_limit` non-finite steps in a row (train.nonfinite: stop)."""

    exit_code = DIVERGED_EXIT


class _PreemptionFlag:
    """Set by SIGUSR1/SIGTERM; read at the next point where every rank is."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True


PREEMPTION = _PreemptionFlag()
