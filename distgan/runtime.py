"""The process a run trains in: accelerate, precision, compilation, threads, denormals, and the run folder.

:class:`Runtime` starts accelerate for a config and puts the process back as it was on :meth:`close`
(threads, denormals, TF32; the process group is destroyed, so gloo never aborts at exit). :meth:`resolve`
checks what needs the accelerator to be known (launch, device, precision, compile) and returns the config
as the run will record it: ``None`` settings resolved (threads, precision, compile), the caller's config
untouched. :func:`make_run_dir` names and creates the run folder once every check has passed.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import importlib.util
import os
import typing
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DynamoBackend, TorchDynamoPlugin, broadcast_object_list

from distgan import checkpoint, config
from distgan.dist import check_world, on_main
from distgan.errors import ConfigError
from distgan.files import write_atomic
from distgan.runlock import LOCK_FILE, RunLock


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


def check_tracker_packages(cfg: config.Config) -> None:
    """accelerate drops a tracker whose package is missing without a word; distgan says so."""
    if "tensorboard" in config.trackers(cfg) and not (
        importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    ):
        raise ConfigError(
            "output.tracker=tensorboard needs the tensorboard package: pip install tensorboard "
            "(or pip install -e '.[tensorboard]')"
        )


class Runtime:
    """accelerate for one run, plus the process-wide settings the run changes (undone by close())."""

    def __init__(self, cfg: config.Config):
        tf32 = torch.backends.cuda.matmul.allow_tf32
        check_tracker_packages(cfg)
        self.accelerator = Accelerator(
            mixed_precision=cfg.train.mixed_precision,
            log_with=config.trackers(cfg) or None,
            project_dir=cfg.output.dir,  # TensorBoard's folder, set to the run's own by tracking.RunLog
            dynamo_plugin=dynamo_plugin(cfg.train.compile),
        )
        # accelerate turns TF32 on for compiled float32 runs on CUDA; a compiled run must compute what an eager one does
        torch.backends.cuda.matmul.allow_tf32 = tf32
        self._threads = torch.get_num_threads()
        self.lock: RunLock | None = None  # the run folder's, taken by make_run_dir on the main process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        torch.set_num_threads(self._threads)  # process-wide settings go back as they were (in-process callers)
        torch.set_flush_denormal(False)
        self.accelerator.end_training()  # also destroys the process group: no SIGABRT at exit under gloo

    def resolve(self, cfg: config.Config) -> config.Config:
        """Check the launch and the settings that depend on the device; fix this process's threads and
        denormal mode; return a copy of ``cfg`` with threads, precision and compile mode as resolved."""
        check_world(self.accelerator)
        threads = resolve_threads(cfg)
        torch.set_num_threads(threads)  # 1 vs 2 threads give different results on CPU: fix and record
        torch.set_flush_denormal(cfg.train.flush_denormal)  # no effect on GPUs; a no-op where unsupported
        train = dataclasses.replace(
            cfg.train, threads=threads, mixed_precision=self.accelerator.mixed_precision, compile=self._compile_mode()
        )
        resolved = dataclasses.replace(copy.deepcopy(cfg), train=train)
        self._check(resolved)
        return resolved

    def _compile_mode(self) -> str:
        plugin = self.accelerator.state.dynamo_plugin
        modes = typing.get_args(typing.get_args(typing.get_type_hints(config.TrainConfig)["compile"])[0])
        if plugin.backend not in (DynamoBackend.NO, DynamoBackend.INDUCTOR) or (plugin.mode or "default") not in modes:
            raise ConfigError(
                f"accelerate asks for torch.compile backend {plugin.backend.value.lower()} with mode {plugin.mode!r}; "
                f"distgan compiles with inductor in one of the modes {', '.join(modes)}: set train.compile instead"
            )
        return "no" if plugin.backend == DynamoBackend.NO else (plugin.mode or "default")

    def _check(self, cfg: config.Config) -> None:
        device = self.device.type
        if cfg.train.compile == "reduce-overhead" and device != "cuda":
            raise ConfigError(
                "train.compile=reduce-overhead means CUDA graphs, which need a CUDA GPU; use train.compile=default "
                "on a CPU"
            )
        if cfg.loss.r1_gamma and cfg.train.compile != "no":
            raise ConfigError(
                f"loss.r1_gamma={cfg.loss.r1_gamma} differentiates D's input gradient (a double backward), which "
                f"torch.compile does not support (train.compile={cfg.train.compile}): set train.compile=no, or "
                "loss.r1_gamma=0"
            )
        if cfg.train.mixed_precision == "fp16" and device == "cpu":
            # accelerate accepts it but has no CPU fp16 autocast and no scaler: the run would be float32 in disguise.
            raise ConfigError(
                "mixed_precision=fp16 is not available on the CPU (accelerate would silently train in float32); "
                "use train.mixed_precision=bf16 on a CPU, or fp16 on a GPU"
            )
        if cfg.train.batch_size % self.world:
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size} (global) is not divisible by {self.world} processes; "
                f"use a multiple of {self.world}"
            )


def _used(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything but its lock and an empty samples/."""
    if not run_dir.is_dir():
        return run_dir.exists()
    return any(
        p.name != LOCK_FILE and not (p.name == "samples" and p.is_dir() and not any(p.iterdir()))
        for p in run_dir.iterdir()
    )


def _crashed_start(run_dir: Path) -> bool:
    """Whether ``run_dir`` was made by a start that died before its first checkpoint: distgan's own files
    only (its config.yaml among them) and no checkpoint to resume."""
    if not run_dir.is_dir() or checkpoint.read_pointer(run_dir / "checkpoints", "latest") is not None:
        return False
    names = {p.name for p in run_dir.iterdir()}
    return "config.yaml" in names and names <= {
        "config.yaml",
        "metrics.jsonl",
        "samples",
        "wandb",
        "checkpoints",
        LOCK_FILE,
    }


def _refuse_used(run_dir: Path) -> None:
    """A new run needs a folder that holds no run."""
    if not run_dir.is_dir() and run_dir.exists():
        raise FileExistsError(f"{run_dir} is a file, not a run folder; choose another output.name")
    if _used(run_dir):
        raise FileExistsError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose another output.name"
        )


def run_name(cfg: config.Config) -> str:
    """output.name, or ``<config>-s<seed>-<start time>``."""
    return cfg.output.name or f"{cfg.name}-s{cfg.train.seed}-{dt.datetime.now():%Y%m%d-%H%M%S}"


def dry_run(cfg: config.Config, resume_from: str | None = None) -> str:
    """The config as this launch would resolve it (threads, precision, compile mode; refusals included), under
    a header naming the device, the world and the run folder. Nothing is written."""
    rt = Runtime(cfg)
    try:
        resolved = rt.resolve(cfg)
        acc = rt.accelerator
        if resume_from is None:
            folder = Path(cfg.output.dir) / run_name(cfg)
            folder = f"{folder}" + ("" if cfg.output.name else " (named when it starts)")
        elif resume_from == "auto":
            folder = f"the newest run of {cfg.output.name or cfg.name} under {cfg.output.dir}, or a new one"
        else:
            folder = f"continues {resume_from}"
        header = [
            f"# device: {rt.world} x {rt.device.type} ({'one process' if rt.world == 1 else acc.distributed_type.value.lower()}), "
            f"{resolved.train.threads} "
            f"thread(s) per process, mixed precision {resolved.train.mixed_precision}, compile {resolved.train.compile}",
            f"# world: {rt.world} process(es), {resolved.train.batch_size // rt.world} images per process per step",
            f"# run folder: {folder}",
        ]
        return "\n".join(header) + "\n" + config.dump_yaml(resolved)
    finally:
        rt.close()


def make_run_dir(cfg: config.Config, rt: Runtime, resumed: Path | None = None, auto: bool = False) -> Path:
    """The run folder, named on the main process and shared; created (never reused) by the main process,
    except the folder of the run being resumed, and locked for the run's life (:mod:`distgan.runlock`:
    one live trainer per folder) before anything in it changes. A named folder left by a start that died
    before its first checkpoint (nothing to resume) is renamed aside, kept and not reused, so it never
    blocks its name; with ``auto`` (``--resume auto`` found no checkpoint) so is any folder without one. ``cfg`` is written into it (atomically) as ``config.yaml``."""
    accelerator = rt.accelerator
    name = [run_name(cfg)]
    broadcast_object_list(name)
    run_dir = resumed if resumed is not None else Path(cfg.output.dir) / name[0]

    def create() -> None:
        if resumed is None:

            def dead_start() -> bool:
                if auto and run_dir.is_dir() and _used(run_dir):
                    return checkpoint.read_pointer(run_dir / "checkpoints", "latest") is None
                return _crashed_start(run_dir)

            if dead_start():
                held = RunLock.acquire(run_dir, log=accelerator.print)  # its trainer is gone, not just slow
                try:
                    if held.exclusive and dead_start():  # again under the lock: it may have saved since
                        aside = run_dir.with_name(f"{run_dir.name}.no-checkpoint-{dt.datetime.now():%Y%m%d-%H%M%S}")
                        run_dir.rename(aside)
                        held.run_dir = aside  # the lock file moved with its folder
                        accelerator.print(f"{run_dir} never saved a checkpoint; moved it to {aside}, starting anew")
                finally:
                    held.release()
            _refuse_used(run_dir)
            try:
                (run_dir / "samples").mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OSError(
                    f"cannot create the run folder {run_dir} ({e.strerror or e}); set output.dir to a writable "
                    "folder and a short output.name"
                ) from None
        if rt.lock is not None and rt.lock.run_dir != run_dir:
            rt.lock.release()
            rt.lock = None
        if rt.lock is None:  # a resumed run's folder was locked before its checkpoint was read
            rt.lock = RunLock.acquire(run_dir, log=accelerator.print)
        if resumed is None:
            try:
                _refuse_used(run_dir)  # again, now that it is ours: another start may have filled it meanwhile
            except FileExistsError:
                rt.lock.release()
                rt.lock = None
                raise
        write_atomic(run_dir / "config.yaml", config.dump_yaml(cfg))

    on_main(accelerator, create)
    return run_dir
