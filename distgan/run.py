"""One training's state, named (:class:`Run`), and what happens when a step ends: the metrics flushed,
the EMA's BatchNorm statistics recomputed, the ranks checked, G scored, the grid and checkpoint written.

``distgan.train`` builds a Run and drives the loop; the schedule (``distgan.schedule``) says which of these
duties a step's end carries. Every function here that says "collective" runs on every rank.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from distgan import checkpoint, config, evaluate, images, resume, tracking
from distgan.batches import DeviceImages
from distgan.dist import check_ranks_agree, on_main, rng_states, sync_buffers
from distgan.errors import NonFiniteError
from distgan.rng import fixed_z
from distgan.runtime import Runtime
from distgan.schedule import Maintenance, Schedule
from distgan.steps import GANSteps
from distgan.tracking import RunLog, StepBuffer


@dataclass
class Run:
    """Everything one training holds: the resolved config (what config.yaml and every checkpoint record),
    the step function with its networks, ``nets`` (the raw modules a checkpoint holds), the log, counters."""

    cfg: config.Config
    rt: Runtime
    run_dir: Path
    schedule: Schedule
    images: DeviceImages
    gan: GANSteps
    nets: dict[str, torch.nn.Module]
    log: RunLog
    buffer: StepBuffer
    counters: resume.Counters
    start_step: int = 0  # where this process started (a resume: the checkpoint's step)
    evaluator: evaluate.Evaluator | None = None
    ref: evaluate.Reference | None = None
    bar: tqdm | None = None
    t0: float = 0.0  # when this process started training (train_seconds adds the time since)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def step_images(self) -> int:
        return self.cfg.train.batch_size * self.cfg.train.d_steps  # real images one step consumes, all ranks

    @property
    def G_show(self) -> torch.nn.Module:
        return self.nets.get("G_ema", self.nets["G"])  # grids and evaluations draw from the EMA where kept


def sample_grid(G: torch.nn.Module, z: torch.Tensor, scale: int) -> torch.Tensor:
    """The fixed-z grid as uint8 (H, W): exactly what ``distgan.sample --fixed-z`` recomputes."""
    return images.grid(images.generate(G, z), scale=scale)


def flush(run: Run) -> None:
    """Read the buffered step metrics (collective), write them, show the latest on the progress bar."""
    try:
        rows = run.buffer.drain(run.rt.accelerator)
    except NonFiniteError as e:  # raised on every rank at once: the reduced losses are the same everywhere
        raise NonFiniteError(e.what, e.step, resume.last_good(run.ckpt_dir)) from None
    run.log.rows(rows)
    if rows and run.bar is not None:
        last = rows[-1]
        run.bar.set_postfix(loss_d=f"{last['loss_d']:.3f}", loss_g=f"{last['loss_g']:.3f}", refresh=False)


def timing(run: Run, steps: int, since: float) -> dict:
    seconds = time.perf_counter() - since
    lrs = {f"lr_{n}": opt.param_groups[0]["lr"] for n, opt in (("g", run.gan.opt_g), ("d", run.gan.opt_d))}
    return {"seconds": round(seconds, 3), "img_per_s": round(steps * run.step_images / max(seconds, 1e-9), 1), **lrs}


def maintain(run: Run, m: Maintenance, spent: dict) -> None:
    """Score G; on the main process write the fixed-z grid and/or a checkpoint. Collective."""
    acc = run.rt.accelerator
    flush(run)
    bn_samples = run.cfg.model.ema_bn_samples
    if run.gan.ema is not None and bn_samples:  # BatchNorm statistics for the averaged weights
        run.gan.ema.calibrate(fixed_z(run.cfg.model.z_dim, run.cfg.train.seed, bn_samples, "ema_bn").to(acc.device))
    sync_buffers(acc, *run.nets.values())  # collective: BatchNorm statistics as DDP's next forward sets them
    checksums = check_ranks_agree(acc, **run.nets) if m.save else None  # collective
    if checksums is not None and not all(map(math.isfinite, checksums)):
        bad = [n for n, net in run.nets.items() if not all(torch.isfinite(p).all() for p in net.state_dict().values())]
        raise NonFiniteError(f"the weights of {', '.join(bad)}", m.step, resume.last_good(run.ckpt_dir))
    result = None
    if m.score:  # collective: each rank generates and classifies its share of the samples
        e, nimg = run.cfg.eval, m.step * run.step_images
        result = evaluate.score_generator(
            run.G_show, run.cfg.model.z_dim, run.evaluator, run.ref, e.samples, e.seed, e.pr_k, acc
        )
        if result is not None:
            run.log.event({"event": "eval", "step": m.step, "epoch": m.epoch, "nimg": nimg, **result}, "eval")
            acc.print(f"epoch {m.epoch}: " + evaluate.format_metrics(result).replace("\n", "; "))
    rng = rng_states(acc) if m.save else {}  # collective: every rank's RNG states travel to the main process
    on_main(acc, lambda: write(run, m, spent, result, checksums, rng))  # a failed write stops every rank


def write(run: Run, m: Maintenance, spent: dict, result: dict | None, checksums, rng: dict) -> None:
    """The main process's share of maintenance: the event row, the grid, the checkpoint."""
    acc, nimg = run.rt.accelerator, m.step * run.step_images
    event = {"event": m.kind, "step": m.step, "epoch": m.epoch, "nimg": nimg, **spent}
    if acc.scaler is not None:  # fp16: one scaler for both optimizers; report what it skipped
        event["skipped_fp16_steps"] = dict(run.gan.skipped)
    if m.grid:
        o = run.cfg.output
        picture = sample_grid(run.G_show, fixed_z(run.cfg.model.z_dim, o.grid_seed), o.grid_scale)
        png = images.save_png(picture, run.run_dir / "samples" / f"{m.tag}.png")
        run.log.image("samples", picture, m.step)
        event["sample"] = str(png.relative_to(run.run_dir))
    if m.save:
        event["checkpoint"] = f"checkpoints/{m.tag}"
    run.log.event(event)  # before the save, so the checkpoint knows where metrics.jsonl stood
    if not m.save:
        return
    best = run.counters.best_fid
    is_best = result is not None and (best is None or result["fid"] < best)
    seconds = run.counters.train_seconds + (time.perf_counter() - run.t0)
    position, fid = run.log.position(), result["fid"] if is_best else best
    now = dataclasses.replace(run.counters, step=m.step, train_seconds=seconds, metrics_bytes=position, best_fid=fid)
    snap = resume.snapshot(run.cfg.to_dict(), run.nets, run.gan, now, m.epoch, nimg, checksums, rng)
    checkpoint.save(run.ckpt_dir, m.tag, snap.tensors, snap.info, snap.train_tensors)
    if is_best:
        checkpoint.mark_best(run.ckpt_dir, m.tag)
        run.counters.best_fid = result["fid"]
    checkpoint.prune(run.ckpt_dir, run.cfg.output.keep_checkpoints)


def write_summary(run: Run, seconds: float) -> None:
    acc, nets = run.rt.accelerator, run.nets
    if acc.is_main_process:
        params = {f"params_{n.lower()}": sum(p.numel() for p in nets[n].parameters()) for n in ("G", "D")}
        tracking.write_summary(
            run.run_dir, run.cfg, acc, run.counters.step, run.step_images, seconds, run.start_step, params
        )
