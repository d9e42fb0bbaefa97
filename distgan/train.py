"""Train a GAN from a config: setup, resume, build, loop, finish. Read top to bottom.

One CPU process (what the tests use)::

    python -m distgan.train --config configs/default.yaml train.epochs=3

The same module under accelerate (one GPU, N GPUs, N CPU processes, several nodes: see launch/)::

    accelerate launch -m distgan.train --config configs/v5.yaml
    launch/cpu_multi.sh --config configs/default.yaml     (N gloo processes: ACCELERATE_USE_CPU=1 accelerate launch ...)

``--dry-run`` prints the config and launch as the run would resolve them, and exits. Dotted overrides
(``train.seed=1``) may come anywhere; ``--help`` lists every key.
A run writes ``runs/<name>/``: config.yaml, metrics.jsonl, samples/epoch-NNN.png, checkpoints/, wandb/.

``--resume auto|PATH`` continues a run exactly, at step granularity (see ``distgan.resume``): weights,
EMA, both optimizers, the fp16 scaler, every rank's RNG, counters, metrics.jsonl and the W&B run.
SIGTERM / SIGINT / SIGUSR1 stop a run cleanly with a checkpoint (``distgan.signals``); a NaN or inf loss
or weight stops every rank before anything non-finite is saved.

Who does what: ``runtime`` the accelerator and the run folder, ``schedule`` when grids, checkpoints and
evaluations happen, ``steps`` one training step, ``resume`` what a checkpoint holds, ``tracking`` where the
numbers go. This module wires them together over one named :class:`Run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from distgan import __version__, checkpoint, config, data, evaluate, keys, models, resume
from distgan.batches import DeviceImages, epoch_permutation, shard
from distgan.dist import check_shards, match_grad_layout, on_main
from distgan.errors import CheckpointError, ConfigError, DistganError
from distgan.globalbatch import globalize
from distgan.rng import stream_seed
from distgan.run import Run, flush, maintain, timing, write_summary
from distgan.runtime import Runtime, dry_run, make_run_dir
from distgan.schedule import Schedule
from distgan.signals import Stopped, StopRequest
from distgan.steps import GANSteps
from distgan.tracking import RunLog, StepBuffer


def train(cfg: config.Config, resume_from: str | None = None) -> Path:
    """Run one training (or continue one: ``resume_from`` 'auto' or a path); return the run folder."""
    rt = Runtime(cfg)
    stop = StopRequest().install()
    try:
        cfg = rt.resolve(cfg)
        real_images = load_images(cfg, rt)
        schedule = Schedule.from_config(cfg, len(real_images))
        evaluator, ref = evaluate.for_training(cfg, rt.accelerator)
        restored = resume.locate(cfg, rt, resume_from)
        run = build(cfg, rt, schedule, real_images, restored, auto=resume_from == "auto")
        run.evaluator, run.ref = evaluator, ref
        if run.start_step >= schedule.total_steps:
            return finish_early(run)
        return finish(run, loop(run, stop))
    finally:
        stop.uninstall()
        rt.close()


def load_images(cfg: config.Config, rt: Runtime) -> DeviceImages:
    """The training images on the device. Prepared by the main process, then verified (never fetched) by
    the other ranks; on several machines without a shared data.root, each machine's first process first."""
    acc = rt.accelerator
    on_main(acc, lambda: data.prepare(cfg.data.dataset, cfg.data.root, log=acc.print))
    with acc.local_main_process_first():
        data.prepare(cfg.data.dataset, cfg.data.root, log=acc.print)
    train_images, _ = data.load_split(cfg.data.dataset, cfg.data.root, train=True)
    if cfg.data.limit is not None:
        train_images = train_images[: cfg.data.limit]
    step_images = cfg.train.batch_size * cfg.train.d_steps
    if len(train_images) < step_images:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} x d_steps={cfg.train.d_steps} exceeds the dataset "
            f"({len(train_images)} images)"
        )
    return DeviceImages(train_images, rt.device)


def build(cfg: config.Config, rt: Runtime, schedule: Schedule, real_images: DeviceImages, restored, auto: bool) -> Run:
    """Models (identical init on every rank; DDP also broadcasts rank 0's weights), the run folder, the step
    function and the log; a resumed run's checkpoint (``restored``) on top."""
    acc = rt.accelerator
    if restored is not None:  # the run continues in its own folder
        where = dataclasses.replace(cfg.output, dir=str(restored.run_dir.parent), name=restored.run_dir.name)
        cfg = dataclasses.replace(cfg, output=where)
    torch.manual_seed(stream_seed(cfg.train.seed, "init"))
    G, D = models.build_pair(cfg.model)
    check_norm_batch(cfg, rt.world, G, D)
    G, D = (globalize(m, batchnorm=cfg.model.sync_bn) for m in (G, D))  # the same run on 1 or N processes
    if rt.world > 1:
        match_grad_layout(G, D)
    if restored is not None:
        try:
            G.load_state_dict(checkpoint.module_state(restored.model, "G"))
            D.load_state_dict(checkpoint.module_state(restored.model, "D"))
        except RuntimeError as e:  # missing, extra or mis-shaped tensors
            detail = " ".join(line.strip() for line in str(e).splitlines()[1:3])[:300]
            old_bias = "Unexpected key(s)" in str(e) and ".bias" in str(e)
            raise CheckpointError(
                f"{restored.folder} does not fit the models its config describes ({detail})"
                + (
                    ": checkpoints saved before layers followed by BatchNorm lost their (redundant) bias cannot "
                    "be resumed by this distgan; start the run anew"
                    if old_bias
                    else "; resume from another checkpoint of the run"
                )
            ) from None
    if rt.world > 1 and any(getattr(m, "couples_batch", False) for net in (G, D) for m in net.modules()):
        acc.print(
            "note: minibatch std takes its statistic over each process's share of the batch: this run's "
            f"result depends on the process count ({rt.world})"
        )
    gan = GANSteps.from_config(acc, G, D, cfg, schedule.total_steps)
    nets = {"G": G, "D": D, **({"G_ema": gan.ema.model} if gan.ema else {})}
    # Dropout masks: every rank draws the global batch's mask (GlobalDropout), so every rank holds rank 0's state
    torch.manual_seed(stream_seed(cfg.train.seed, "torch", 0))
    counters = resume.Counters() if restored is None else resume.restore(acc, restored, gan, gan.ema, cfg)
    # the run folder, once every check above has passed (a refused run leaves nothing behind)
    run_dir = make_run_dir(cfg, rt, restored.run_dir if restored else None, auto=auto and not restored)
    if restored is not None:
        note = on_main(acc, lambda: resume.set_aside(restored))
        if note:
            acc.print(note)
    cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, name=run_dir.name))
    wandb_id = [counters.wandb_id]
    broadcast_object_list(wandb_id)  # one W&B run id for all ranks (only the main one logs)
    counters.wandb_id = wandb_id[0]
    o = cfg.output
    log = RunLog(
        acc, run_dir, cfg.to_dict(), config.trackers(cfg), o.wandb_project, wandb_id[0], counters.metrics_bytes
    )
    acc.print(
        f"distgan {__version__}: {cfg.name} on {rt.world} x {rt.device} ({acc.distributed_type}, "
        f"{acc.mixed_precision}), {schedule.total_steps} steps of {cfg.train.batch_size} images, run folder {run_dir}"
    )
    buffer = StepBuffer(rt.device, min(cfg.train.log_every, schedule.total_steps))  # log_every may exceed the run
    return Run(cfg, rt, run_dir, schedule, real_images, gan, nets, log, buffer, counters, start_step=counters.step)


def check_norm_batch(cfg: config.Config, world: int, *nets: torch.nn.Module) -> None:
    """Refuse, before the run folder exists, a batch that a BatchNorm1d layer cannot normalise: one row per
    channel (the global batch with model.sync_bn, else each process's share)."""
    if not any(isinstance(m, torch.nn.BatchNorm1d) for net in nets for m in net.modules()):
        return
    rows = cfg.train.batch_size if cfg.model.sync_bn else cfg.train.batch_size // world
    if rows < 2:
        where = "in all" if cfg.model.sync_bn else f"per process ({world} processes)"
        fix = "train.batch_size >= 2" if cfg.model.sync_bn else f"train.batch_size >= {2 * world} or model.sync_bn=true"
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} leaves BatchNorm {rows} image {where} to take statistics "
            f"over; it needs at least 2: set {fix}"
        )


def loop(run: Run, stop: StopRequest) -> int:
    """Train from ``run.counters.step`` to the schedule's end or a stop request; return the agreed signal
    (0: none). Batches, noise and labels are functions of the step, so a resumed run draws the same."""
    acc, s, t = run.rt.accelerator, run.schedule, run.cfg.train
    step, signum = run.counters.step, 0
    run.bar = tqdm(total=s.total_steps, initial=step, disable=not acc.is_main_process, unit="step", dynamic_ncols=True)
    run.t0 = time.perf_counter()
    for epoch in range(s.epoch_of(step), s.epochs):
        epoch_t0, epoch_step0 = time.perf_counter(), step
        perm = epoch_permutation(len(run.images), t.seed, epoch)
        idx = shard(perm, t.batch_size, run.rt.world, run.rt.rank)[: s.steps_per_epoch * t.d_steps].to(run.rt.device)
        flush(run)  # rows before this event, so W&B steps never go backwards
        shards = check_shards(acc, idx, len(run.images), run.step_images)
        if step == epoch * s.steps_per_epoch:
            run.log.event({"event": "epoch_start", "step": step, "epoch": epoch, "shards": shards}, section=None)
        while step < s.epoch_end(epoch):
            i = step - epoch * s.steps_per_epoch
            rows = idx[i * t.d_steps : (i + 1) * t.d_steps]  # this step's d_steps real batches
            real = lambda k, rows=rows: run.images.batch(rows[k])  # noqa: E731
            run.buffer.add(step, run.gan.step(step, real, measure=step % t.log_every == 0))
            step += 1
            run.bar.update()
            if run.buffer.full():
                flush(run)  # the only host sync of the loop: every log_every steps
                signum = stop.agreed(acc)  # several ranks: they agree here, where they sync anyway
            elif run.rt.world == 1:
                signum = stop.signum  # one process: a local flag, no sync
            if signum:
                break
        flush(run)  # waits for the device: the epoch's time is then honest on a GPU too
        signum = signum or stop.agreed(acc)  # every rank reaches this, whatever log_every is
        if step == s.total_steps:
            signum = 0  # a stop requested during the last steps: the run is complete, finish it normally
        todo = s.after(step, stopping=bool(signum))
        if todo is not None:
            maintain(run, todo, timing(run, step - epoch_step0, epoch_t0))
        if step == s.total_steps or signum:
            break
    run.bar.close()
    run.counters.step = step
    return signum


def finish(run: Run, signum: int) -> Path:
    """A stop request ends in :class:`Stopped` (the checkpoint is saved); a finished run writes its summary."""
    acc, step = run.rt.accelerator, run.counters.step
    seconds = run.counters.train_seconds + (time.perf_counter() - run.t0)
    run.log.close()
    if signum:
        raise Stopped(
            signum,
            f"stopped by signal {signum} at step {step} with a checkpoint; continue with the same command plus "
            f"--resume {run.run_dir} (one process: python -m distgan.train --resume {run.run_dir})",
        )
    write_summary(run, seconds)
    nimg = step * run.step_images
    acc.print(f"done: {step} steps, {nimg} real images in {seconds:.1f} s ({nimg / seconds:.0f} img/s); {run.run_dir}")
    return run.run_dir


def finish_early(run: Run) -> Path:
    """A resume of a run that already reached its last step: its summary, nothing trained."""
    step = run.counters.step
    run.rt.accelerator.print(
        f"{run.run_dir} already reached step {step} of {run.schedule.total_steps}: nothing to train"
    )
    if not (run.run_dir / "summary.json").exists():
        write_summary(run, run.counters.train_seconds)
    run.log.close()
    return run.run_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    shipped = config.DEFAULT_FILE.is_file()  # in a clone; an installed wheel has no configs/
    p = keys.parser(
        "python -m distgan.train",
        "Train a GAN from a YAML config. Writes runs/<config>-s<seed>-<time>/ (config.yaml, metrics.jsonl, "
        "samples/, checkpoints/, summary.json). Starts in seconds; a config that evaluates (eval.every_epochs) "
        "first fits the evaluator once, about 2.5 minutes on 2 cores, then reuses it.",
        config.load(config.DEFAULT_FILE) if shipped else None,
        f"those of {config.DEFAULT_NAME}; --dry-run prints what a run would use" if shipped else None,
        "as KEY=VALUE, anywhere on the command line (e.g. train.epochs=3)",
    )
    p.add_argument(
        "--config", help=f"YAML config (see configs/); omitted: {config.DEFAULT_NAME}, what make train trains"
    )
    p.add_argument("--dry-run", action="store_true", help="print the config and launch as the run would resolve them")
    p.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue a run exactly: a run folder or checkpoint folder, or 'auto' (this config's newest run, "
        "or output.name's; none: start one). Without --config, the checkpoint's own config is used",
    )
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides anywhere, e.g. train.epochs=3 (keys below)")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        base = None
        if args.resume and args.resume != "auto" and args.config is None:
            _, saved = checkpoint.load(args.resume)  # the checkpoint's own config, under any overrides
            base = saved.get("config")
            if not isinstance(base, dict):
                raise CheckpointError(f"{args.resume} holds no config mapping to continue with; give --config")
        cfg = config.load(args.config or (config.DEFAULT_FILE if base is None else None), args.overrides, base=base)
        if args.dry_run:
            print(dry_run(cfg, args.resume), end="")
            return 0
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except DistganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        train(cfg, args.resume)
    except Stopped as e:
        print(str(e), file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # a second Ctrl-C (signals.py), or one before training: no save, no traceback
        print("interrupted: stopped at once, nothing saved since the last checkpoint", file=sys.stderr)
        return 130  # 128 + SIGINT, as for one Ctrl-C
    except (DistganError, OSError) as e:  # ours say what to do; the system's (a full disk) say what failed
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
