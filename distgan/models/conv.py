"""Convolutional generators and discriminators. Pure nn.Modules, no distributed code.

Images are (B, 1, 28, 28) in [0, 1]; G ends in a sigmoid, D returns one logit per image, shape (B,).
"""

from __future__ import annotations

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
            layers.append(nn.Conv2d(c_in, c, kernel, stride, padding))
            if conv_batchnorm and i > 0:
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

        self.project = nn.Sequential(*pre, nn.Linear(widths[-1], width * 49), *norm_act(width * 49, 1))
        self.width = width
        self.up = nn.Sequential(
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1),
            *norm_act(width // 2, 2),
            nn.ConvTranspose2d(width // 2, 1, 4, 2, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        x = rearrange(self.project(z), "b (c h w) -> b c h w", h=7, w=7)
        return self.up(x).sigmoid()
