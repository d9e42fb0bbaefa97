"""Images of G: generated in eval mode and float32, quantised to uint8 by one rule, tiled into grids,
saved as PNG. Grids, evaluations and the sample CLI all go through :func:`generate`, so they compute
the same pixels."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from einops import rearrange
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from distgan.files import write_atomic


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats -> uint8 (round half up, clamped): (N, 1, H, W) -> (N, H, W)."""
    x = images.detach().float().mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu()
    return rearrange(x, "n 1 h w -> n h w") if x.ndim == 4 else x


def grid(images: Tensor, per_row: int = 8, scale: int = 1) -> Tensor:
    """uint8 (N, H, W) -> one uint8 picture: torchvision's make_grid (rows of ``per_row`` tiles, 2 black pixels
    around each), each pixel then drawn as a ``scale`` x ``scale`` square (output.grid_scale)."""
    if images.shape[0] % per_row:
        raise ValueError(f"{images.shape[0]} images do not fill rows of {per_row}")
    picture = make_grid(rearrange(images, "n h w -> n 1 h w"), nrow=per_row, padding=2, pad_value=0)[0]
    return picture.repeat_interleave(scale, 0).repeat_interleave(scale, 1) if scale > 1 else picture


@torch.no_grad()
def generate(G: torch.nn.Module, z: Tensor, batch: int = 1000) -> Tensor:
    """uint8 (N, 28, 28) images of G for noise z, in batches, in eval mode and float32.

    ``type(G).forward`` calls the class's forward, bypassing the autocast wrapper accelerate installs on
    the instance under mixed precision: grids, evaluations and the sample CLI all compute the same images.
    """
    was = G.training
    G.eval()
    device = next(G.parameters()).device
    out = torch.cat([to_uint8(type(G).forward(G, chunk.to(device))) for chunk in z.split(batch)])
    G.train(was)
    return out


def save_png(picture: Tensor, path: str | Path) -> Path:
    """Write a uint8 (H, W) picture as a grayscale PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(picture.numpy(), mode="L").save(buffer, format="PNG")
    return write_atomic(path, buffer.getvalue())
