"""Resuming a run: which checkpoint to continue, and whether the config allows continuing it.

``--resume PATH`` takes a run folder (its ``latest`` checkpoint), or a checkpoint folder. ``--resume auto``
continues ``output.dir/output.name`` when a name is given, else the newest run of this config and seed
under ``output.dir`` whose training config matches; with nothing to continue, it starts a new run.
A checkpoint whose data, model, loss, seed, batch size or D:G steps differ from the config is refused
with the keys named: continuing it would be another experiment, not this one.
"""

from __future__ import annotations

import json
from pathlib import Path

from distgan import checkpoint, config


def _saved_config(folder: Path) -> dict | None:
    try:
        return json.loads((folder / checkpoint.STATE_FILE).read_text())["config"]
    except (OSError, ValueError, KeyError):
        return None


def find(cfg: config.Config, spec: str) -> Path | None:
    """The checkpoint folder to resume from, or None (``auto`` found nothing: start a new run)."""
    if spec != "auto":
        folder = checkpoint.resolve(spec).parent.resolve()  # raises CheckpointError with what to pass instead
        if folder.parent.name != "checkpoints":
            raise checkpoint.CheckpointError(
                f"{folder} is not inside a run's checkpoints/ folder, so there is no run to continue; pass the run "
                "folder (or a checkpoint folder inside it), or start a new run from these weights"
            )
        return folder
    out = Path(cfg.output.dir)
    if cfg.output.name:
        runs = [out / cfg.output.name]
    else:
        runs = sorted(out.glob(f"{cfg.name}-s{cfg.train.seed}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for run in runs:
        tag = checkpoint.read_pointer(run / "checkpoints", "latest")
        folder = run / "checkpoints" / tag if tag else None
        if folder is None or not folder.is_dir():
            continue
        saved = _saved_config(folder)
        if cfg.output.name or (saved is not None and not config.resume_conflicts(saved, cfg.to_dict())):
            return folder  # a named run is checked (and refused loudly) by check()
    return None


def check(saved: dict, cfg: config.Config, folder: Path) -> list[str]:
    """Raise when the checkpoint belongs to another experiment; return notes on allowed changes."""
    conflicts = config.resume_conflicts(saved, cfg.to_dict())
    if conflicts:
        raise config.ConfigError(
            f"cannot resume {folder}: the config differs from the checkpoint's in what its training depends on:\n  "
            + "\n  ".join(conflicts)
            + "\nResume without --config (the checkpoint's own config is used), or start a new run with another "
            "output.name"
        )
    notes = []
    for key in ("threads", "mixed_precision", "compile"):
        before, now = saved["train"].get(key, "no" if key == "compile" else None), getattr(cfg.train, key)
        if now is not None and before != now:
            notes.append(
                f"train.{key} changes from {before!r} to {now!r}: the continuation will not be bitwise "
                "identical to an uninterrupted run"
            )
    return notes
