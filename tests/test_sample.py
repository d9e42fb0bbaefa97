"""distgan.sample from a checkpoint alone: random z to a PNG grid (64 samples, 8 per row) drawn from the EMA of
G, fixed by --seed, the same whichever form --checkpoint takes; and the EMA's BatchNorm statistics, recomputed
from model.ema_bn_samples fixed noise samples or, with 0, the live G's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from distgan import config, images, models, sample
from distgan import train as train_module
from distgan.rng import fixed_z, stream_seed
from distgan.steps import EMA
from tests.conftest import REPO, tiny_overrides

# The default config (an EMA of a G with BatchNorm) for 4 steps on the synthetic set
TINY = ("data.dataset=synthetic", "train.max_steps=4", "train.batch_size=64")
CALIBRATION = 512  # the calibrated run's model.ema_bn_samples (the default's 16,384 would only cost time)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """Two tiny runs, trained in this process, one per model.ema_bn_samples: CALIBRATION and 0."""
    tmp = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    out = {}
    for n in (CALIBRATION, 0):
        argv = ["--config", "configs/default.yaml", *tiny_overrides(tmp, f"bn{n}"), *TINY, f"model.ema_bn_samples={n}"]
        assert train_module.main(argv) == 0
        out[n] = tmp / f"bn{n}"
    torch.set_num_threads(threads)
    return out


@pytest.fixture(autouse=True)
def _process_settings():
    """distgan.sample sets the run's thread count and denormal mode for this process: put them back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


def latest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def draw(checkpoint: Path, seed: int, out: Path) -> np.ndarray:
    """``python -m distgan.sample --checkpoint CHECKPOINT --seed SEED --out OUT.png`` (random z), as pixels."""
    assert sample.main(["--checkpoint", str(checkpoint), "--seed", str(seed), "--out", str(out)]) == 0
    return np.asarray(Image.open(out))


def generator(tensors: dict, prefix: str, cfg: config.Config) -> torch.nn.Module:
    G = models.build_generator(cfg.model.g, cfg.model.z_dim, cfg.model.g_args)
    G.load_state_dict({k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    return G


def test_sample_writes_a_seeded_grid_of_64_ema_samples_to_a_png(runs, tmp_path):
    """README: `distgan.sample --checkpoint ... --out grid.png` draws 64 samples, 8 per row, from random z
    (seeded by --seed: the same seed the same picture, another seed another), from G's EMA (the G_ema.*
    weights of the checkpoint; the raw G.* draw another picture here), at the run's grid scale (484 px)."""
    folder = latest(runs[CALIBRATION])  # a checkpoint folder
    first = draw(folder, 0, tmp_path / "a.png")
    assert np.array_equal(draw(folder, 0, tmp_path / "again.png"), first), "one seed, two pictures"
    assert not np.array_equal(draw(folder, 1, tmp_path / "other.png"), first), "seeds 0 and 1: one picture"

    cfg = config.load(runs[CALIBRATION] / "config.yaml")
    side = cfg.output.grid_scale * (8 * (28 + 2) + 2)  # 8 tiles of 28 px, 2 px gutters around each, per side
    assert first.shape == (side, side) and first.dtype == np.uint8
    assert f"({side} px" in (REPO / "README.md").read_text()  # the size the README gives for the grids

    tensors = load_file(folder / "model.safetensors")
    z = torch.randn(64, cfg.model.z_dim, generator=torch.Generator().manual_seed(stream_seed("sample", 0)))
    pictures = {
        prefix: images.grid(images.generate(generator(tensors, prefix, cfg), z), scale=cfg.output.grid_scale).numpy()
        for prefix in ("G_ema", "G")
    }
    assert np.array_equal(first, pictures["G_ema"]), "not G_ema's 64 samples"  # 8 per row
    assert not np.array_equal(pictures["G"], pictures["G_ema"])  # so drawing from G would show


def test_sample_takes_a_run_folder_a_checkpoint_folder_or_its_model_file(runs, tmp_path):
    """`--checkpoint` takes a run folder (its latest checkpoint), a checkpoint folder or a model.safetensors:
    one picture for one seed."""
    run = runs[CALIBRATION]
    pictures = [
        draw(path, 3, tmp_path / f"{i}.png")
        for i, path in enumerate((run, latest(run), latest(run) / "model.safetensors"))
    ]
    assert all(np.array_equal(p, pictures[0]) for p in pictures[1:])


def test_ema_batchnorm_statistics_are_recomputed_unless_ema_bn_samples_is_0(runs):
    """README: before the EMA model is used its BatchNorm statistics are recomputed from model.ema_bn_samples
    fixed noise samples; 0 keeps the live G's. In the checkpoints: with 0, G_ema's running mean and variance
    are G's (EMA.update copies G's buffers at every G update); with CALIBRATION, they are what EMA.calibrate
    computes from that many fixed samples for the averaged weights, and differ from G's."""
    for n, run in runs.items():
        tensors = load_file(latest(run) / "model.safetensors")
        keys = [k[len("G_ema.") :] for k in tensors if k.startswith("G_ema.") and ".running_" in k]
        assert len(keys) == 6, keys  # mean and variance of the default G's three BatchNorm layers
        if n == 0:
            for key in keys:
                assert torch.equal(tensors[f"G_ema.{key}"], tensors[f"G.{key}"]), key
            continue
        cfg = config.load(run / "config.yaml")
        ema = EMA(generator(tensors, "G_ema", cfg), cfg.model.ema_decay)
        ema.calibrate(fixed_z(cfg.model.z_dim, cfg.train.seed, n, stream="ema_bn"))
        for key in keys:
            torch.testing.assert_close(tensors[f"G_ema.{key}"], ema.model.state_dict()[key])
            assert not torch.allclose(tensors[f"G_ema.{key}"], tensors[f"G.{key}"]), key
