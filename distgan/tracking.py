"""Where a run's numbers go: ``metrics.jsonl`` in the run folder, and W&B through accelerate's tracker.

Only the main process writes. Per-step values stay on the device in a buffer and are read back every
``log_every`` steps (one host sync, one all-reduce for the mean over ranks), then written one row per
step. W&B runs offline unless the user configured it (WANDB_MODE or an API key); a W&B that fails to
start is a warning, and the run goes on with its local files.
"""

from __future__ import annotations

import contextlib
import json
import math
import netrc
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import Tensor

from distgan.errors import NonFiniteError
from distgan.files import write_atomic
from distgan.steps import FINITE_KEYS, STEP_KEYS


def scalars(row: dict, prefix: str) -> dict:
    """The numbers of a (nested) record as flat W&B keys: {'eval': {'fid': 3}} -> {'eval/fid': 3};
    lists of numbers get one key per index; strings and None are left to metrics.jsonl."""
    out = {}
    for k, v in row.items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict):
            out.update(scalars(v, key))
        elif isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            out.update({f"{key}/{i}": x for i, x in enumerate(v)})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def wandb_configured() -> bool:
    """True when the user chose a W&B mode or has credentials (then we leave W&B's own choice alone)."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


NETWORK_OF = {
    "loss_d": "D's loss",
    "loss_g": "G's loss",
    "d_real": "D's output on real images",
    "d_fake": "D's output on generated images",
}


class StepBuffer:
    """Per-step metrics kept on the device; drained with one transfer."""

    def __init__(self, device: torch.device, capacity: int):
        self.values = torch.full((capacity, len(STEP_KEYS)), math.nan, device=device)
        self.steps: list[int] = []

    def add(self, step: int, metrics: Mapping[str, Tensor]) -> None:
        """One step's metrics, by name (:data:`distgan.steps.STEP_KEYS`; a missing one is an error)."""
        names = getattr(metrics, "names", None)
        row = metrics.values if names == STEP_KEYS else torch.stack([metrics[k] for k in STEP_KEYS])
        self.values[len(self.steps)] = row
        self.steps.append(step)

    def full(self) -> bool:
        return len(self.steps) == len(self.values)

    def drain(self, accelerator: Accelerator) -> list[dict]:
        """Rows {'step', 'loss_d', ...}, averaged over ranks. Collective: call on every rank."""
        if not self.steps:
            return []
        n = len(self.steps)
        reduced = accelerator.reduce(self.values[:n].clone(), reduction="mean")
        checked = reduced[:, [STEP_KEYS.index(k) for k in FINITE_KEYS]]
        bad = ~torch.isfinite(checked)  # the same on every rank after the reduction: all stop together
        if bad.any():
            row, col = bad.nonzero()[0].tolist()
            raise NonFiniteError(NETWORK_OF[FINITE_KEYS[col]], self.steps[row])
        values = reduced.tolist()
        rows = [
            {"step": s, **{k: (None if math.isnan(v) else v) for k, v in zip(STEP_KEYS, vals, strict=True)}}
            for s, vals in zip(self.steps, values, strict=True)
        ]
        self.values.fill_(math.nan)
        self.steps = []
        return rows


def wandb_kwargs(run_dir: Path, config: dict, world: int, wandb_id: str) -> dict:
    """wandb.init's arguments: one run per run folder (the same id on resume), grouped by config."""
    if not wandb_configured():
        os.environ["WANDB_MODE"] = "offline"  # env, not an init argument, so users can still override
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    return {
        "name": run_dir.name,
        "id": wandb_id,
        "resume": "allow",
        "dir": str(run_dir),
        "group": config["output"]["wandb_group"] or config["name"],
        "job_type": config["name"],
        "tags": [
            config["name"],
            f"world{world}",
            f"seed{config['train']['seed']}",
            f"precision-{config['train']['mixed_precision'] or 'no'}",
        ],
    }


def flat(config: dict, prefix: str = "") -> dict:
    """{'train': {'seed': 0}} -> {'train/seed': 0}; lists and mappings below a key as text (TensorBoard's
    hyperparameters take scalars and text only)."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict) and k not in ("g_args", "d_args"):  # a section, not a model's argument mapping
            out.update(flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (dict, list, tuple)) or v is None:
            out[f"{prefix}{k}"] = json.dumps(v)
        else:
            out[f"{prefix}{k}"] = v
    return out


def store_config(accelerator: Accelerator, config: dict) -> None:
    """The run's config in every tracker: W&B keeps the nested mapping, TensorBoard flat hyperparameters."""
    for tracker in accelerator.trackers:
        tracker.store_init_configuration(flat(config) if tracker.name == "tensorboard" else config)


def write_summary(
    run_dir: Path, cfg, accelerator: Accelerator, step: int, step_images: int, seconds: float, start: int, params: dict
) -> None:
    """summary.json: the mark of a finished run (distgan.compare reuses only those)."""
    nimg = step * step_images
    summary = {
        "name": cfg.name,
        "steps": step,
        "nimg": nimg,
        "seconds": round(seconds, 3),
        "img_per_s": round(nimg / max(seconds, 1e-9), 1),
        "world": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "compile": cfg.train.compile,
        **params,
        "resumed_from_step": start or None,
    }
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


class RunLog:
    """metrics.jsonl + the configured trackers (W&B, TensorBoard) for one run (no-ops on non-main ranks)."""

    def __init__(
        self,
        accelerator: Accelerator,
        run_dir: Path,
        config: dict,
        trackers: list[str],
        project: str,
        wandb_id: str,
        keep_bytes: int | None = None,
    ):
        """``keep_bytes``: resuming, cut metrics.jsonl back to what it held when the checkpoint was saved.
        ``wandb_id``: the same id on resume continues the same W&B run."""
        self.acc = accelerator
        self.main = accelerator.is_main_process
        self.tracking = False
        self.file = None
        if self.main:
            path = run_dir / "metrics.jsonl"
            if keep_bytes is not None and path.exists():
                os.truncate(path, min(keep_bytes, path.stat().st_size))  # never extend it with zero bytes
            self.file = open(path, "a")  # noqa: SIM115 (closed in close())
        if not trackers:
            return
        # TensorBoard writes <run>/tensorboard/<project>/ (accelerate's logging_dir, then the project's name)
        accelerator.project_configuration.logging_dir = str(run_dir / "tensorboard")
        kwargs = wandb_kwargs(run_dir, config, accelerator.num_processes, wandb_id) if "wandb" in trackers else {}
        for attempt in ("configured", "offline"):
            try:
                accelerator.init_trackers(project, init_kwargs={"wandb": kwargs})
                store_config(accelerator, config)
                self.tracking = self.main
                break
            except Exception as e:  # noqa: BLE001 (a tracker can fail in many ways; none must stop training)
                accelerator.trackers.clear()  # a tracker that failed to start would fail again at the end
                if (
                    "wandb" not in trackers
                    or attempt == "offline"
                    or os.environ.get("WANDB_MODE") in ("offline", "disabled")
                ):
                    warnings.warn(
                        f"the tracker did not start ({e}); training goes on with metrics.jsonl only", stacklevel=2
                    )
                    break
                warnings.warn(f"W&B did not start ({e}); retrying offline (upload later with wandb sync)", stacklevel=2)
                kwargs["mode"] = "offline"  # the user's mode failed: this once, override it

    def rows(self, rows: list[dict], section: str | None = "train") -> None:
        """Records with a 'step': one JSON line each, and their numbers to W&B as ``section/key``
        (section None: the file only)."""
        if not self.main:
            return
        for row in rows:
            self.file.write(json.dumps(row) + "\n")
            if self.tracking and section:
                values = scalars({k: v for k, v in row.items() if k != "step"}, section)
                if values:
                    self.acc.log(values, step=row["step"])
        self.file.flush()

    def position(self) -> int:
        """Bytes written to metrics.jsonl so far (main process; 0 elsewhere)."""
        return self.file.tell() if self.file is not None else 0

    def event(self, row: dict, section: str | None = "epoch") -> None:
        """A non-step record (epoch start or end, evaluation): written as is, to W&B under ``section/``."""
        self.rows([row], section)

    def image(self, name: str, picture: Tensor, step: int) -> None:
        """A grid (uint8, H x W) to every tracker that takes images."""
        if not self.tracking:
            return
        for tracker in self.acc.trackers:
            if tracker.name == "wandb":
                tracker.log_images({name: [picture.numpy()]}, step=step)
            elif tracker.name == "tensorboard":
                tracker.writer.add_image(name, picture.numpy(), global_step=step, dataformats="HW")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def summary_run(folder: Path, project: str, group: str, table: list[dict], pictures: dict[str, Path]) -> str | None:
    """One W&B run, job type ``report``, in a comparison's group: the report's table (``W&B Table``), its
    numbers per config in the run summary, and its pictures. Offline unless W&B is configured; a W&B that
    fails is a warning (the report files are already written). Returns the run's folder, or None."""
    run = None
    try:
        import wandb

        mode = None if wandb_configured() else "offline"
        run = wandb.init(
            project=project, group=group, job_type="report", name=f"{group}-report", dir=str(folder), mode=mode
        )
        columns = list(table[0])
        rows = [[r.get(c) for c in columns] for r in table]
        run.log({"report/table": wandb.Table(columns=columns, data=rows)})
        run.log({f"report/{name}": wandb.Image(str(path)) for name, path in pictures.items() if path.is_file()})
        run.summary.update(
            {
                f"{r['config']}/{k}": v
                for r in table
                for k, v in r.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        )
        where = run.dir
        run.finish()
        return where
    except Exception as e:  # noqa: BLE001 (W&B can fail in many ways; the report is written regardless)
        warnings.warn(f"W&B summary run not written ({e}); the report files are complete", stacklevel=2)
        if run is not None:
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)
        return None
