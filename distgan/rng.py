"""Seeded randomness: every random draw of a run is a pure function of (seed, purpose, counter).

Nothing depends on how many draws happened before, so a step's noise is the same whether the run
started at step 0 or resumed at that step, and independent of the world size: each step's noise and
label draws are made for the *global* batch and every rank takes its own slice. Ranks therefore get
different samples (never N copies of one rank's work), fixed by (seed, step, rank).
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def stream_seed(*keys: object) -> int:
    """A 63-bit seed from any tuple of keys (stable across processes, machines and Python versions)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def fixed_z(z_dim: int, seed: int = 0, n: int = 64, stream: str = "fixed_z") -> Tensor:
    """Fixed noise drawn on the CPU, so every device and config with this z_dim shares it: the grid's by
    default; ``stream="ema_bn"``: what recomputes the EMA model's BatchNorm statistics."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(stream_seed(stream, seed)))


class StepNoise:
    """Per-step draws for one rank: noise z and label targets, sliced from the global batch."""

    def __init__(self, seed: int, z_dim: int, global_batch: int, world: int, rank: int, device: torch.device):
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by {world} processes")
        self.seed, self.z_dim, self.global_batch, self.device = seed, z_dim, global_batch, device
        per_rank = global_batch // world
        self.rows = slice(rank * per_rank, (rank + 1) * per_rank)
        self.gen = torch.Generator(device=device)

    def _reseed(self, *keys: object) -> torch.Generator:
        return self.gen.manual_seed(stream_seed(self.seed, *keys))

    def _uniform(self, low: float, high: float) -> Tensor:
        n = self.global_batch
        if low == high:  # no draw needed; keeps the stream identical whether smoothing is on or off elsewhere
            return torch.full((n,), low, device=self.device)
        return torch.empty(n, device=self.device).uniform_(low, high, generator=self.gen)

    def d_step(
        self,
        index: int,
        real_label: tuple[float, float],
        fake_label: tuple[float, float],
        swap_prob: float = 0.0,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(z, real_targets, fake_targets) for D update number ``index``.

        Targets are drawn uniformly in their ranges (smoothing); with probability ``swap_prob`` a sample's
        real and fake targets trade places (label swapping), independently per sample and side.
        """
        self._reseed("d", index)
        z = torch.randn(self.global_batch, self.z_dim, device=self.device, generator=self.gen)
        real_t = self._uniform(*real_label)
        fake_t = self._uniform(*fake_label)
        if swap_prob > 0:
            swap = torch.rand(2, self.global_batch, device=self.device, generator=self.gen) < swap_prob
            real_t, fake_t = torch.where(swap[0], fake_t, real_t), torch.where(swap[1], real_t, fake_t)
        return z[self.rows], real_t[self.rows], fake_t[self.rows]

    def g_step(self, index: int) -> Tensor:
        """z for G update number ``index``."""
        self._reseed("g", index)
        return torch.randn(self.global_batch, self.z_dim, device=self.device, generator=self.gen)[self.rows]


def swap_rate(prob: float, schedule: str, until: float, progress: float) -> float:
    """The label-swap probability at ``progress`` (fraction of training done, 0..1)."""
    if progress >= until:
        return 0.0
    if schedule == "linear":
        return prob * (1.0 - progress / until)
    return prob
