"""GAN losses as pure functions of D's logits, always computed in float32.

Notation: D returns logits l; D(x) = sigmoid(l). A D term scores one batch (real or fake) against its
per-sample targets t (already smoothed or swapped by the caller); D's loss is real term + fake term, each
half of the loss on its own batch. A G loss scores D's logits on fakes. Everything returns a batch mean.

Float32 on purpose: CUDA autocast refuses binary_cross_entropy on half inputs while CPU autocast
allows it, so a loss computed in the autocast dtype passes CPU tests and fails on a GPU.

The blog's losses, named for what they compute:
- ``mse`` (v1): (D(x) - t)^2 on probabilities.
- ``bce``: -[t log D(x) + (1 - t) log(1 - D(x))] in the stable form on logits. The blog's hand-written
  cross-entropy (v2), ``BCELoss`` on D's sigmoid (v3.2 on) and ``BCEWithLogitsLoss`` on logits are all this
  maths; ``bce_probs`` keeps the BCELoss arithmetic (log clamped at -100, saturating) for faithful runs.
- ``bce_double_sigmoid`` (v3.1): ``BCEWithLogitsLoss`` applied to D's *sigmoid output*, as happens when a
  D that ends in a sigmoid meets a loss that applies another: gradients shrink by up to 4x and targets
  near 0 or 1 are unreachable.
Beyond the blog (these use only which side a target is on, t >= 0.5 meaning real):
- ``logistic``: the non-saturating logistic loss, softplus(-l) for real, softplus(l) for fake; G: softplus(-l).
- ``hinge``: relu(1 - l) for real, relu(1 + l) for fake; G: -l.
- ``lsgan``: least squares on logits, (l - t)^2 / 2 with t in {0, 1} (smoothed t allowed); G: (l - 1)^2 / 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def _bce(logits: Tensor, targets: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets)


def _bce_probs(logits: Tensor, targets: Tensor) -> Tensor:
    return F.binary_cross_entropy(logits.sigmoid(), targets)  # torch clamps log(p) at -100, as BCELoss does


def _bce_double_sigmoid(logits: Tensor, targets: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.sigmoid(), targets)


def _mse(logits: Tensor, targets: Tensor) -> Tensor:
    return F.mse_loss(logits.sigmoid(), targets)


def _side(targets: Tensor) -> Tensor:
    """+1 where the target says real (t >= 0.5), -1 where it says fake."""
    return torch.where(targets >= 0.5, 1.0, -1.0)


def _logistic(logits: Tensor, targets: Tensor) -> Tensor:
    return F.softplus(-_side(targets) * logits).mean()


def _hinge(logits: Tensor, targets: Tensor) -> Tensor:
    return F.relu(1.0 - _side(targets) * logits).mean()


def _lsgan(logits: Tensor, targets: Tensor) -> Tensor:
    return 0.5 * (logits - targets).square().mean()


@dataclass(frozen=True)
class Loss:
    d: Callable[[Tensor, Tensor], Tensor]
    """Loss of one batch of logits against per-sample targets (D's real or fake term)."""
    g: Callable[[Tensor], Tensor]
    """G's loss on D's logits for fakes."""


def _against_real(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """G's loss as the D loss of fakes labelled real (t = 1): the non-saturating form."""
    return lambda logits: fn(logits, torch.ones_like(logits))


LOSSES: dict[str, Loss] = {
    "bce": Loss(_bce, _against_real(_bce)),
    "bce_probs": Loss(_bce_probs, _against_real(_bce_probs)),
    "bce_double_sigmoid": Loss(_bce_double_sigmoid, _against_real(_bce_double_sigmoid)),
    "mse": Loss(_mse, _against_real(_mse)),
    "logistic": Loss(_logistic, lambda logits: F.softplus(-logits).mean()),
    "hinge": Loss(_hinge, lambda logits: -logits.mean()),
    "lsgan": Loss(_lsgan, _against_real(_lsgan)),
}


def d_term(name: str, logits: Tensor, targets: Tensor) -> Tensor:
    """D's loss on one kind of input (real or fake): half the loss on that batch. Kept apart so a D with
    BatchNorm can see real and fake in separate passes."""
    return 0.5 * LOSSES[name].d(logits.float(), targets.float())


def d_loss(name: str, real_logits: Tensor, fake_logits: Tensor, real_targets: Tensor, fake_targets: Tensor) -> Tensor:
    """D's loss: real term + fake term."""
    return d_term(name, real_logits, real_targets) + d_term(name, fake_logits, fake_targets)


def r1(real: Tensor, real_logits: Tensor, gamma: float, scale: Tensor | None = None) -> Tensor:
    """R1 = gamma / 2 * E ||grad_x D(x)||^2 on real images (Mescheder et al., 2018), with a graph so it trains D.
    ``real`` must require grad. ``scale`` (fp16's loss scale): the input gradient is taken of the scaled logits
    and unscaled after, as torch.amp's gradient-penalty recipe does, so small gradients do not flush to zero."""
    out = real_logits.sum() if scale is None else real_logits.sum() * scale
    (grad,) = torch.autograd.grad(out, real, create_graph=True)
    if scale is not None:
        grad = grad / scale
    return 0.5 * gamma * grad.float().square().flatten(1).sum(1).mean()


def g_loss(name: str, fake_logits: Tensor) -> Tensor:
    """G's loss on D's logits for its samples."""
    return LOSSES[name].g(fake_logits.float())
