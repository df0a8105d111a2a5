"""Crash injection for the apply tests: one environment variable, read here and nowhere else.

HPCTL_APPLY_CRASH_AT=POINT makes `hpctl` SIGKILL itself (no cleanup, no finally, no lock
release, as the OOM killer or a closed laptop would) at POINT of an apply:

  before_submit       the plan is final and the lock held; nothing handed to the scheduler yet
  after_submit        the scheduler accepted the job; state does not record it yet
  during_state_write  the new state is written and synced to its temp file, not yet renamed

It is not the trainer's HPCTL_CRASH_AT (adapter/faults.py), which the submitted job inherits.
"""
from __future__ import annotations

import os
import signal

from hpctl.errors import HpctlError
from hpctl.suggest import did_you_mean

VARIABLE = "HPCTL_APPLY_CRASH_AT"
POINTS = ("before_submit", "after_submit", "during_state_write")


def crash_if(point: str) -> None:
    """SIGKILL this process when HPCTL_APPLY_CRASH_AT names this point. Any other value is an
    error, so a misspelt point cannot make a crash test pass without crashing."""
    value = os.environ.get(VARIABLE)
    if value and value not in POINTS:
        raise HpctlError(f"{VARIABLE}={value} names no crash point", key=VARIABLE, expected=", ".join(POINTS),
                         hint=did_you_mean(value, POINTS))
    if value == point:
        os.kill(os.getpid(), signal.SIGKILL)
