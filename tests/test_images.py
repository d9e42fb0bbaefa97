"""Grids: torchvision's make_grid gives the pixels distgan's own tiling gave (every saved grid stays
comparable with older ones), and a scale only enlarges them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from distgan import images


def hand_tiled(tiles: torch.Tensor, rows: int = 8, pad: int = 2) -> torch.Tensor:
    """The tiling distgan wrote before it used make_grid: 2 black pixels left of and above each tile, plus
    one strip right and below."""
    tiled = rearrange(F.pad(tiles, (pad, 0, pad, 0)), "(r c) h w -> (r h) (c w)", r=rows)
    return F.pad(tiled, (0, pad, 0, pad))


def test_make_grid_draws_the_pixels_of_the_hand_tiled_grid():
    tiles = torch.randint(1, 256, (64, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    picture = images.grid(tiles)
    assert picture.shape == (242, 242) and picture.dtype == torch.uint8
    assert torch.equal(picture, hand_tiled(tiles))
    assert (picture[:2] == 0).all() and (picture[:, -2:] == 0).all()  # the black frame


def test_a_scale_draws_each_pixel_as_a_square_and_rows_hold_eight():
    tiles = torch.randint(0, 256, (16, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    one, three = images.grid(tiles), images.grid(tiles, scale=3)
    assert one.shape == (2 * 30 + 2, 8 * 30 + 2)  # 16 images: 2 rows of 8
    assert torch.equal(three, F.interpolate(one[None, None].float(), scale_factor=3, mode="nearest")[0, 0].byte())
    with pytest.raises(ValueError, match="do not fill rows of 8"):
        images.grid(tiles[:10])
