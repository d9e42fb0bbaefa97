"""GAN losses as pure functions of D's logits, always computed in float32.

Notation: D returns logits l; D(x) = sigmoid(l). Targets t are per-sample label values (smoothed or
swapped by the caller). Every function returns a scalar mean over the batch.

Float32 on purpose: CUDA autocast refuses binary_cross_entropy on half inputs while CPU autocast
allows it, so a loss computed in the autocast dtype passes CPU tests and fails on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def bce(logits: Tensor, targets: Tensor) -> Tensor:
    """-[t log D(x) + (1 - t) log(1 - D(x))], stable form on logits.

    As G's loss with t = 1 it is the non-saturating -log D(G(z)).
    """
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


LossFn = Callable[[Tensor, Tensor], Tensor]

LOSSES: dict[str, LossFn] = {
    "bce": bce,
}


def d_term(name: str, logits: Tensor, targets: Tensor) -> Tensor:
    """D's loss on one kind of input (real or fake). D's loss is the real term plus the fake term, each
    half of that loss on its own batch; kept apart so a D with BatchNorm can see real and fake separately."""
    return 0.5 * LOSSES[name](logits, targets)


def d_loss(name: str, real_logits: Tensor, fake_logits: Tensor, real_targets: Tensor, fake_targets: Tensor) -> Tensor:
    """D's loss: the mean of the real and fake terms."""
    return d_term(name, real_logits, real_targets) + d_term(name, fake_logits, fake_targets)


def g_loss(name: str, fake_logits: Tensor) -> Tensor:
    """G's loss: fake samples scored against the 'real' target 1."""
    return LOSSES[name](fake_logits, torch.ones_like(fake_logits, dtype=torch.float32))
