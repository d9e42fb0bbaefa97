"""Train a GAN from a config: setup, loop, per-epoch grid and checkpoint. Read top to bottom.

One CPU process (what the tests use)::

    python -m distgan.train --config configs/default.yaml train.epochs=3

The same module under accelerate (one GPU, N GPUs, N CPU processes, several nodes: see launch/)::

    accelerate launch -m distgan.train --config configs/v5.yaml
    accelerate launch --config_file launch/cpu_2proc.yaml -m distgan.train --config configs/default.yaml

``--dry-run`` prints the resolved config and exits. Dotted overrides (``train.seed=1``) come last.
A run writes ``runs/<name>/``: config.yaml, metrics.jsonl, samples/epoch-NNN.png, checkpoints/, wandb/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from distgan import __version__, checkpoint, config, data, images, models
from distgan.batches import DeviceImages, epoch_permutation, shard
from distgan.rng import StepNoise, fixed_z, stream_seed
from distgan.steps import GANSteps
from distgan.tracking import RunLog, StepBuffer


class LaunchError(RuntimeError):
    """The processes were started in a way that would not train what the user asked for."""


def check_world(accelerator: Accelerator) -> None:
    """Fail fast when the launcher started N processes that do not form one group of N."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise LaunchError(
            f"the launcher started {launched} processes but each sees a world of {accelerator.num_processes} "
            f"({accelerator.distributed_type}): they would train {launched} separate copies. On a machine "
            "without GPUs, run N cooperating CPU processes with\n"
            "  accelerate launch --config_file launch/cpu_2proc.yaml -m distgan.train --config ...\n"
            "or set ACCELERATE_USE_CPU=1 before torchrun."
        )


def resolve_threads(cfg: config.Config) -> int:
    if cfg.train.threads is not None:
        return cfg.train.threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // local)


def make_run_dir(cfg: config.Config, accelerator: Accelerator) -> Path:
    """The run folder, named on the main process and shared, created by the main process only."""
    name = [cfg.output.name or f"{cfg.name}-s{cfg.train.seed}-{dt.datetime.now():%Y%m%d-%H%M%S}"]
    broadcast_object_list(name)
    run_dir = Path(cfg.output.dir) / name[0]
    if accelerator.is_main_process:
        if (run_dir / "checkpoints").exists():
            raise FileExistsError(f"{run_dir} already holds a run; choose another output.name (or remove that folder)")
        try:
            (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(
                f"cannot create the run folder {run_dir} ({e}); set output.dir to a writable folder"
            ) from None
    return run_dir


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
    cfg.train.mixed_precision = accelerator.mixed_precision
    if cfg.train.batch_size % world:
        raise config.ConfigError(
            f"train.batch_size={cfg.train.batch_size} (global) is not divisible by {world} processes; "
            f"use a multiple of {world}"
        )
    run_dir = make_run_dir(cfg, accelerator)
    cfg.output.name = run_dir.name
    resolved = cfg.to_dict()
    if accelerator.is_main_process:
        (run_dir / "config.yaml").write_text(config.dump_yaml(cfg))

    # ---- data: prepared once by the main process, then read by every rank from verified files
    with accelerator.main_process_first():
        data.prepare(cfg.data.dataset, cfg.data.root, log=lambda m: accelerator.print(m))
    train_images, _ = data.load_split(cfg.data.dataset, cfg.data.root, train=True)
    real_images = DeviceImages(train_images, accelerator.device)
    steps_per_epoch = len(real_images) // (cfg.train.batch_size * cfg.train.d_steps)
    if steps_per_epoch == 0:
        raise config.ConfigError(
            f"train.batch_size={cfg.train.batch_size} x d_steps={cfg.train.d_steps} exceeds the dataset "
            f"({len(real_images)} images)"
        )

    # ---- models and optimisers: identical init on every rank (DDP also broadcasts rank 0's weights)
    torch.manual_seed(stream_seed(cfg.train.seed, "init"))
    G, D = models.build_pair(cfg.model)
    G_raw, D_raw = G, D
    opt_g = torch.optim.Adam(
        G.parameters(), lr=cfg.optim.g.lr, betas=cfg.optim.g.betas, weight_decay=cfg.optim.g.weight_decay
    )
    opt_d = torch.optim.Adam(
        D.parameters(), lr=cfg.optim.d.lr, betas=cfg.optim.d.betas, weight_decay=cfg.optim.d.weight_decay
    )
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    torch.manual_seed(stream_seed(cfg.train.seed, "torch", rank))  # dropout masks: differ per rank, reproducibly
    gan = GANSteps(accelerator, G, D, opt_g, opt_d, cfg.loss.d, cfg.loss.g)
    noise = StepNoise(cfg.train.seed, cfg.model.z_dim, cfg.train.batch_size, world, rank, accelerator.device)
    grid_z = fixed_z(cfg.model.z_dim, cfg.output.grid_seed)

    log = RunLog(accelerator, run_dir, resolved, cfg.output.tracker == "wandb", cfg.output.wandb_project)
    buffer = StepBuffer(accelerator.device, cfg.train.log_every)
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)
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

    def end_of_epoch(epoch_done: int, step: int, tag: str) -> None:
        flush()
        nimg = step * cfg.train.d_steps * cfg.train.batch_size
        counters = {
            "epoch": epoch_done,
            "step": step,
            "nimg": nimg,
            "d_updates": step * cfg.train.d_steps,
            "g_updates": step * cfg.train.g_steps,
            "skipped_fp16_steps": dict(gan.skipped),
        }
        if accelerator.is_main_process:
            picture = sample_grid(G_raw, grid_z)
            png = images.save_png(picture, run_dir / "samples" / f"{tag}.png")
            log.image("samples", picture, step)
            info = {
                "config": resolved,
                "counters": counters,
                "versions": {"distgan": __version__, "torch": torch.__version__},
            }
            checkpoint.save(run_dir / "checkpoints", tag, checkpoint.state_tensors(G=G_raw, D=D_raw), info)
            log.event({"step": step, "epoch": epoch_done, "nimg": nimg, "sample": str(png.relative_to(run_dir))})
        accelerator.wait_for_everyone()

    # ---- the loop
    step, t0 = 0, time.perf_counter()
    for epoch in range(cfg.train.epochs):
        idx = shard(epoch_permutation(len(real_images), cfg.train.seed, epoch), cfg.train.batch_size, world, rank)
        idx = idx.to(accelerator.device)
        for i in range(steps_per_epoch):
            d_out = []
            for k in range(cfg.train.d_steps):
                d_index = step * cfg.train.d_steps + k
                z, real_t, fake_t = noise.d_step(d_index, cfg.loss.real_label, cfg.loss.fake_label)
                real = real_images.batch(idx[i * cfg.train.d_steps + k])
                d_out.append(torch.stack(gan.d_step(real, z, real_t, fake_t)))
            g_out = [gan.g_step(noise.g_step(step * cfg.train.g_steps + k)) for k in range(cfg.train.g_steps)]
            d_mean = torch.stack(d_out).mean(0)
            buffer.add(step, torch.stack([d_mean[0], torch.stack(g_out).mean(), d_mean[1], d_mean[2]]))
            step += 1
            bar.update()
            if buffer.full():
                flush()  # the only host sync of the loop: every log_every steps
            if step == total_steps:
                break
        epoch_done = epoch + 1
        finished = step == total_steps
        if step == (epoch + 1) * steps_per_epoch:  # a whole epoch
            if epoch_done % cfg.output.checkpoint_every_epochs == 0 or finished:
                end_of_epoch(epoch_done, step, f"epoch-{epoch_done:03d}")
        elif finished:  # stopped by max_steps mid-epoch: still leave a grid and a checkpoint
            end_of_epoch(epoch, step, f"step-{step:06d}")
        if finished:
            break
    bar.close()
    elapsed = time.perf_counter() - t0
    nimg = step * cfg.train.d_steps * cfg.train.batch_size
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
    except (config.ConfigError, data.DataError, LaunchError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
