"""Generate images from a checkpoint, without running anything but distgan's own model code.

    python -m distgan.sample --checkpoint runs/NAME --num 10000 --seed 0 --out samples.npz
    python -m distgan.sample --checkpoint runs/NAME --out grid.png            # 64 samples as an 8x8 grid
    python -m distgan.sample --checkpoint runs/NAME --fixed-z --out grid.png  # the training grid, bit-exact

``.npz`` output holds key ``images``: uint8, shape (N, 28, 28). The checkpoint is read with
safetensors (never unpickled); its own metadata says which G to build.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch

from distgan import checkpoint, cli, config, images, models
from distgan.errors import DistganError
from distgan.files import write_atomic
from distgan.rng import fixed_z, stream_seed


def load_generator(
    path: str | Path, device: str = "cpu", use_ema: bool = True
) -> tuple[torch.nn.Module, config.Config]:
    """G in eval mode (its EMA where the run kept one), and the run's config, from a run folder,
    checkpoint folder or model file."""
    tensors, info = checkpoint.load(path)
    cfg = config.from_dict(info["config"])
    G = models.build_generator(cfg.model.g, cfg.model.z_dim, cfg.model.g_args)
    prefix = "G_ema" if use_ema and any(k.startswith("G_ema.") for k in tensors) else "G"
    try:
        G.load_state_dict(checkpoint.module_state(tensors, prefix))
    except RuntimeError as e:  # missing or mis-shaped tensors: not the G its own config describes
        raise checkpoint.CheckpointError(f"{path}: the weights do not fit {cfg.model.g} ({e})") from None
    return G.to(device).eval(), cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m distgan.sample",
        description=__doc__.split("\n\n")[0]
        + " Writes --out: a PNG grid (8 images per row) or an .npz of uint8 images (key 'images'). Takes seconds.",
    )
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or model.safetensors")
    p.add_argument("--num", type=int, default=64, help="number of images (a .png needs a multiple of 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fixed-z", action="store_true", help="use the training grid's fixed z (64 images)")
    p.add_argument("--out", required=True, help="samples.npz or grid.png")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-ema", action="store_true", help="use the raw G even where the run kept an EMA of it")
    p.add_argument(
        "--scale", type=int, help="a .png's pixels per image pixel, 1-16 (default: the run's output.grid_scale)"
    )
    args = p.parse_args(argv)
    try:
        out = cli.output(args.out, (".npz", ".png"))
        cli.count(args.num)
        if args.fixed_z and args.num != 64:
            p.error("--fixed-z draws the training grid's 64 images; leave --num out")
        if out.suffix == ".png" and args.num % 8:
            p.error(f"a grid needs a multiple of 8 images, got --num {args.num}")
        if args.scale is not None and not 1 <= args.scale <= config.MAX_GRID_SCALE:
            p.error(f"--scale must lie in 1..{config.MAX_GRID_SCALE}, got {args.scale}")
        G, cfg = load_generator(args.checkpoint, cli.device(args.device), use_ema=not args.no_ema)
    except DistganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)  # the run's thread count, for bit-exact CPU results
    torch.set_flush_denormal(cfg.train.flush_denormal)
    if args.fixed_z:
        z = fixed_z(cfg.model.z_dim, cfg.output.grid_seed)
    else:
        gen = torch.Generator().manual_seed(stream_seed("sample", args.seed))
        z = torch.randn(args.num, cfg.model.z_dim, generator=gen)
    imgs = images.generate(G, z)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".npz":
            buffer = io.BytesIO()
            np.savez_compressed(buffer, images=imgs.numpy())
            write_atomic(out, buffer.getvalue())
        else:
            images.save_png(images.grid(imgs, scale=args.scale or cfg.output.grid_scale), out)
    except OSError as e:
        print(f"error: cannot write {out} ({e.strerror or e}); choose another --out", file=sys.stderr)
        return 1
    print(f"wrote {len(imgs)} images to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
