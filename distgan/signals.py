"""Stop requests: SIGTERM, SIGINT and SIGUSR1 (SLURM's ``--signal=USR1@90``) ask the run to stop cleanly.

The handler only records the signal. The loop polls it: on one process after every step; on several at
every metrics flush (``train.log_every`` steps), where the ranks already synchronise and agree with one
all-reduce, so no rank stops alone and no extra sync is paid per step. Then the run saves a checkpoint
and exits with 128 + the signal's number. A second SIGINT interrupts at once (Python's KeyboardInterrupt).
"""

from __future__ import annotations

import signal
from types import FrameType

import torch
from accelerate import Accelerator

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Stopped(Exception):
    """The run stopped on request after saving; resume it with ``--resume``."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class StopRequest:
    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signum = signum

    def install(self) -> StopRequest:
        for s in SIGNALS:
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (an embedding application): leave signals alone
                break
        return self

    def uninstall(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def agreed(self, accelerator: Accelerator) -> int:
        """The signal every rank agrees to stop on (0: none). Collective when there are several ranks."""
        if accelerator.num_processes == 1:
            return self.signum
        flag = torch.tensor([self.signum], device=accelerator.device)
        return int(accelerator.reduce(flag, reduction="max").item())
