"""Train a GAN from a config: setup, loop, per-epoch grid and checkpoint. Read top to bottom.

One CPU process (what the tests use)::

    python -m distgan.train --config configs/default.yaml train.epochs=3

The same module under accelerate (one GPU, N GPUs, N CPU processes, several nodes: see launch/)::

    accelerate launch -m distgan.train --config configs/v5.yaml
    accelerate launch --config_file launch/cpu_multi.yaml --num_processes 2 -m distgan.train ...   (see launch/cpu_multi.sh)

``--dry-run`` prints the resolved config and exits. Dotted overrides (``train.seed=1``) come last.
A run writes ``runs/<name>/``: config.yaml, metrics.jsonl, samples/epoch-NNN.png, checkpoints/, wandb/.

``--resume auto|PATH`` continues a run exactly, at step granularity (see ``distgan.resume``): weights,
EMA, both optimizers, the fp16 scaler, every rank's RNG, counters, metrics.jsonl and the W&B run.
SIGTERM / SIGINT / SIGUSR1 stop a run cleanly with a checkpoint (``distgan.signals``); a NaN or inf loss
or weight stops every rank before anything non-finite is saved.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
import typing
import uuid
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DynamoBackend, TorchDynamoPlugin, broadcast_object_list
from tqdm.auto import tqdm

from distgan import __version__, checkpoint, config, data, evaluate, images, models, resume
from distgan.batches import DeviceImages, epoch_permutation, shard
from distgan.dist import (
    LaunchError,
    MainProcessFailed,
    RankMismatch,
    check_ranks_agree,
    check_shards,
    check_world,
    on_main,
    rng_states,
    set_rng_states,
    sync_buffers,
)
from distgan.rng import StepNoise, fixed_z, stream_seed, swap_rate
from distgan.sample import generate
from distgan.signals import Stopped, StopRequest
from distgan.steps import EMA, GANSteps
from distgan.tracking import NonFiniteError, RunLog, StepBuffer


def resolve_threads(cfg: config.Config) -> int:
    if cfg.train.threads is not None:
        return cfg.train.threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // local)


def dynamo_plugin(mode: str | None) -> TorchDynamoPlugin | None:
    """train.compile as accelerate's plugin: None leaves accelerate's own setting (``--dynamo_backend``)."""
    if mode is None:
        return None
    if mode == "no":
        return TorchDynamoPlugin(backend="no")
    return TorchDynamoPlugin(backend="inductor", mode=mode)


def make_run_dir(cfg: config.Config, accelerator: Accelerator, resumed: Path | None = None, auto: bool = False) -> Path:
    """The run folder, named on the main process and shared; created (never reused) by the main process,
    except the folder of the run being resumed. ``auto`` (``--resume auto`` found no checkpoint): a named
    folder left by an attempt that died before its first checkpoint is renamed aside, not reused."""
    name = [cfg.output.name or f"{cfg.name}-s{cfg.train.seed}-{dt.datetime.now():%Y%m%d-%H%M%S}"]
    broadcast_object_list(name)
    run_dir = resumed if resumed is not None else Path(cfg.output.dir) / name[0]

    def create() -> None:
        if resumed is not None:
            data.write_atomic(run_dir / "config.yaml", config.dump_yaml(cfg).encode())
            return
        if auto and run_dir.exists() and checkpoint.read_pointer(run_dir / "checkpoints", "latest") is None:
            aside = run_dir.with_name(f"{run_dir.name}.no-checkpoint-{dt.datetime.now():%Y%m%d-%H%M%S}")
            run_dir.rename(aside)
            accelerator.print(f"resume auto: {run_dir} never saved a checkpoint; moved it to {aside}, starting anew")
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
    """The fixed-z grid as uint8 (H, W): exactly what ``distgan.sample --fixed-z`` recomputes."""
    return images.grid(generate(G, z))


def train(cfg: config.Config, resume_from: str | None = None) -> Path:
    """Run one training (or continue one: ``resume_from`` 'auto' or a path); return the run folder."""
    # ---- setup: processes, precision, threads
    tf32 = torch.backends.cuda.matmul.allow_tf32
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        log_with="wandb" if cfg.output.tracker == "wandb" else None,
        dynamo_plugin=dynamo_plugin(cfg.train.compile),
    )
    # accelerate turns TF32 on for compiled float32 runs on CUDA; a compiled run must compute what an eager one does
    torch.backends.cuda.matmul.allow_tf32 = tf32
    stop = StopRequest().install()
    threads = torch.get_num_threads()
    try:
        return _train(cfg, accelerator, resume_from, stop)
    finally:
        stop.uninstall()
        torch.set_num_threads(threads)  # process-wide settings go back as they were (in-process callers)
        torch.set_flush_denormal(False)
        accelerator.end_training()  # also destroys the process group: no SIGABRT at exit under gloo


def _train(cfg: config.Config, accelerator: Accelerator, resume_from: str | None, stop: StopRequest) -> Path:
    check_world(accelerator)
    world, rank = accelerator.num_processes, accelerator.process_index
    cfg.train.threads = resolve_threads(cfg)
    torch.set_num_threads(cfg.train.threads)  # 1 vs 2 threads give different results on CPU: fix and record
    torch.set_flush_denormal(cfg.train.flush_denormal)  # no effect on GPUs; a no-op where unsupported
    cfg.train.mixed_precision = accelerator.mixed_precision
    plugin = accelerator.state.dynamo_plugin
    modes = typing.get_args(typing.get_args(typing.get_type_hints(config.TrainConfig)["compile"])[0])
    if plugin.backend not in (DynamoBackend.NO, DynamoBackend.INDUCTOR) or (plugin.mode or "default") not in modes:
        raise config.ConfigError(
            f"accelerate asks for torch.compile backend {plugin.backend.value.lower()} with mode {plugin.mode!r}; "
            f"distgan compiles with inductor in one of the modes {', '.join(modes)}: set train.compile instead"
        )
    cfg.train.compile = "no" if plugin.backend == DynamoBackend.NO else (plugin.mode or "default")
    if cfg.train.compile == "reduce-overhead" and accelerator.device.type != "cuda":
        raise config.ConfigError(
            "train.compile=reduce-overhead means CUDA graphs, which need a CUDA GPU; use train.compile=default on a CPU"
        )
    if cfg.loss.r1_gamma and cfg.train.compile != "no":
        raise config.ConfigError(
            f"loss.r1_gamma={cfg.loss.r1_gamma} differentiates D's input gradient (a double backward), which "
            f"torch.compile does not support (train.compile={cfg.train.compile}): set train.compile=no, or "
            "loss.r1_gamma=0"
        )
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
        with accelerator.local_main_process_first():  # several machines without a shared data.root
            evaluator = evaluate.load(cfg.data.dataset, cfg.data.root, fit_if_missing=True, log=accelerator.print)
        evaluator.to(accelerator.device)
        if accelerator.is_main_process:
            ref = evaluate.reference(evaluator, cfg.data.root).to(accelerator.device)

    # ---- what to resume, decided by the main process for all; checked before anything is written
    restored = None
    if resume_from is not None:
        found = on_main(accelerator, lambda: resume.find(cfg, resume_from))  # a bad path stops every rank
        target = [str(found) if found is not None else None]
        broadcast_object_list(target)
        if target[0] is None:
            accelerator.print(f"resume auto: no run of {cfg.name} (seed {cfg.train.seed}) to continue; starting one")
        else:
            folder = Path(target[0])
            model_t, train_t, saved = checkpoint.load_training_state(folder)
            for note in resume.check(saved["config"], cfg, folder):
                accelerator.print(f"note: {note}")
            restored = (folder, model_t, train_t, saved)
            cfg.output.dir, cfg.output.name = str(folder.parents[2]), folder.parents[1].name

    # ---- models and optimisers: identical init on every rank (DDP also broadcasts rank 0's weights)
    torch.manual_seed(stream_seed(cfg.train.seed, "init"))
    G, D = models.build_pair(cfg.model)
    if cfg.model.sync_bn:
        G, D = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (G, D))
    if restored is not None:
        G.load_state_dict(checkpoint.module_state(restored[1], "G"))
        D.load_state_dict(checkpoint.module_state(restored[1], "D"))

    # ---- the run folder, once every check above has passed (a refused run leaves nothing behind)
    run_dir = make_run_dir(
        cfg, accelerator, restored[0].parents[1] if restored else None, auto=resume_from == "auto" and not restored
    )
    if restored is not None:
        on_main(accelerator, lambda: checkpoint.abandon_newer(restored[0]))
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
    gan = GANSteps(
        accelerator,
        G,
        D,
        opt_g,
        opt_d,
        cfg.loss.d,
        cfg.loss.g,
        separate_d_forward=separate,
        r1_gamma=cfg.loss.r1_gamma,
        r1_every=cfg.loss.r1_every,
    )
    gan.ema = ema
    counters = {
        "step": 0,
        "train_seconds": 0.0,
        "best_fid": None,
        "metrics_bytes": None,
        "wandb_id": uuid.uuid4().hex[:12],
    }
    if restored is not None:
        counters.update(restore(accelerator, restored, opt_g, opt_d, gan, ema, cfg))
    nets = {"G": G_raw, "D": D_raw, **({"G_ema": ema.model} if ema else {})}  # what checkpoints hold
    G_show = ema.model if ema else G_raw  # what grids show
    bn_z = None
    if ema is not None and cfg.model.ema_bn_samples:
        bn_z = fixed_z(cfg.model.z_dim, cfg.train.seed, cfg.model.ema_bn_samples, stream="ema_bn").to(
            accelerator.device
        )
    noise = StepNoise(cfg.train.seed, cfg.model.z_dim, cfg.train.batch_size, world, rank, accelerator.device)
    grid_z = fixed_z(cfg.model.z_dim, cfg.output.grid_seed)
    versions = {"distgan": __version__, "torch": torch.__version__}

    wandb_id = [counters["wandb_id"]]
    broadcast_object_list(wandb_id)  # one W&B run id for all ranks (only the main one logs)
    log = RunLog(
        accelerator,
        run_dir,
        resolved,
        cfg.output.tracker == "wandb",
        cfg.output.wandb_project,
        wandb_id[0],
        keep_bytes=counters["metrics_bytes"],
    )
    buffer = StepBuffer(accelerator.device, cfg.train.log_every)
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)
    total_d = total_steps * cfg.train.d_steps  # the swap schedule's "fraction of training" counts D updates
    accelerator.print(
        f"distgan {__version__}: {cfg.name} on {world} x {accelerator.device} ({accelerator.distributed_type}, "
        f"{accelerator.mixed_precision}), {total_steps} steps of {cfg.train.batch_size} images, run folder {run_dir}"
    )
    start_step = counters["step"]
    if start_step >= total_steps:
        accelerator.print(f"{run_dir} already reached step {start_step} of {total_steps}: nothing to train")
        if accelerator.is_main_process and not (run_dir / "summary.json").exists():
            write_summary(
                run_dir,
                cfg,
                accelerator,
                G_raw,
                D_raw,
                start_step,
                start_step * step_images,
                counters["train_seconds"],
                start_step,
            )
        log.close()
        return run_dir
    bar = tqdm(
        total=total_steps, initial=start_step, disable=not accelerator.is_main_process, unit="step", dynamic_ncols=True
    )
    ckpt_dir = run_dir / "checkpoints"

    def flush() -> None:
        try:
            rows = buffer.drain(accelerator)
        except NonFiniteError as e:  # raised on every rank at once: the reduced losses are the same everywhere
            raise NonFiniteError(e.what, e.step, last_good(ckpt_dir)) from None
        log.rows(rows)
        if rows:
            last = rows[-1]
            bar.set_postfix(loss_d=f"{last['loss_d']:.3f}", loss_g=f"{last['loss_g']:.3f}", refresh=False)

    def maintenance(
        epoch_done: int, step: int, tag: str, grid: bool, save: bool, score: bool, timing: dict, kind: str = "epoch_end"
    ) -> None:
        """Flush metrics; score G; on the main process write the fixed-z grid and/or a checkpoint.
        ``kind``: the event's name, epoch_end or stop (mid-epoch: max_steps reached, or a signal)."""
        flush()
        nimg = step * step_images
        if bn_z is not None:  # only set where there is an EMA
            ema.calibrate(bn_z)
        sync_buffers(accelerator, *nets.values())  # collective: BatchNorm statistics as DDP's next forward sets them
        rank_checksums = check_ranks_agree(accelerator, **nets) if save else None  # collective
        if rank_checksums is not None and not all(map(math.isfinite, rank_checksums)):
            bad = [n for n, m in nets.items() if not all(torch.isfinite(p).all() for p in m.state_dict().values())]
            raise NonFiniteError(f"the weights of {', '.join(bad)}", step, last_good(ckpt_dir))
        result = None
        if score:  # collective: each rank generates and classifies its share of the samples
            e = cfg.eval
            result = evaluate.score_generator(
                G_show, cfg.model.z_dim, evaluator, ref, e.samples, e.seed, e.pr_k, accelerator
            )
            if result is not None:
                log.event({"event": "eval", "step": step, "epoch": epoch_done, "nimg": nimg, **result}, "eval")
                accelerator.print(f"epoch {epoch_done}: " + evaluate.format_metrics(result).replace("\n", "; "))
        train_state = {}
        if save:  # collective: every rank's RNG states travel to the main process
            train_state = rng_states(accelerator)

        def write() -> None:
            event = {"event": kind, "step": step, "epoch": epoch_done, "nimg": nimg, **timing}
            if accelerator.scaler is not None:  # fp16: one scaler for both optimizers; report what it skipped
                event["skipped_fp16_steps"] = dict(gan.skipped)
            if grid:
                picture = sample_grid(G_show, grid_z)
                png = images.save_png(picture, run_dir / "samples" / f"{tag}.png")
                log.image("samples", picture, step)
                event["sample"] = str(png.relative_to(run_dir))
            if save:
                event["checkpoint"] = f"checkpoints/{tag}"
            log.event(event)  # before the save, so the checkpoint knows where metrics.jsonl stood
            if not save:
                return
            best = counters["best_fid"]
            is_best = result is not None and (best is None or result["fid"] < best)
            state = {
                "epoch": epoch_done,
                "step": step,
                "nimg": nimg,
                "d_updates": gan.d_updates,
                "g_updates": gan.g_updates,
                "ema_updates": ema.updates if ema else 0,
                "skipped_fp16_steps": dict(gan.skipped),
                "rank_checksums": rank_checksums,
                "train_seconds": counters["train_seconds"] + (time.perf_counter() - t0),
                "best_fid": result["fid"] if is_best else best,
                "metrics_bytes": log.position(),
                "wandb_id": wandb_id[0],
            }
            tensors_g, meta_g = checkpoint.optimizer_state(opt_g, "opt_g")
            tensors_d, meta_d = checkpoint.optimizer_state(opt_d, "opt_d")
            extra = {
                "opt_g": meta_g,
                "opt_d": meta_d,
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                "world": world,
            }
            info = {"config": resolved, "counters": state, "versions": versions, "train": extra}
            checkpoint.save(
                ckpt_dir, tag, checkpoint.state_tensors(**nets), info, {**tensors_g, **tensors_d, **train_state}
            )
            if is_best:
                checkpoint.mark_best(ckpt_dir, tag)
                counters["best_fid"] = result["fid"]
            checkpoint.prune(ckpt_dir, cfg.output.keep_checkpoints)

        on_main(accelerator, write)  # a failed write (full disk) stops every rank, not only the main one

    def timing(steps: int, since: float) -> dict:
        seconds = time.perf_counter() - since
        lrs = {f"lr_{n}": opt.param_groups[0]["lr"] for n, opt in (("g", opt_g), ("d", opt_d))}
        return {"seconds": round(seconds, 3), "img_per_s": round(steps * step_images / max(seconds, 1e-9), 1), **lrs}

    # ---- the loop (from step 0, or from the resumed step: batches, noise and labels are functions of it)
    step, t0 = start_step, time.perf_counter()
    signum = 0
    for epoch in range(start_step // steps_per_epoch, cfg.train.epochs):
        epoch_t0, epoch_step0 = time.perf_counter(), step
        first = step - epoch * steps_per_epoch  # > 0 only in a resumed epoch
        idx = shard(epoch_permutation(len(real_images), cfg.train.seed, epoch), cfg.train.batch_size, world, rank)
        idx = idx[: steps_per_epoch * cfg.train.d_steps].to(accelerator.device)  # the batches this epoch uses
        flush()  # rows before this event, so W&B steps never go backwards
        shards = check_shards(accelerator, idx, len(real_images), step_images)
        if first == 0:
            log.event({"event": "epoch_start", "step": step, "epoch": epoch, "shards": shards}, section=None)
        for i in range(first, steps_per_epoch):
            d_out = []
            for k in range(cfg.train.d_steps):
                d_index = step * cfg.train.d_steps + k
                p_swap = swap_rate(cfg.loss.swap_prob, cfg.loss.swap_schedule, cfg.loss.swap_until, d_index / total_d)
                z, real_t, fake_t = noise.d_step(d_index, cfg.loss.real_label, cfg.loss.fake_label, p_swap)
                real = real_images.batch(idx[i * cfg.train.d_steps + k])
                gan.measure = step % cfg.train.log_every == 0  # gradient norms on logging steps only
                d_out.append(gan.d_step(real, z, real_t, fake_t))
            g_out = [gan.g_step(noise.g_step(step * cfg.train.g_steps + k)) for k in range(cfg.train.g_steps)]
            d_all = torch.stack(d_out)
            d_mean, g_mean, r1 = d_all.mean(0), torch.stack(g_out).mean(0), d_all[:, 4].nanmean()  # lazy R1: some nan
            # the order of STEP_KEYS: loss_d, loss_g, d_real, d_fake, grad_norm_d, grad_norm_g, r1
            buffer.add(step, torch.stack([d_mean[0], g_mean[0], d_mean[1], d_mean[2], d_mean[3], g_mean[1], r1]))
            step += 1
            bar.update()
            if buffer.full():
                flush()  # the only host sync of the loop: every log_every steps
                signum = stop.agreed(accelerator)  # several ranks: they agree here, where they sync anyway
            elif world == 1:
                signum = stop.signum  # one process: a local flag, no sync
            if step == total_steps or signum:
                break
        finished = step == total_steps
        flush()  # waits for the device: the epoch's time is then honest on a GPU too
        signum = signum or stop.agreed(accelerator)  # every rank reaches this, whatever log_every is
        if finished:
            signum = 0  # a stop requested during the last steps: the run is complete, finish it normally
        spent = timing(step - epoch_step0, epoch_t0)
        every = cfg.eval.every_epochs
        if step == (epoch + 1) * steps_per_epoch:  # a whole epoch
            done = epoch + 1
            grid = done % cfg.output.sample_every_epochs == 0 or finished
            save = done % cfg.output.checkpoint_every_epochs == 0 or finished or bool(signum)
            score = bool(every) and (done % every == 0 or finished)
            maintenance(done, step, f"epoch-{done:03d}", grid, save, score, spent)
        elif finished or signum:  # stopped mid-epoch (max_steps, a signal): still leave a grid and a checkpoint
            maintenance(epoch, step, f"step-{step:06d}", True, True, finished and bool(every), spent, "stop")
        if finished or signum:
            break
    bar.close()
    elapsed = time.perf_counter() - t0
    if signum:
        log.close()
        raise Stopped(
            signum,
            f"stopped by signal {signum} at step {step} with a checkpoint; continue with the same command plus "
            f"--resume {run_dir}",
        )
    nimg = step * step_images
    seconds = counters["train_seconds"] + elapsed
    if accelerator.is_main_process:
        write_summary(run_dir, cfg, accelerator, G_raw, D_raw, step, nimg, seconds, start_step)
    accelerator.print(
        f"done: {step} steps, {nimg} real images in {seconds:.1f} s ({nimg / seconds:.0f} img/s); {run_dir}"
    )
    log.close()
    return run_dir


def write_summary(run_dir, cfg, accelerator, G, D, step: int, nimg: int, seconds: float, start_step: int) -> None:
    """summary.json: the mark of a finished run (distgan.compare reuses only those)."""
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
        "params_g": sum(p.numel() for p in G.parameters()),
        "params_d": sum(p.numel() for p in D.parameters()),
        "resumed_from_step": start_step or None,
    }
    data.write_atomic(run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())


def last_good(ckpt_dir: Path) -> str:
    tag = checkpoint.read_pointer(ckpt_dir, "latest")
    where = f"the last good checkpoint is {ckpt_dir / tag}" if tag else "no checkpoint was saved yet"
    return (
        f"Stopped on every rank; nothing non-finite was saved: {where}. Resume it with --resume and a lower "
        "learning rate (optim.g.lr / optim.d.lr), or train in float32 (train.mixed_precision=no)."
    )


def restore(
    accelerator: Accelerator, restored: tuple, opt_g, opt_d, gan: GANSteps, ema: EMA | None, cfg: config.Config
) -> dict:
    """Load a checkpoint's optimizers, EMA, scaler, counters and RNG states; return the run's counters."""
    folder, model_t, train_t, saved = restored
    c, extra = saved["counters"], saved["train"]
    checkpoint.load_optimizer(opt_g, train_t, extra["opt_g"], "opt_g")
    checkpoint.load_optimizer(opt_d, train_t, extra["opt_d"], "opt_d")
    for opt, net in ((opt_g, "g"), (opt_d, "d")):  # a resumed run may change learning rates: the config wins
        for group in opt.param_groups:
            group["lr"] = getattr(cfg.optim, net).lr
    if ema is not None:
        ema.model.load_state_dict(checkpoint.module_state(model_t, "G_ema"))
        ema.updates = c["ema_updates"]
    if accelerator.scaler is not None and extra.get("scaler"):
        accelerator.scaler.load_state_dict(extra["scaler"])
    gan.d_updates, gan.g_updates, gan.skipped = c["d_updates"], c["g_updates"], dict(c["skipped_fp16_steps"])
    if extra["world"] == accelerator.num_processes:
        set_rng_states(accelerator, train_t)
    else:
        torch.manual_seed(stream_seed(cfg.train.seed, "torch", accelerator.process_index, c["step"]))
        accelerator.print(
            f"note: {folder} was saved by {extra['world']} processes, resumed on {accelerator.num_processes}: "
            "dropout draws are reseeded, so the continuation is not bitwise that of the original world size"
        )
    accelerator.print(f"resuming {folder} at step {c['step']} (epoch {c['epoch']})")
    return {k: c[k] for k in ("step", "train_seconds", "best_fid", "metrics_bytes", "wandb_id")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m distgan.train", description="Train a GAN from a YAML config.")
    p.add_argument("--config", help="YAML config (see configs/); omitted: the built-in defaults")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue a run exactly: a run folder or checkpoint folder, or 'auto' (this config's newest run, "
        "or output.name's; none: start one). Without --config, the checkpoint's own config is used",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides such as train.epochs=3 output.tracker=none")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        base = None
        if args.resume and args.resume != "auto" and args.config is None:
            _, saved = checkpoint.load(args.resume)  # the checkpoint's own config, under any overrides
            base = saved["config"]
        cfg = config.load(args.config, args.overrides, base=base)
    except config.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except checkpoint.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(config.dump_yaml(cfg), end="")
        return 0
    try:
        train(cfg, args.resume)
    except Stopped as e:
        print(str(e), file=sys.stderr)
        return 128 + e.signum
    except (
        config.ConfigError,
        data.DataError,
        evaluate.EvaluatorError,
        checkpoint.CheckpointError,
        NonFiniteError,
        LaunchError,
        RankMismatch,
        MainProcessFailed,
        OSError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
