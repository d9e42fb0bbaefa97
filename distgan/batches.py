"""Training batches straight from device memory, sharded across ranks.

The whole training set lives on the training device as one uint8 tensor (MNIST: 47 MB). Each epoch a
permutation drawn from (seed, epoch), identical on every rank, is cut into ``steps`` global batches;
rank r takes rows [r*B, (r+1)*B) of every global batch. So shards are disjoint, together cover the
epoch but for a remainder smaller than one global batch (dropped, a different one each epoch), and
every rank runs the same number of steps. Step t's global batch is the same set of images whatever
the world size: the basis of the world-size invariance promise. No DataLoader, no per-sample Python.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from distgan.rng import stream_seed


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The epoch's order of the n training images, drawn on the CPU (same on every device and rank)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed("epoch", seed, epoch)))


def shard(perm: Tensor, global_batch: int, world: int, rank: int) -> Tensor:
    """Rank ``rank``'s indices, shape (steps, global_batch // world); the remainder is dropped."""
    if global_batch % world:
        raise ValueError(f"global batch {global_batch} is not divisible by {world} processes")
    steps = len(perm) // global_batch
    if steps == 0:
        raise ValueError(f"global batch {global_batch} is larger than the dataset ({len(perm)} images)")
    return rearrange(perm[: steps * global_batch], "(s w b) -> w s b", w=world, b=global_batch // world)[rank]


class DeviceImages:
    """uint8 images (N, 28, 28) held on ``device``; ``batch(idx)`` gives (B, 1, 28, 28) in [0, 1], in
    torch's default float dtype (float32 unless a caller changed it: the float64 invariance tests do)."""

    def __init__(self, images: Tensor, device: torch.device):
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise ValueError(f"expected uint8 images (N, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images.to(device)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: Tensor) -> Tensor:
        return rearrange(self.images[idx], "b h w -> b 1 h w").to(torch.get_default_dtype()).div_(255.0)
