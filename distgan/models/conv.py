"""Convolutional generators and discriminators. Pure nn.Modules, no distributed code.

Images are (B, 1, 28, 28) in [0, 1]; G ends in a sigmoid, D returns one logit per image, shape (B,).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from einops import rearrange
from torch import Tensor, nn

from distgan.models.mlp import mlp_stack


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvDiscriminator(nn.Module):
    """Conv2d blocks (stride ``stride``) -> flatten -> Linear blocks -> one logit.

    ``conv_batchnorm`` adds BatchNorm2d after each conv but the first; ``batchnorm`` adds BatchNorm1d in
    the fully-connected blocks; ``dropout`` follows every activation.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128),
        kernel: int = 4,
        stride: int = 2,
        padding: int = 1,
        fc: Sequence[int] = (),
        conv_batchnorm: bool = False,
        batchnorm: bool = False,
        dropout: float = 0.0,
        leak: float = 0.2,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = 1, 28
        for i, c in enumerate(channels):
            norm = conv_batchnorm and i > 0
            layers.append(nn.Conv2d(c_in, c, kernel, stride, padding, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(leak))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            c_in, size = c, _conv_out(size, kernel, stride, padding)
        if size < 1:
            raise ValueError(f"{len(channels)} conv layers of kernel {kernel}, stride {stride} shrink 28x28 to nothing")
        widths = [c_in * size * size, *fc]
        fcs = mlp_stack(widths, batchnorm, dropout, leak)
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(*fcs, nn.Linear(widths[-1], 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(rearrange(self.features(x), "b c h w -> b (c h w)")).squeeze(1)


class ConvGenerator(nn.Module):
    """DCGAN-style: z -> Linear to (width, 7, 7) -> ConvTranspose x2 (7 -> 14 -> 28) -> sigmoid.

    With ``fc`` hidden widths, Linear blocks come before the projection (v2's "FC layers, then a conv").
    """

    def __init__(
        self,
        z_dim: int,
        width: int = 128,
        fc: Sequence[int] = (),
        batchnorm: bool = True,
        dropout: float = 0.0,
        leak: float = 0.0,
    ):
        super().__init__()
        widths = [z_dim, *fc]
        pre = mlp_stack(widths, batchnorm, dropout, leak)

        def norm_act(c: int, dims: int) -> list[nn.Module]:
            bn = [(nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(c)] if batchnorm else []
            drop = [nn.Dropout(dropout)] if dropout > 0 else []
            return [*bn, nn.LeakyReLU(leak) if leak > 0 else nn.ReLU(), *drop]

        self.project = nn.Sequential(
            *pre, nn.Linear(widths[-1], width * 49, bias=not batchnorm), *norm_act(width * 49, 1)
        )
        self.width = width
        self.up = nn.Sequential(
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=not batchnorm),
            *norm_act(width // 2, 2),
            nn.ConvTranspose2d(width // 2, 1, 4, 2, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        x = rearrange(self.project(z), "b (c h w) -> b c h w", h=7, w=7)
        return self.up(x).sigmoid()


def conv_stack(channels: Sequence[int], batchnorm: bool, dropout: float, leak: float) -> list[nn.Module]:
    """Same-size 3x3 convs between consecutive channel counts, each with [BN] activation [Dropout]."""
    layers: list[nn.Module] = []
    for c_in, c_out in itertools.pairwise(channels):
        layers.append(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(leak) if leak > 0 else nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


class FullyConvGenerator(nn.Module):
    """The blog's v1 G: no Linear layer at all. z is a 28x28 noise image (z_dim = 784) refined by 3x3
    convolutions to one channel and a sigmoid ("a large random x array passed in")."""

    def __init__(self, z_dim: int, channels: Sequence[int] = (32, 64, 32), batchnorm: bool = True, leak: float = 0.0):
        super().__init__()
        if z_dim != 28 * 28:
            raise ValueError(
                f"a fully convolutional G takes z as a 28x28 noise image: set model.z_dim=784, not {z_dim}"
            )
        self.net = nn.Sequential(*conv_stack((1, *channels), batchnorm, 0.0, leak), nn.Conv2d(channels[-1], 1, 3, 1, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(rearrange(z, "b (c h w) -> b c h w", c=1, h=28)).sigmoid()


class FCConvGenerator(nn.Module):
    """The blog's v2/v3 G: fully-connected layers up to a (channels, 28, 28) map, then 3x3 convolutions
    down to one channel and a sigmoid (v2: two FC layers + one conv; v3: more layers)."""

    def __init__(
        self,
        z_dim: int,
        fc: Sequence[int] = (256,),
        channels: Sequence[int] = (8,),
        batchnorm: bool = True,
        dropout: float = 0.0,
        leak: float = 0.0,
    ):
        super().__init__()
        widths = [z_dim, *fc]
        self.fc = nn.Sequential(*mlp_stack(widths, batchnorm, dropout, leak), nn.Linear(widths[-1], channels[0] * 784))
        self.convs = nn.Sequential(
            *conv_stack(channels, batchnorm, dropout, leak),
            nn.LeakyReLU(leak) if leak > 0 else nn.ReLU(),
            nn.Conv2d(channels[-1], 1, 3, 1, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        x = rearrange(self.fc(z), "b (c h w) -> b c h w", h=28, w=28)
        return self.convs(x).sigmoid()
