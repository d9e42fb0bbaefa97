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
    assert abs(losses.LOSSES["bce"].d(logits, targets).item() - expected) < 1e-6


def test_d_loss_is_the_mean_over_real_and_fake_batches():
    real, fake = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.3, -0.2, 2.0])
    rt, ft = torch.full((3,), 0.9), torch.zeros(3)
    got = losses.d_loss("bce", real, fake, rt, ft)
    want = losses.LOSSES["bce"].d(torch.cat([real, fake]), torch.cat([rt, ft]))  # equal halves: the mean over all 2B
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


def sp(x: float) -> float:  # softplus
    return math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


L, T = torch.tensor([2.0]), torch.tensor([0.9])


def test_each_d_loss_against_hand_values():
    p = sig(2.0)
    expected = {
        "bce": -(0.9 * math.log(p) + 0.1 * math.log(1 - p)),
        "bce_probs": -(0.9 * math.log(p) + 0.1 * math.log(1 - p)),
        "bce_double_sigmoid": -(0.9 * math.log(sig(p)) + 0.1 * math.log(1 - sig(p))),
        "mse": (p - 0.9) ** 2,
        "logistic": sp(-2.0),  # target 0.9 is on the real side
        "hinge": max(0.0, 1 - 2.0),
        "lsgan": 0.5 * (2.0 - 0.9) ** 2,
    }
    assert set(expected) == set(losses.LOSSES)
    for name, want in expected.items():
        assert abs(losses.LOSSES[name].d(L, T).item() - want) < 1e-6, name
    # the fake side of the margin losses
    assert abs(losses.LOSSES["hinge"].d(L, torch.tensor([0.0])).item() - 3.0) < 1e-6
    assert abs(losses.LOSSES["logistic"].d(L, torch.tensor([0.1])).item() - sp(2.0)) < 1e-6


def test_each_g_loss_against_hand_values():
    x = torch.tensor([-1.0])
    p = sig(-1.0)
    expected = {
        "bce": -math.log(p),
        "bce_probs": -math.log(p),
        "bce_double_sigmoid": -math.log(sig(p)),
        "mse": (p - 1) ** 2,
        "logistic": sp(1.0),
        "hinge": 1.0,
        "lsgan": 0.5 * 4.0,
    }
    for name, want in expected.items():
        assert abs(losses.g_loss(name, x).item() - want) < 1e-6, name


def test_bce_probs_saturates_where_bce_on_logits_does_not():
    """BCELoss on probabilities clamps log at -100: a confident wrong D gives G no gradient to follow."""
    x = torch.tensor([-200.0], requires_grad=True)
    losses.g_loss("bce_probs", x).backward()
    assert x.grad.abs().item() == 0.0
    y = torch.tensor([-200.0], requires_grad=True)
    losses.g_loss("bce", y).backward()
    assert abs(y.grad.item() + 1.0) < 1e-6
