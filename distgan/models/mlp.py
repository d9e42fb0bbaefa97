"""Fully-connected generators and discriminators (the blog's MLP models). Pure nn.Modules.

Images are (B, 1, 28, 28) in [0, 1]; G ends in a sigmoid, D returns one logit per image, shape (B,).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn


def mlp_block(
    n_in: int,
    n_out: int,
    batchnorm: bool,
    dropout: float,
    leak: float,
    bn_eps: float = 1e-5,
) -> list[nn.Module]:
    """Linear -> [BatchNorm1d] -> LeakyReLU -> [Dropout]. Before BatchNorm the Linear has no bias (see
    :data:`distgan.models.NO_BIAS_BEFORE_NORM`)."""
    layers: list[nn.Module] = [nn.Linear(n_in, n_out, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(n_out, eps=bn_eps))
    layers.append(nn.LeakyReLU(leak))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


def mlp_stack(widths: Sequence[int], batchnorm: bool, dropout: float, leak: float) -> list[nn.Module]:
    """mlp_block for each consecutive pair of widths."""
    return [m for a, b in itertools.pairwise(widths) for m in mlp_block(a, b, batchnorm, dropout, leak)]


class MLPGenerator(nn.Module):
    """z -> hidden Linear blocks -> Linear(784) -> sigmoid -> (1, 28, 28)."""

    def __init__(
        self,
        z_dim: int,
        hidden: Sequence[int] = (256, 512, 1024),
        batchnorm: bool = True,
        dropout: float = 0.0,
        leak: float = 0.2,
    ):
        super().__init__()
        widths = [z_dim, *hidden]
        layers = mlp_stack(widths, batchnorm, dropout, leak)
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], 28 * 28))

    def forward(self, z: Tensor) -> Tensor:
        return rearrange(self.net(z).sigmoid(), "b (c h w) -> b c h w", c=1, h=28)


class MinibatchStd(nn.Module):
    """Appends one feature: the mean over features of their standard deviation across the batch
    (Karras et al., 2018). A generator that collapses to few modes makes that number small, so D can
    tell its batches from real ones. It couples the samples of a batch, as BatchNorm does: D must see
    real and fake batches apart (``train.d_forward`` auto does so)."""

    couples_batch = True

    def forward(self, h: Tensor) -> Tensor:
        std = h.float().std(0, unbiased=False).mean().to(h.dtype)
        return torch.cat([h, std.expand(len(h), 1)], dim=1)


class MLPDiscriminator(nn.Module):
    """(1, 28, 28) -> flattened -> hidden Linear blocks -> [minibatch std] -> one logit."""

    def __init__(
        self,
        hidden: Sequence[int] = (512, 256),
        batchnorm: bool = False,
        dropout: float = 0.0,
        leak: float = 0.2,
        minibatch_std: bool = False,
        spectral_norm: bool = False,
    ):
        """``spectral_norm``: every Linear layer's weight divided by its largest singular value (one power
        iteration per forward; Miyato et al., 2018), which keeps D 1-Lipschitz per layer."""
        super().__init__()
        widths = [28 * 28, *hidden]
        layers = mlp_stack(widths, batchnorm, dropout, leak)
        if minibatch_std:
            layers.append(MinibatchStd())
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1] + int(minibatch_std), 1))
        if spectral_norm:
            for i, m in enumerate(self.net):
                if isinstance(m, nn.Linear):
                    self.net[i] = nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(rearrange(x, "b c h w -> b (c h w)")).squeeze(1)
