"""Image utilities: float [0, 1] -> uint8, grids, PNG files. One quantisation rule for everything."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torch import Tensor


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats -> uint8 (round half up, clamped): (N, 1, H, W) -> (N, H, W)."""
    x = images.detach().float().mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu()
    return rearrange(x, "n 1 h w -> n h w") if x.ndim == 4 else x


def grid(images: Tensor, rows: int = 8, pad: int = 2) -> Tensor:
    """uint8 (rows*cols, H, W) -> one uint8 (rows*(H+pad)+pad, cols*(W+pad)+pad) picture on black."""
    n = images.shape[0]
    if n % rows:
        raise ValueError(f"{n} images do not fill {rows} rows")
    padded = F.pad(images, (pad, 0, pad, 0))  # left/top padding per tile
    tiled = rearrange(padded, "(r c) h w -> (r h) (c w)", r=rows)
    return F.pad(tiled, (0, pad, 0, pad))


def save_png(picture: Tensor, path: str | Path) -> Path:
    """Write a uint8 (H, W) picture as a grayscale PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        Image.fromarray(picture.numpy(), mode="L").save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
