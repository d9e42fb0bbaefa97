"""One live trainer per run folder: an exclusive lock on ``<run>/.lock``, held for the run's life.

The lock is ``fcntl.flock`` on an open file: the kernel releases it when its holder exits or dies
(kill -9 included), so a crashed run never leaves a stale lock behind; on NFS (v4, or v3 through the
client's lock manager) and Lustre mounted with ``flock`` it is honoured across machines, which is what a
SLURM requeue needs. The file also names its holder (host, pid, start time, command) so a refusal can say
who holds the folder and since when. A second trainer (a requeued job whose predecessor still runs, a
double ``--resume auto``) waits a bounded time for the holder to exit, then refuses; two writers never
share a folder. Where the filesystem offers no locks at all, the run goes on with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from distgan.errors import DistganError

LOCK_FILE = ".lock"
WAIT_ENV = "DISTGAN_LOCK_WAIT"
DEFAULT_WAIT_S = 60.0


class RunInUse(DistganError):
    """Another live trainer holds the run folder."""


def wait_seconds() -> float:
    """How long a second trainer waits for the folder (``DISTGAN_LOCK_WAIT`` seconds; default 60)."""
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


class RunLock:
    def __init__(self, run_dir: Path, fd: int | None):
        self.run_dir, self._fd = run_dir, fd

    @property
    def exclusive(self) -> bool:
        """False where the filesystem offers no locks (the lock then proves nothing)."""
        return self._fd is not None

    @classmethod
    def acquire(cls, run_dir: Path, wait: float | None = None, log=print) -> RunLock:
        """Lock ``run_dir`` (which must exist), waiting up to ``wait`` seconds for a live holder to exit."""
        wait = wait_seconds() if wait is None else wait
        path = run_dir / LOCK_FILE
        deadline, told = time.monotonic() + wait, False
        while True:
            if not run_dir.is_dir():
                raise RunInUse(f"{run_dir} was moved away while this trainer waited for it; run the command again")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                got = _try(fd)
                if got == "taken":
                    if path.exists() and os.fstat(fd).st_ino == os.stat(path).st_ino:  # not renamed away meanwhile
                        holder = {
                            "host": socket.gethostname(),
                            "pid": os.getpid(),
                            "since": datetime.now().astimezone().isoformat(timespec="seconds"),
                            "command": " ".join(sys.argv)[:500],
                        }
                        os.ftruncate(fd, 0)
                        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
                        return cls(run_dir, fd)
                    os.close(fd)
                    continue
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            if got == "unsupported":
                log(f"warning: {run_dir}'s filesystem offers no file locks; nothing stops a second trainer here")
                return cls(run_dir, None)
            holder = describe(path)
            if time.monotonic() >= deadline:
                raise RunInUse(
                    f"{run_dir} is in use by {holder}: one trainer per run folder. Wait for it to finish (or stop "
                    f"it: it checkpoints on SIGTERM), then run the same command again; {WAIT_ENV}=SECONDS sets "
                    f"how long to wait (now {wait:g})"
                )
            if not told:
                log(f"{run_dir} is in use by {holder}; waiting up to {wait:g} s for it to exit")
                told = True
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))

    def release(self) -> None:
        """Remove the lock file (while still holding it: a waiter that opened it meanwhile sees it gone
        and opens a fresh one) and unlock; a refused or finished run leaves no lock file behind."""
        if self._fd is not None:
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.run_dir / LOCK_FILE)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


def _try(fd: int) -> str:
    """flock without waiting: 'taken', 'held' (elsewhere) or 'unsupported' (a filesystem without locks)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return "taken"
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return "unsupported"
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return "held"
        raise


def describe(path: Path) -> str:
    """Who holds the lock file, as its holder wrote it."""
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} since {h['since']} ({h['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its name yet)"
