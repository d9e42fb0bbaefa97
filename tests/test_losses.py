"""Losses on logits, in float32, pinned to hand-computed values."""

from __future__ import annotations

import math

import torch

from distgan import losses


def test_bce_matches_hand_computation():
    logits = torch.tensor([0.0, 2.0])
    targets = torch.tensor([1.0, 0.0])
    # -log(sigmoid(0)) = log 2 ; -log(1 - sigmoid(2)) = log(1 + e^2)
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert abs(losses.bce(logits, targets).item() - expected) < 1e-6


def test_d_loss_is_the_mean_over_real_and_fake_batches():
    real, fake = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.3, -0.2, 2.0])
    rt, ft = torch.full((3,), 0.9), torch.zeros(3)
    got = losses.d_loss("bce", real, fake, rt, ft)
    want = losses.bce(torch.cat([real, fake]), torch.cat([rt, ft]))  # equal halves: the mean over all 2B
    assert torch.allclose(got, want)
    assert torch.allclose(got, losses.d_term("bce", real, rt) + losses.d_term("bce", fake, ft))


def test_g_loss_is_non_saturating():
    fake = torch.tensor([-3.0])
    # -log(sigmoid(-3)) = log(1 + e^3)
    assert abs(losses.g_loss("bce", fake).item() - math.log(1 + math.exp(3))) < 1e-6


def test_losses_are_float32_for_half_logits():
    logits = torch.randn(8).to(torch.bfloat16)
    assert losses.g_loss("bce", logits).dtype == torch.float32
    assert losses.d_loss("bce", logits, logits, torch.ones(8), torch.zeros(8)).dtype == torch.float32
