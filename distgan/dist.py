"""Distributed self-checks: the launch formed one group, the ranks read disjoint data, the ranks agree.

Each check is collective (call it on every rank) and fails loudly rather than letting N processes train
N silent copies, or save weights that differ between ranks.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import Tensor, nn

from distgan.errors import LaunchError, MainProcessFailed, RankMismatch

T = TypeVar("T")


def on_main(accelerator: Accelerator, fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on the main process only, then tell every rank whether it failed.

    Collective. Without this, a main process that raises (an unwritable folder, a full disk) leaves
    the other ranks waiting forever in their next collective; here every rank raises.
    """
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 (re-raised below, on this rank and on every other)
            error = e
    if accelerator.num_processes > 1:
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        broadcast_object_list(box)
        if error is None and box[0] is not None:
            raise MainProcessFailed(f"the main process failed: {box[0]}")
    if error is not None:
        raise error
    return result


MULTI_CPU_HINT = (
    "On a machine without GPUs, start N cooperating CPU processes with\n"
    "  launch/cpu_multi.sh --config configs/default.yaml        (NPROC=2 by default)\n"
    "or prefix torchrun with ACCELERATE_USE_CPU=1. Plain `accelerate launch --cpu --num_processes N` starts one.\n"
    "On GPUs: accelerate launch --config_file launch/gpu_multi.yaml --num_processes N -m distgan.train ..."
)


def check_world(accelerator: Accelerator) -> None:
    """Refuse a launch whose processes would not train together: the launcher's WORLD_SIZE must be the
    accelerator's process count, and accelerate's simple launcher must not have been asked for several.

    ``accelerate launch --num_processes N`` (N > 1) without a multi-process mode (``--cpu``, or no GPUs)
    runs ONE process; the only trace is its rendezvous address: it exports MASTER_ADDR / MASTER_PORT when
    more than one process or machine was asked for, and never WORLD_SIZE, which every multi-process
    launcher (torchrun, accelerate's multi-GPU / multi-CPU launchers, SLURM's srun through them) sets.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise LaunchError(
            f"the launcher started {launched} processes but each one sees a world of {accelerator.num_processes} "
            f"({accelerator.distributed_type.value}): they would train {launched} separate copies. {MULTI_CPU_HINT}"
        )
    if _simple_launcher_asked_for_several():
        raise LaunchError(
            "accelerate launch was asked for several processes (--num_processes or --num_machines > 1) but "
            "started ONE: without --multi_gpu (or GPUs) its simple launcher runs a single process. (Meant one "
            "process? Unset MASTER_PORT before accelerate launch.) " + MULTI_CPU_HINT
        )


def _simple_launcher_asked_for_several() -> bool:
    """accelerate's simple launcher exports MASTER_PORT only when asked for several processes or machines,
    and never WORLD_SIZE; our parent is that launcher when its command line says ``accelerate launch``
    (checked where /proc shows it, so a plain ``python`` under an exported MASTER_PORT is never refused)."""
    env = os.environ
    if "MASTER_PORT" not in env or "WORLD_SIZE" in env or "ACCELERATE_MIXED_PRECISION" not in env:
        return False
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: the environment alone decides
    return b"launch" in parent and any(part.endswith(b"accelerate") for part in parent)


def free_port() -> int:
    """A free TCP port on this machine, for a launcher's rendezvous (``--main_process_port``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_shards(accelerator: Accelerator, idx: Tensor, n_images: int, step_images: int) -> dict:
    """Gather every rank's indices for the epoch and check they are disjoint, equal in length, and cover
    the epoch but for less than one step's images (``step_images``, over all ranks). Returns a summary."""
    everything = accelerator.gather(idx.reshape(1, -1))  # (world, per_rank_images)
    world, per_rank = everything.shape
    distinct = int(torch.unique(everything).numel())
    summary = {"ranks": world, "per_rank": per_rank, "distinct": distinct, "dropped": n_images - distinct}
    if distinct != world * per_rank or n_images - distinct >= step_images:
        raise RankMismatch(f"data shards overlap or miss images: {summary}")
    return summary


def checksums(*modules: nn.Module) -> Tensor:
    """Per tensor, sum and sum of squares in float64: equal weights give equal numbers on every rank."""
    values = [
        stat
        for module in modules
        for t in list(module.parameters()) + list(module.buffers())
        for stat in (t.detach().double().sum(), t.detach().double().square().sum())
    ]
    return torch.stack(values)


def sync_buffers(accelerator: Accelerator, *modules: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each forward, but the forward then updates them with the
    rank's own batch, so between steps they differ; before saving or comparing we do what the next
    forward would have done.
    """
    if accelerator.num_processes == 1:
        return
    for module in modules:
        for buf in module.buffers():
            torch.distributed.broadcast(buf.data, src=0)


def match_grad_layout(*modules: nn.Module) -> None:
    """Give each gradient its parameter's strides before DDP's reducer sees it.

    A Linear with one output (every D's last layer) gets its (1, n) weight gradient from a matrix product
    laid out with strides (1, 1): autograd's layout contract ignores strides of size-1 dimensions and keeps
    it, but the reducer compares them too and warns "Grad strides do not match bucket view strides" on
    every rank. The hook copies such a gradient (n numbers) into its parameter's layout; values unchanged.
    """
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and p.is_contiguous():
                p.register_hook(_relayout(p.stride()))


def _relayout(strides: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    def hook(grad: Tensor) -> Tensor:
        return grad if grad.stride() == strides else grad.clone(memory_format=torch.contiguous_format)

    return hook


def check_ranks_agree(accelerator: Accelerator, **modules: nn.Module) -> list[float]:
    """Fail unless every rank holds identical weights and buffers; returns each rank's total checksum."""
    parts = {name: checksums(m) for name, m in modules.items()}
    local = torch.cat(list(parts.values())).to(accelerator.device)
    everyone = accelerator.gather(local.reshape(1, -1)).cpu()  # (world, n)
    # NaN on every rank is agreement: the caller then stops on non-finite weights, not on a distributed bug
    differs = ((everyone != everyone[0]) & ~(everyone.isnan() & everyone[0].isnan())).any(0)
    bad, start = [], 0
    for name, part in parts.items():
        if differs[start : start + len(part)].any():
            bad.append(name)
        start += len(part)
    if bad:
        raise RankMismatch(
            f"ranks hold different {' and '.join(bad)} weights before saving: a bug in the distributed "
            "update. Please report it with the run's config.yaml; no checkpoint was written."
        )
    return everyone.sum(1).tolist()


def rng_states(accelerator: Accelerator) -> dict[str, Tensor]:
    """Every rank's torch RNG states, gathered: {'rng.cpu': (world, n) uint8, 'rng.cuda': ...}. Collective."""
    states = {"cpu": torch.get_rng_state()}
    if accelerator.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(accelerator.device)
    return {f"rng.{k}": accelerator.gather(v.to(accelerator.device)[None]).cpu() for k, v in states.items()}


def set_rng_states(accelerator: Accelerator, tensors: dict[str, Tensor]) -> None:
    """Restore the RNG states from :func:`rng_states`' output: rank 0's on every rank, which all ranks hold
    (dropout masks are drawn for the global batch in lockstep), whatever the world size that saved them."""
    rank = 0
    torch.set_rng_state(tensors["rng.cpu"][rank].clone())  # a fresh tensor: set_rng_state misreads a row view
    if "rng.cuda" in tensors and accelerator.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"][rank].clone(), accelerator.device)


def main() -> None:
    """``LAUNCHER -m distgan.dist``: print the world the launcher's processes form (``distgan.compare`` asks
    it of a --launcher), after the same launch checks as a training run."""
    accelerator = Accelerator()
    check_world(accelerator)
    if accelerator.is_main_process:
        print(f"distgan world {accelerator.num_processes}", flush=True)
    accelerator.end_training()


if __name__ == "__main__":
    try:
        main()
    except LaunchError as err:
        raise SystemExit(f"error: {err}") from None
