"""Train a GAN from a config: setup, loop, per-epoch grid and checkpoint. Read top to bottom.

One CPU process (what the tests use)::

    python -m distgan.train --config configs/default.yaml train.epochs=3

The same module under accelerate (one GPU, N GPUs, N CPU processes, several nodes: see launch/)::

    accelerate launch -m distgan.train --config configs/v5.yaml
    accelerate launch --config_file launch/cpu_multi.yaml --num_processes 2 -m distgan.train ...   (see launch/cpu_multi.sh)

``--dry-run`` prints the resolved config and exits. Dotted overrides (``train.seed=1``) come last.
A run writes ``runs/<name>/``: config.yaml, metrics.jsonl, samples/epoch-NNN.png, checkpoints/, wandb/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from distgan import __version__, checkpoint, config, data, evaluate, images, models
from distgan.batches import DeviceImages, epoch_permutation, shard
from distgan.dist import (
    LaunchError,
    MainProcessFailed,
    RankMismatch,
    check_ranks_agree,
    check_shards,
    check_world,
    on_main,
    sync_buffers,
)
from distgan.rng import StepNoise, fixed_z, stream_seed, swap_rate
from distgan.steps import EMA, GANSteps
from distgan.tracking import RunLog, StepBuffer


def resolve_threads(cfg: config.Config) -> int:
    if cfg.train.threads is not None:
        return cfg.train.threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // local)


def make_run_dir(cfg: config.Config, accelerator: Accelerator) -> Path:
    """The run folder, named on the main process and shared; created (never reused) by the main process."""
    name = [cfg.output.name or f"{cfg.name}-s{cfg.train.seed}-{dt.datetime.now():%Y%m%d-%H%M%S}"]
    broadcast_object_list(name)
    run_dir = Path(cfg.output.dir) / name[0]

    def create() -> None:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise FileExistsError(f"{run_dir} already holds a run; choose another output.name (or remove that folder)")
        try:
            (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(
                f"cannot create the run folder {run_dir} ({e}); set output.dir to a writable folder"
            ) from None
        (run_dir / "config.yaml").write_text(config.dump_yaml(cfg))

    on_main(accelerator, create)
    return run_dir


def couples_batch(module: torch.nn.Module) -> bool:
    """True when a sample's output depends on the rest of its batch (BatchNorm, minibatch std)."""
    return any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) or getattr(m, "couples_batch", False)
        for m in module.modules()
    )


def make_adam(module: torch.nn.Module, opt: config.AdamConfig, fused: bool = True) -> torch.optim.Adam:
    """Adam with the fused kernel (CPU and CUDA, torch >= 2.4): the per-tensor loop costs a quarter of a
    small model's step on a CPU. Not under fp16: a fused Adam skips overflowing steps inside its kernel,
    where accelerate cannot see (and we could not count) them."""
    kwargs = {"lr": opt.lr, "betas": opt.betas, "weight_decay": opt.weight_decay}
    if not fused:
        return torch.optim.Adam(module.parameters(), foreach=True, **kwargs)
    try:
        return torch.optim.Adam(module.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError):  # an older torch or an unsupported device
        return torch.optim.Adam(module.parameters(), foreach=True, **kwargs)


def sample_grid(G: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The fixed-z grid in eval mode and float32 (no autocast), as uint8 (H, W).

    ``type(G).forward`` calls the class's forward, bypassing the autocast wrapper accelerate installs
    on the instance under mixed precision, so the grid is what ``distgan.sample`` recomputes.
    """
    was_training = G.training
    G.eval()
    with torch.no_grad():
        out = type(G).forward(G, z.to(next(G.parameters()).device))
    G.train(was_training)
    return images.grid(images.to_uint8(out))


def train(cfg: config.Config) -> Path:
    """Run one training; return the run folder."""
    # ---- setup: processes, precision, threads
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        log_with="wandb" if cfg.output.tracker == "wandb" else None,
    )
    try:
        return _train(cfg, accelerator)
    finally:
        accelerator.end_training()  # also destroys the process group: no SIGABRT at exit under gloo


def _train(cfg: config.Config, accelerator: Accelerator) -> Path:
    check_world(accelerator)
    world, rank = accelerator.num_processes, accelerator.process_index
    cfg.train.threads = resolve_threads(cfg)
    torch.set_num_threads(cfg.train.threads)  # 1 vs 2 threads give different results on CPU: fix and record
    torch.set_flush_denormal(cfg.train.flush_denormal)  # no effect on GPUs; a no-op where unsupported
    cfg.train.mixed_precision = accelerator.mixed_precision
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # accelerate accepts it but has no CPU fp16 autocast and no scaler: the run would be float32 in disguise.
        raise config.ConfigError(
            "mixed_precision=fp16 is not available on the CPU (accelerate would silently train in float32); "
            "use train.mixed_precision=bf16 on a CPU, or fp16 on a GPU"
        )
    if cfg.train.batch_size % world:
        raise config.ConfigError(
            f"train.batch_size={cfg.train.batch_size} (global) is not divisible by {world} processes; "
            f"use a multiple of {world}"
        )
    if cfg.model.sync_bn and accelerator.device.type != "cuda":
        raise config.ConfigError(
            "model.sync_bn=true needs CUDA GPUs (SyncBatchNorm has no CPU/gloo kernel); set model.sync_bn=false"
        )

    # ---- data: prepared by the main process, then verified (never fetched) by the other ranks. On several
    # machines without a shared data.root, each machine's first process prepares its own copy first.
    on_main(accelerator, lambda: data.prepare(cfg.data.dataset, cfg.data.root, log=accelerator.print))
    with accelerator.local_main_process_first():
        data.prepare(cfg.data.dataset, cfg.data.root, log=accelerator.print)
    train_images, _ = data.load_split(cfg.data.dataset, cfg.data.root, train=True)
    if cfg.data.limit is not None:
        train_images = train_images[: cfg.data.limit]
    real_images = DeviceImages(train_images, accelerator.device)
    step_images = cfg.train.batch_size * cfg.train.d_steps  # real images one step consumes, over all ranks
    steps_per_epoch = len(real_images) // step_images
    if steps_per_epoch == 0:
        raise config.ConfigError(
            f"train.batch_size={cfg.train.batch_size} x d_steps={cfg.train.d_steps} exceeds the dataset "
            f"({len(real_images)} images)"
        )

    # ---- the evaluator (fitted once and cached by the main process; every rank scores its share of samples)
    evaluator = ref = None
    if cfg.eval.every_epochs:

        def find_evaluator() -> None:
            found = evaluate.load(cfg.data.dataset, cfg.data.root, fit_if_missing=True, log=accelerator.print)
            evaluate.reference(found, cfg.data.root)  # cache the real statistics too

        on_main(accelerator, find_evaluator)
        evaluator = evaluate.load(cfg.data.dataset, cfg.data.root).to(accelerator.device)
        if accelerator.is_main_process:
            ref = evaluate.reference(evaluator, cfg.data.root).to(accelerator.device)

    # ---- models and optimisers: identical init on every rank (DDP also broadcasts rank 0's weights)
    torch.manual_seed(stream_seed(cfg.train.seed, "init"))
    G, D = models.build_pair(cfg.model)
    if cfg.model.sync_bn:
        G, D = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (G, D))

    # ---- the run folder, once every check above has passed (a refused run leaves nothing behind)
    run_dir = make_run_dir(cfg, accelerator)
    cfg.output.name = run_dir.name
    resolved = cfg.to_dict()

    G_raw, D_raw = G, D
    # The EMA copy is made before prepare(): under mixed precision accelerate patches G's forward in place.
    ema = EMA(G_raw, cfg.model.ema_decay) if cfg.model.ema_decay else None
    fused = accelerator.mixed_precision != "fp16"
    opt_g, opt_d = make_adam(G, cfg.optim.g, fused), make_adam(D, cfg.optim.d, fused)
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    if ema is not None:
        ema.model.to(accelerator.device)
    torch.manual_seed(stream_seed(cfg.train.seed, "torch", rank))  # dropout masks: differ per rank, reproducibly
    separate = cfg.train.d_forward == "separate" or (cfg.train.d_forward == "auto" and couples_batch(D_raw))
    gan = GANSteps(accelerator, G, D, opt_g, opt_d, cfg.loss.d, cfg.loss.g, separate_d_forward=separate)
    gan.ema = ema
    nets = {"G": G_raw, "D": D_raw, **({"G_ema": ema.model} if ema else {})}  # what checkpoints hold
    G_show = ema.model if ema else G_raw  # what grids show
    noise = StepNoise(cfg.train.seed, cfg.model.z_dim, cfg.train.batch_size, world, rank, accelerator.device)
    grid_z = fixed_z(cfg.model.z_dim, cfg.output.grid_seed)
    versions = {"distgan": __version__, "torch": torch.__version__}

    log = RunLog(accelerator, run_dir, resolved, cfg.output.tracker == "wandb", cfg.output.wandb_project)
    buffer = StepBuffer(accelerator.device, cfg.train.log_every)
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)
    total_d = total_steps * cfg.train.d_steps  # the swap schedule's "fraction of training" counts D updates
    accelerator.print(
        f"distgan {__version__}: {cfg.name} on {world} x {accelerator.device} ({accelerator.distributed_type}, "
        f"{accelerator.mixed_precision}), {total_steps} steps of {cfg.train.batch_size} images, run folder {run_dir}"
    )
    bar = tqdm(total=total_steps, disable=not accelerator.is_main_process, unit="step", dynamic_ncols=True)

    def flush() -> None:
        rows = buffer.drain(accelerator)
        log.rows(rows)
        if rows:
            last = rows[-1]
            bar.set_postfix(loss_d=f"{last['loss_d']:.3f}", loss_g=f"{last['loss_g']:.3f}", refresh=False)

    def maintenance(epoch_done: int, step: int, tag: str, grid: bool, save: bool, score: bool, timing: dict) -> None:
        """Flush metrics; score G; on the main process write the fixed-z grid and/or a checkpoint."""
        flush()
        nimg = step * step_images
        sync_buffers(accelerator, *nets.values())  # collective: BatchNorm statistics as DDP's next forward sets them
        rank_checksums = check_ranks_agree(accelerator, **nets) if save else None  # collective
        if score:  # collective: each rank generates and classifies its share of the samples
            e = cfg.eval
            result = evaluate.score_generator(
                G_show, cfg.model.z_dim, evaluator, ref, e.samples, e.seed, e.pr_k, accelerator
            )
            if result is not None:
                log.event({"event": "eval", "step": step, "epoch": epoch_done, "nimg": nimg, **result}, "eval")
                accelerator.print(f"epoch {epoch_done}: " + evaluate.format_metrics(result).replace("\n", "; "))

        def write() -> None:
            event = {"event": "epoch_end", "step": step, "epoch": epoch_done, "nimg": nimg, **timing}
            if accelerator.scaler is not None:  # fp16: one scaler for both optimizers; report what it skipped
                event["skipped_fp16_steps"] = dict(gan.skipped)
            if grid:
                picture = sample_grid(G_show, grid_z)
                png = images.save_png(picture, run_dir / "samples" / f"{tag}.png")
                log.image("samples", picture, step)
                event["sample"] = str(png.relative_to(run_dir))
            if save:
                counters = {
                    "epoch": epoch_done,
                    "step": step,
                    "nimg": nimg,
                    "d_updates": gan.d_updates,
                    "g_updates": gan.g_updates,
                    "skipped_fp16_steps": dict(gan.skipped),
                    "rank_checksums": rank_checksums,
                }
                info = {"config": resolved, "counters": counters, "versions": versions}
                path = checkpoint.save(run_dir / "checkpoints", tag, checkpoint.state_tensors(**nets), info)
                event["checkpoint"] = str(path.relative_to(run_dir))
            log.event(event)

        on_main(accelerator, write)  # a failed write (full disk) stops every rank, not only the main one

    def timing(steps: int, since: float) -> dict:
        seconds = time.perf_counter() - since
        lrs = {f"lr_{n}": opt.param_groups[0]["lr"] for n, opt in (("g", opt_g), ("d", opt_d))}
        return {"seconds": round(seconds, 3), "img_per_s": round(steps * step_images / seconds, 1), **lrs}

    # ---- the loop
    step, t0 = 0, time.perf_counter()
    for epoch in range(cfg.train.epochs):
        epoch_t0, epoch_step0 = time.perf_counter(), step
        idx = shard(epoch_permutation(len(real_images), cfg.train.seed, epoch), cfg.train.batch_size, world, rank)
        idx = idx[: steps_per_epoch * cfg.train.d_steps].to(accelerator.device)  # the batches this epoch uses
        flush()  # rows before this event, so W&B steps never go backwards
        shards = check_shards(accelerator, idx, len(real_images), step_images)
        log.event({"event": "epoch_start", "step": step, "epoch": epoch, "shards": shards}, section=None)
        for i in range(steps_per_epoch):
            d_out = []
            for k in range(cfg.train.d_steps):
                d_index = step * cfg.train.d_steps + k
                p_swap = swap_rate(cfg.loss.swap_prob, cfg.loss.swap_schedule, cfg.loss.swap_until, d_index / total_d)
                z, real_t, fake_t = noise.d_step(d_index, cfg.loss.real_label, cfg.loss.fake_label, p_swap)
                real = real_images.batch(idx[i * cfg.train.d_steps + k])
                gan.measure = step % cfg.train.log_every == 0  # gradient norms on logging steps only
                d_out.append(gan.d_step(real, z, real_t, fake_t))
            g_out = [gan.g_step(noise.g_step(step * cfg.train.g_steps + k)) for k in range(cfg.train.g_steps)]
            d_mean, g_mean = torch.stack(d_out).mean(0), torch.stack(g_out).mean(0)
            # the order of STEP_KEYS: loss_d, loss_g, d_real, d_fake, grad_norm_d, grad_norm_g
            buffer.add(step, torch.stack([d_mean[0], g_mean[0], d_mean[1], d_mean[2], d_mean[3], g_mean[1]]))
            step += 1
            bar.update()
            if buffer.full():
                flush()  # the only host sync of the loop: every log_every steps
            if step == total_steps:
                break
        finished = step == total_steps
        flush()  # waits for the device: the epoch's time is then honest on a GPU too
        spent = timing(step - epoch_step0, epoch_t0)
        every = cfg.eval.every_epochs
        if step == (epoch + 1) * steps_per_epoch:  # a whole epoch
            done = epoch + 1
            grid = done % cfg.output.sample_every_epochs == 0 or finished
            save = done % cfg.output.checkpoint_every_epochs == 0 or finished
            score = bool(every) and (done % every == 0 or finished)
            maintenance(done, step, f"epoch-{done:03d}", grid, save, score, spent)
        elif finished:  # stopped by max_steps mid-epoch: still leave a grid, a checkpoint and a score
            maintenance(epoch, step, f"step-{step:06d}", True, True, bool(every), spent)
        if finished:
            break
    bar.close()
    elapsed = time.perf_counter() - t0
    nimg = step * step_images
    if accelerator.is_main_process:
        summary = {
            "name": cfg.name,
            "steps": step,
            "nimg": nimg,
            "seconds": round(elapsed, 3),
            "img_per_s": round(nimg / elapsed, 1),
            "world": world,
            "device": str(accelerator.device),
            "mixed_precision": accelerator.mixed_precision,
            "params_g": sum(p.numel() for p in G_raw.parameters()),
            "params_d": sum(p.numel() for p in D_raw.parameters()),
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.print(
        f"done: {step} steps, {nimg} real images in {elapsed:.1f} s ({nimg / elapsed:.0f} img/s); {run_dir}"
    )
    log.close()
    return run_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m distgan.train", description="Train a GAN from a YAML config.")
    p.add_argument("--config", help="YAML config (see configs/); omitted: the built-in defaults")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides such as train.epochs=3 output.tracker=none")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config.load(args.config, args.overrides)
    except config.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(config.dump_yaml(cfg), end="")
        return 0
    try:
        train(cfg)
    except (config.ConfigError, data.DataError, LaunchError, RankMismatch, MainProcessFailed, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
