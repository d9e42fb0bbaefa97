"""What a checkpoint holds, and continuing a run from one.

A checkpoint (written by :func:`snapshot` through ``distgan.checkpoint``, the file format) holds the
resolved config, G, D and G's EMA, both optimizers, the fp16 scaler, every rank's RNG states and the
run's :class:`Counters`. :func:`restore` puts all of it back, so a resumed run continues bitwise.

``--resume PATH`` takes a run folder (its ``latest`` checkpoint), or a checkpoint folder. ``--resume auto``
continues ``output.dir/output.name`` when a name is given, else the newest run of this config and seed
under ``output.dir`` whose training config matches; with nothing to continue, it starts a new run.
A checkpoint whose data, model, loss, seed, batch size or D:G steps differ from the config (its
:data:`RESUME_IDENTITY`) is refused with the keys named: continuing it would be another experiment.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import Tensor, nn

from distgan import __version__, checkpoint, config
from distgan.dist import on_main, set_rng_states
from distgan.errors import CheckpointError, ConfigError
from distgan.files import write_atomic
from distgan.runlock import RunLock
from distgan.steps import EMA, GANSteps

# What a checkpoint's training depends on: resuming with any of these changed would not continue that
# training but start another one from its weights. Everything else (epochs, learning rates, logging,
# evaluation, output, data.root, threads, precision) may change on resume.
RESUME_IDENTITY = (
    "data.dataset",
    "data.limit",
    "model",
    "loss",
    "train.seed",
    "train.batch_size",
    "train.d_steps",
    "train.g_steps",
    "train.d_forward",
    "train.g_step_d_norm",
)

# Under an identity section but without effect on training: the EMA's BatchNorm calibration only sets what
# grids, evaluations and checkpoints read.
NOT_IDENTITY = ("model.ema_bn_samples",)

WANDB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def resume_conflicts(saved: dict, current: dict) -> list[str]:
    """'key: saved -> current' for every identity key that differs between two resolved configs. A key the
    saved config lacks (written before the key existed) counts as its default, which keeps the old behaviour."""

    def leaves(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out.update(
                leaves(v, key + ".") if isinstance(v, dict) and k in ("data", "model", "loss", "train") else {key: v}
            )
        return out

    a, b = {**leaves(config.Config().to_dict()), **leaves(saved)}, leaves(current)
    keys = [
        k
        for k in sorted(set(a) | set(b))
        if any(k == i or k.startswith(i + ".") for i in RESUME_IDENTITY) and k not in NOT_IDENTITY
    ]
    return [f"{k}: {a.get(k)!r} in the checkpoint, {b.get(k)!r} now" for k in keys if a.get(k) != b.get(k)]


# --------------------------------------------------------------------------- which checkpoint to continue


def _saved_config(folder: Path) -> dict | None:
    try:
        state = checkpoint.read_state(folder)
    except CheckpointError:
        return None
    return state.get("config") if state is not None else None


def find(cfg: config.Config, spec: str) -> Path | None:
    """The checkpoint folder to resume from, or None (``auto`` found nothing: start a new run)."""
    if spec != "auto":
        given = checkpoint.resolve(spec).parent  # raises CheckpointError with what to pass instead
        if given.is_symlink():
            raise CheckpointError(f"{given} is a symlink; pass the checkpoint folder itself, inside its own run")
        folder = given.resolve()
        if folder.parent.name != "checkpoints":
            raise CheckpointError(
                f"{folder} is not inside a run's checkpoints/ folder, so there is no run to continue; pass the run "
                "folder (or a checkpoint folder inside it), or start a new run from these weights"
            )
        return folder
    out = Path(cfg.output.dir)
    if cfg.output.name:
        runs = [out / cfg.output.name]
    else:
        pattern = glob.escape(f"{cfg.name}-s{cfg.train.seed}-") + "*"  # a name may hold [, ] or *
        runs = sorted(out.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for run in runs:
        try:
            tag = checkpoint.read_pointer(run / "checkpoints", "latest")
            folder = checkpoint.tag_folder(run / "checkpoints", tag) if tag else None
        except CheckpointError as e:
            if cfg.output.name:
                raise
            print(f"note: resume auto skips {run}: {e}")
            continue
        if folder is None or not folder.is_dir():
            continue
        saved = _saved_config(folder)
        if cfg.output.name or (saved is not None and not resume_conflicts(saved, cfg.to_dict())):
            return folder  # a named run is checked (and refused loudly) by check()
    return None


def check(saved: dict, cfg: config.Config, folder: Path) -> list[str]:
    """Raise when the checkpoint belongs to another experiment; return notes on allowed changes."""
    conflicts = resume_conflicts(saved, cfg.to_dict())
    if conflicts:
        raise ConfigError(
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


@dataclass
class Restored:
    """A checkpoint read back for an exact resume."""

    folder: Path
    model: dict[str, Tensor]
    train: dict[str, Tensor]
    saved: dict

    @property
    def run_dir(self) -> Path:
        return self.folder.parents[1]


COUNTS = ("epoch", "step", "nimg", "d_updates", "g_updates")
OPTIONAL_COUNTS = ("ema_updates",)  # older checkpoints lack it (and need it only with an EMA)


def check_saved(saved: dict, folder: Path) -> None:
    """Refuse a ``state.json`` whose parts a resume reads are missing or of the wrong kind (written by
    something else, or edited and re-digested), before anything is changed."""

    def refuse(what: str) -> NoReturn:
        raise CheckpointError(
            f"{folder / checkpoint.STATE_FILE} {what}: it was not written by this distgan or was edited; resume "
            "from another checkpoint of the run"
        )

    if not isinstance(saved.get("config"), dict):
        refuse("holds no config mapping")
    c = saved.get("counters")
    if not isinstance(c, dict):
        refuse("holds no counters")
    for key in COUNTS + tuple(k for k in OPTIONAL_COUNTS if k in c):
        if type(c.get(key)) is not int or c[key] < 0:
            refuse(f"has counters.{key} = {c.get(key)!r}, not a count")
    skipped = c.get("skipped_fp16_steps", {"d": 0, "g": 0})
    if not (isinstance(skipped, dict) and all(type(skipped.get(k)) is int for k in ("d", "g"))):
        refuse(f"has counters.skipped_fp16_steps = {skipped!r}")
    numbers = {"train_seconds": (int, float), "best_fid": (int, float, type(None)), "metrics_bytes": (int, type(None))}
    for key, kinds in numbers.items():
        if key in c and (type(c[key]) not in kinds or (c[key] or 0) < 0):
            refuse(f"has counters.{key} = {c[key]!r}")
    if "wandb_id" in c and not (isinstance(c["wandb_id"], str) and WANDB_ID.fullmatch(c["wandb_id"])):
        refuse(f"has counters.wandb_id = {c['wandb_id']!r}")
    extra = saved.get("train")
    if not isinstance(extra, dict) or not all(
        isinstance(extra.get(k), dict)
        and isinstance(extra[k].get("param_groups"), list)
        and isinstance(extra[k].get("scalars"), dict)
        for k in ("opt_g", "opt_d")
    ):
        refuse("holds no optimizer states (train.opt_g, train.opt_d)")


def locate(cfg: config.Config, rt, spec: str | None) -> Restored | None:
    """The checkpoint to continue (decided by the main process for all ranks), read and checked against
    ``cfg`` before anything is written; None: start a new run. The run folder is locked first
    (``rt.lock``, :mod:`distgan.runlock`), and the checkpoint looked up again under the lock: a trainer
    we waited for may have saved a newer one on its way out. Collective."""
    if spec is None:
        return None
    accelerator = rt.accelerator

    def find_locked() -> Path | None:
        found = find(cfg, spec)
        for _ in range(3):
            if found is None:
                return None
            run_dir = found.parents[1]
            if rt.lock is None or rt.lock.run_dir != run_dir:
                if rt.lock is not None:
                    rt.lock.release()
                rt.lock = RunLock.acquire(run_dir, log=accelerator.print)
            again = find(cfg, spec)
            if again is not None and again.parents[1] == run_dir:
                return again
            rt.lock.release()  # what we waited for is gone or elsewhere: look again, unlocked
            rt.lock = None
            found = again
        raise CheckpointError(f"the run to resume kept changing under {cfg.output.dir}; try again")

    found = on_main(accelerator, find_locked)  # a bad path stops every rank
    target = [str(found) if found is not None else None]
    broadcast_object_list(target)
    if target[0] is None:
        accelerator.print(f"resume auto: no run of {cfg.name} (seed {cfg.train.seed}) to continue; starting one")
        return None
    folder = Path(target[0])
    model_t, train_t, saved = checkpoint.load_training_state(folder)
    check_saved(saved, folder)
    for note in check(saved["config"], cfg, folder):
        accelerator.print(f"note: {note}")
    return Restored(folder, model_t, train_t, saved)


def set_aside(restored: Restored) -> str | None:
    """Resuming from a checkpoint older than the run's newest work abandons that work's continuation; it is
    kept, never erased: newer checkpoints become ``checkpoints/.abandoned-<tag>`` (see
    :func:`checkpoint.abandon_newer`), and the ``metrics.jsonl`` rows written after this checkpoint, the
    grids those rows name and ``summary.json`` move to ``<run>/abandoned-<UTC time>/``. Rows after the
    newest checkpoint of a crashed run are cut without a copy: the resumed run writes them again, exactly.
    Main process only; returns a line saying what moved (None: nothing did)."""
    run_dir, saved = restored.run_dir, restored.saved
    moved = checkpoint.abandon_newer(restored.folder)
    summary = run_dir / "summary.json"
    try:
        finished_later = json.loads(summary.read_text())["steps"] > saved["counters"]["step"]
    except (OSError, ValueError, KeyError, TypeError):
        finished_later = summary.exists()
    if not moved and not finished_later:
        return None
    aside = run_dir / time.strftime("abandoned-%Y%m%dT%H%M%SZ", time.gmtime())
    while aside.exists():
        aside = aside.with_name(aside.name + "+")
    aside.mkdir()
    metrics, keep = run_dir / "metrics.jsonl", saved["counters"].get("metrics_bytes")
    rows, grids = 0, 0
    if isinstance(keep, int) and metrics.is_file() and metrics.stat().st_size > keep:
        with open(metrics, "rb") as f:
            f.seek(keep)
            tail = f.read()
        write_atomic(aside / "metrics.jsonl", tail)
        rows = len(tail.splitlines())
        for line in tail.splitlines():
            try:
                grid = json.loads(line).get("sample")
            except (ValueError, AttributeError):
                continue
            src = run_dir / str(grid) if grid else None
            if src is not None and src.is_file() and src.resolve().is_relative_to(run_dir.resolve()):
                (aside / grid).parent.mkdir(parents=True, exist_ok=True)
                src.rename(aside / grid)
                grids += 1
        os.truncate(metrics, keep)
    had_summary = summary.exists()
    if had_summary:
        summary.rename(aside / "summary.json")
    what = [f"checkpoints {', '.join(sorted(moved))} as checkpoints/.abandoned-*"] if moved else []
    what += [
        f"{rows} metrics.jsonl rows, {grids} grids" + (" and summary.json" if had_summary else "") + f" in {aside}"
    ]
    return f"resuming {restored.folder.name}: the newer work is kept, set aside ({'; '.join(what)})"


# --------------------------------------------------------------------------- what a checkpoint holds


@dataclass
class Counters:
    """The run's progress as a checkpoint records it (besides the update counts in GANSteps / EMA)."""

    step: int = 0
    train_seconds: float = 0.0
    best_fid: float | None = None
    metrics_bytes: int | None = None
    """Where metrics.jsonl stood at the save: a resume cuts it back there."""
    wandb_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


@dataclass
class Snapshot:
    """One checkpoint's contents, ready for ``checkpoint.save``."""

    tensors: dict[str, Tensor]
    info: dict
    train_tensors: dict[str, Tensor]


def snapshot(
    resolved: dict,
    nets: dict[str, nn.Module],
    gan: GANSteps,
    counters: Counters,
    epoch: int,
    nimg: int,
    rank_checksums: list[float] | None,
    rng: dict[str, Tensor],
) -> Snapshot:
    """What a checkpoint of the run at ``counters.step`` holds (main process): the resolved config, the
    networks, the update counts, optimizers and scaler of ``gan``, the counters, every rank's RNG states."""
    ema, scaler, world = gan.ema, gan.accelerator.scaler, gan.accelerator.num_processes
    state = {
        "epoch": epoch,
        "step": counters.step,
        "nimg": nimg,
        "d_updates": gan.d_updates,
        "g_updates": gan.g_updates,
        "ema_updates": ema.updates if ema else 0,
        "skipped_fp16_steps": dict(gan.skipped),
        "rank_checksums": rank_checksums,
        "train_seconds": counters.train_seconds,
        "best_fid": counters.best_fid,
        "metrics_bytes": counters.metrics_bytes,
        "wandb_id": counters.wandb_id,
    }
    tensors_g, meta_g = checkpoint.optimizer_state(gan.opt_g, "opt_g")
    tensors_d, meta_d = checkpoint.optimizer_state(gan.opt_d, "opt_d")
    extra = {
        "opt_g": meta_g,
        "opt_d": meta_d,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "world": world,
    }
    versions = {"distgan": __version__, "torch": torch.__version__}
    info = {"config": resolved, "counters": state, "versions": versions, "train": extra}
    return Snapshot(checkpoint.state_tensors(**nets), info, {**tensors_g, **tensors_d, **rng})


def restore(
    accelerator: Accelerator, restored: Restored, gan: GANSteps, ema: EMA | None, cfg: config.Config
) -> Counters:
    """Load a checkpoint's optimizers, EMA, scaler, counters and RNG states; return the run's counters.
    A training state that does not fit this run's models is refused (:class:`CheckpointError`)."""
    try:
        return _restore(accelerator, restored, gan, ema, cfg)
    except (KeyError, IndexError, ValueError, RuntimeError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"{restored.folder}: its training state does not fit this run's models ({type(e).__name__}: "
            f"{first[:200]}); resume from another checkpoint of this run, or start a new run"
        ) from None


def _restore(
    accelerator: Accelerator, restored: Restored, gan: GANSteps, ema: EMA | None, cfg: config.Config
) -> Counters:
    c, extra = restored.saved["counters"], restored.saved["train"]
    checkpoint.load_optimizer(gan.opt_g, restored.train, extra["opt_g"], "opt_g")
    checkpoint.load_optimizer(gan.opt_d, restored.train, extra["opt_d"], "opt_d")
    for opt, net in ((gan.opt_g, "g"), (gan.opt_d, "d")):  # a resumed run may change learning rates: the config wins
        for group in opt.param_groups:
            group["lr"] = getattr(cfg.optim, net).lr
    if ema is not None:
        ema.model.load_state_dict(checkpoint.module_state(restored.model, "G_ema"))
        ema.updates = c["ema_updates"]
    if accelerator.scaler is not None and extra.get("scaler"):
        accelerator.scaler.load_state_dict(extra["scaler"])
    gan.d_updates, gan.g_updates = c["d_updates"], c["g_updates"]
    gan.skipped = dict(c.get("skipped_fp16_steps", {"d": 0, "g": 0}))
    set_rng_states(accelerator, restored.train)
    accelerator.print(f"resuming {restored.folder} at step {c['step']} (epoch {c['epoch']})")
    return Counters(**{k: c[k] for k in asdict(Counters()) if k in c})


def last_good(ckpt_dir: Path) -> str:
    """The advice a non-finite stop gives: where the last good checkpoint is, and what to change."""
    try:
        tag = checkpoint.read_pointer(ckpt_dir, "latest")
        checkpoint.load_training_state(ckpt_dir / tag) if tag else None  # verified, or no "last good" at all
        where = f"the last good checkpoint is {ckpt_dir / tag}" if tag else "no checkpoint was saved yet"
    except CheckpointError as e:
        where = f"the latest checkpoint does not verify ({e})"
    return (
        f"Stopped on every rank; nothing non-finite was saved: {where}. Resume it with --resume and a lower "
        "learning rate (optim.g.lr / optim.d.lr), or train in float32 (train.mixed_precision=no)."
    )
