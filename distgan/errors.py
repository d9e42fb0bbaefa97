"""Every error a user can cause or fix, under one base class: the command-line entry points catch
:class:`DistganError` (and the operating system's ``OSError``) and print its message, never a traceback.

Each message says what went wrong and what to do. The subclasses tell callers what kind of fault it was;
they keep their historical bases (``ValueError``, ``RuntimeError``) so existing ``except`` clauses still hold.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DistganError(Exception):
    """Base of every user-facing distgan error; the message says how to fix it."""


class ConfigError(DistganError, ValueError):
    """A config value or key is invalid; the message says which and how to fix it."""


class DataError(DistganError, RuntimeError):
    """The data cannot be prepared or read; the message says what to do."""


class CheckpointError(DistganError, RuntimeError):
    """A checkpoint is missing, incomplete or not distgan's; the message says what to do."""


class EvaluatorError(DistganError, RuntimeError):
    """The evaluator cannot be fitted, found or read."""


class LaunchError(DistganError, RuntimeError):
    """The processes were started in a way that would not train what the user asked for."""


class RankMismatch(DistganError, RuntimeError):
    """Ranks disagree about something that must be identical (weights, data shards)."""


class MainProcessFailed(DistganError, RuntimeError):
    """Raised on the other ranks when work done by the main process alone failed."""


class CompareError(DistganError, RuntimeError):
    """A comparison cannot go on; the message says what to do."""


class NonFiniteError(DistganError, RuntimeError):
    """A loss or a weight became NaN or infinite; every rank raises it at the same step."""

    def __init__(self, what: str, step: int, advice: str = ""):
        super().__init__(f"{what} became non-finite (NaN or inf) at step {step}" + (f". {advice}" if advice else ""))
        self.what, self.step = what, step


def suggest(key: str, valid: Iterable[str]) -> str:
    """ " Did you mean 'x'?" for the closest valid name, or an empty string."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""
