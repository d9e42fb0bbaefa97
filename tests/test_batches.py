"""Sharding and per-rank randomness: disjoint, covering, equal-length shards; global-batch noise."""

from __future__ import annotations

import pytest
import torch

from distgan.batches import DeviceImages, epoch_permutation, shard
from distgan.rng import StepNoise, fixed_z, swap_rate


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_disjoint_covering_and_equal(world):
    n, global_batch = 1000, 12 * world
    perm = epoch_permutation(n, seed=0, epoch=0)
    shards = [shard(perm, global_batch, world, r) for r in range(world)]
    assert len({s.shape for s in shards}) == 1  # equal: every rank runs the same number of steps
    flat = torch.cat([s.flatten() for s in shards])
    assert len(set(flat.tolist())) == len(flat)  # disjoint
    assert len(flat) == n - n % global_batch  # covering, but for the dropped remainder


def test_step_batches_are_world_size_invariant():
    perm = epoch_permutation(1000, 1, 2)
    one = shard(perm, 64, 1, 0)
    two = torch.cat([shard(perm, 64, 2, 0), shard(perm, 64, 2, 1)], dim=1)
    assert torch.equal(one, two)


def test_permutation_depends_on_seed_and_epoch_only():
    a = epoch_permutation(100, 0, 0)
    assert torch.equal(a, epoch_permutation(100, 0, 0))
    assert not torch.equal(a, epoch_permutation(100, 0, 1))
    assert not torch.equal(a, epoch_permutation(100, 1, 0))


def test_uneven_global_batch_is_refused():
    with pytest.raises(ValueError, match="not divisible"):
        shard(torch.arange(100), 10, 3, 0)


def test_device_images_batch_is_float_in_unit_range():
    imgs = DeviceImages(torch.tensor([[[0, 255], [128, 1]]], dtype=torch.uint8).expand(3, 2, 2).contiguous(), "cpu")
    b = imgs.batch(torch.tensor([0, 2]))
    assert b.shape == (2, 1, 2, 2) and b.dtype == torch.float32
    assert b.max() == 1.0 and b.min() == 0.0


def test_noise_differs_per_rank_and_concatenates_to_the_single_process_draw():
    one = StepNoise(seed=0, z_dim=4, global_batch=8, world=1, rank=0, device="cpu")
    ranks = [StepNoise(seed=0, z_dim=4, global_batch=8, world=2, rank=r, device="cpu") for r in range(2)]
    z1, rt1, _ = one.d_step(5, (0.9, 1.0), (0.0, 0.0))
    parts = [r.d_step(5, (0.9, 1.0), (0.0, 0.0)) for r in ranks]
    assert torch.equal(z1, torch.cat([p[0] for p in parts]))
    assert torch.equal(rt1, torch.cat([p[1] for p in parts]))
    assert not torch.equal(parts[0][0], parts[1][0])  # never N copies of one rank's work
    assert rt1.min() >= 0.9 and rt1.max() <= 1.0
    assert not torch.equal(one.g_step(5), one.d_step(5, (1, 1), (0, 0))[0])  # D and G streams differ


def test_noise_is_a_function_of_seed_and_step_only():
    a = StepNoise(0, 4, 8, 1, 0, "cpu")
    b = StepNoise(0, 4, 8, 1, 0, "cpu")
    a.g_step(1), a.g_step(2)  # draws in between do not matter
    assert torch.equal(a.g_step(3), b.g_step(3))
    assert not torch.equal(b.g_step(3), StepNoise(1, 4, 8, 1, 0, "cpu").g_step(3))


def test_fixed_z_is_shared_across_configs_with_one_latent_size():
    assert torch.equal(fixed_z(64), fixed_z(64)) and fixed_z(64).shape == (64, 64)
    assert not torch.equal(fixed_z(64, seed=0), fixed_z(64, seed=1))


def test_fixed_and_random_smoothing_ranges():
    noise = StepNoise(0, 4, 4096, 1, 0, "cpu")
    _, rt, ft = noise.d_step(0, (0.9, 0.9), (0.1, 0.1))
    assert torch.all(rt == 0.9) and torch.all(ft == 0.1)
    _, rt, ft = noise.d_step(1, (0.7, 1.0), (0.0, 0.3))
    assert rt.min() >= 0.7 and rt.max() <= 1.0 and ft.min() >= 0.0 and ft.max() <= 0.3
    assert rt.std() > 0.05 and abs(rt.mean().item() - 0.85) < 0.01  # uniform, not a constant


def test_label_swapping_is_per_sample_and_seeded():
    noise = StepNoise(0, 4, 4096, 1, 0, "cpu")
    _, rt, ft = noise.d_step(0, (1.0, 1.0), (0.0, 0.0), swap_prob=0.25)
    assert abs((rt == 0).float().mean().item() - 0.25) < 0.03
    assert abs((ft == 1).float().mean().item() - 0.25) < 0.03
    again = StepNoise(0, 4, 4096, 1, 0, "cpu").d_step(0, (1.0, 1.0), (0.0, 0.0), swap_prob=0.25)
    assert torch.equal(rt, again[1]) and torch.equal(ft, again[2])
    _, rt, ft = noise.d_step(0, (1.0, 1.0), (0.0, 0.0), swap_prob=1.0)
    assert torch.all(rt == 0) and torch.all(ft == 1)


@pytest.mark.parametrize(
    "schedule, progress, rate",
    [
        ("constant", 0.0, 0.2),
        ("constant", 0.49, 0.2),
        ("constant", 0.5, 0.0),
        ("linear", 0.0, 0.2),
        ("linear", 0.25, 0.1),  # midway to the cut-off
        ("linear", 0.5, 0.0),
        ("linear", 0.9, 0.0),  # after the cut-off
    ],
)
def test_swap_schedule(schedule, progress, rate):
    assert abs(swap_rate(0.2, schedule, 0.5, progress) - rate) < 1e-12
