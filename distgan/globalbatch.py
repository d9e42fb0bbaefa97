"""Layers that see the global batch, so a run trains the same on 1 process or N.

Two kinds of layer make a sample's output depend on more than the sample: BatchNorm (its statistics are
taken over the batch) and Dropout (its mask is drawn for the batch, from the RNG). Under data parallelism
each process holds ``batch / world`` images of the global batch; left alone, BatchNorm normalises each
share by its own statistics and each process draws its own masks, so the trajectory depends on the world
size. Here:

- :class:`GlobalBatchNorm` takes its statistics over all processes: per-channel sums are all-reduced
  through an autograd-aware collective, whose backward all-reduces the gradients (and is itself
  differentiable, so the R1 penalty's double backward works, which ``nn.SyncBatchNorm`` does not
  support). It runs on gloo (CPU) and NCCL alike. Running statistics are updated from the global
  statistics, so they are identical on every rank and equal those of one process. Evaluation mode and
  one process use ``nn.BatchNorm``'s own kernel.
- :class:`GlobalDropout` draws the mask for the whole global batch (every rank holds the same RNG state
  and draws the same tensor, the draw one process makes) and keeps its own rows. In one process on a
  CPU this is ``nn.Dropout``'s computation exactly (same draw, same arithmetic).

A forward on a concatenation (``D(cat(real, fake))``) says so through :func:`segments`, so a rank's rows
map to their places in the global ``cat(all real, all fake)``.

The models themselves stay free of distributed code: :func:`globalize` swaps these layers in, keeping
parameter and buffer names, so checkpoints load into the plain models.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd import Function

_SEGMENTS: contextvars.ContextVar[tuple[int, ...] | None] = contextvars.ContextVar("segments", default=None)
_LOCAL: contextvars.ContextVar[bool] = contextvars.ContextVar("local", default=False)


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Forwards inside this block act as in one process: batch statistics over this process's batch alone,
    dropout masks drawn for it alone. For work every rank repeats on the same inputs (the EMA's BatchNorm
    recalibration), where all-reducing would count each input once per rank."""
    token = _LOCAL.set(True)
    try:
        yield
    finally:
        _LOCAL.reset(token)


@contextlib.contextmanager
def segments(*sizes: int) -> Iterator[None]:
    """Forwards inside this block run on the concatenation of per-rank parts of these sizes (each part
    this rank's share of a global part of ``size * world`` rows)."""
    token = _SEGMENTS.set(tuple(sizes))
    try:
        yield
    finally:
        _SEGMENTS.reset(token)


def world() -> tuple[int, int]:
    """(world size, rank) of the default process group; (1, 0) without one or inside :func:`local`."""
    if not _LOCAL.get() and dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def global_rows(n_local: int, world_size: int, rank: int) -> Tensor:
    """Indices, in the global batch, of this rank's ``n_local`` rows."""
    parts = _SEGMENTS.get() or (n_local,)
    if sum(parts) != n_local:
        raise ValueError(f"segments {parts} do not add up to the batch of {n_local} rows")
    rows, start = [], 0
    for size in parts:
        rows.append(torch.arange(start + rank * size, start + (rank + 1) * size))
        start += size * world_size
    return torch.cat(rows)


class _AllReduceSum(Function):
    """Sum over processes; the backward sums the gradients the same way (and is differentiable again)."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # noqa: ARG004
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ARG004
        return _AllReduceSum.apply(grad)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any of 1d/2d/3d) whose batch statistics are those of the global batch."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        n_proc, _ = world()
        if n_proc == 1 or not (self.training or not self.track_running_stats):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in float32 at least
        per_channel = x.numel() // x.shape[1]
        if per_channel * n_proc <= 1:  # every rank holds an equal share of the global batch
            raise ValueError(
                f"BatchNorm needs more than 1 value per channel over all processes, got {n_proc * per_channel}"
            )
        count = float(per_channel * n_proc)
        mean = _AllReduceSum.apply(xf.sum(dims)) / count
        centred = xf - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * (count / (count - 1.0))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return y.to(x.dtype)


class GlobalDropout(nn.Dropout):
    """Dropout whose mask is this rank's rows of the mask one process would draw for the global batch."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        n_proc, rank = world()
        shape = (len(x) * n_proc, *x.shape[1:])
        noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        if n_proc > 1:
            noise = noise[global_rows(len(x), n_proc, rank).to(x.device)]
        noise.div_(1 - self.p)
        return x * noise


def globalize(module: nn.Module, batchnorm: bool = True) -> nn.Module:
    """Swap every BatchNorm (when ``batchnorm``) and Dropout in ``module`` for its global-batch version, in
    place; parameters and buffers are kept (the same tensors, under the same names). Returns ``module``."""
    for name, child in module.named_children():
        swapped = _swap(child, batchnorm)
        if swapped is not child:
            setattr(module, name, swapped)
        else:
            globalize(child, batchnorm)
    return module


def _swap(m: nn.Module, batchnorm: bool) -> nn.Module:
    if type(m) in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d) and type(m) is not nn.Dropout:
        raise ValueError(f"{type(m).__name__} (channel dropout) has no global-batch version in distgan")
    if type(m) is nn.Dropout:
        return GlobalDropout(m.p)
    if batchnorm and type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        out = GlobalBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        if m.affine:
            out.weight, out.bias = m.weight, m.bias
        if m.track_running_stats:
            out.running_mean, out.running_var = m.running_mean, m.running_var
            out.num_batches_tracked = m.num_batches_tracked
        out.train(m.training)
        return out
    return m
