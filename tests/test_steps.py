"""The GAN update: one whole step (the D:G ratio, noise and labels) with named metrics; the R1 penalty,
pinned on a linear D where it has a closed form: grad_x (w.x + b) = w, so R1 = gamma / 2 * ||w||^2 and it
adds gamma * w to D's weight gradient; the EMA's BatchNorm calibration."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from distgan import models
from distgan.steps import GANSteps


class LinearD(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(28 * 28, 1)

    def forward(self, x):
        return self.lin(x.flatten(1)).squeeze(1)


@pytest.mark.parametrize("scale", [None, 2.0**16])
def test_r1_is_half_gamma_times_the_squared_input_gradient_with_or_without_a_grad_scaler(scale):
    """fp16's recipe takes the input gradient of scaled logits and unscales it: the penalty is the same.
    (A stand-in accelerator: fp16 autocast and its scaler exist only on GPUs.)"""
    torch.manual_seed(0)
    D = LinearD()
    scaler = None if scale is None else torch.amp.GradScaler("cpu", init_scale=scale)
    gan = GANSteps(
        SimpleNamespace(device=torch.device("cpu"), scaler=scaler), None, D, None, None, "bce", "bce", r1_gamma=3.0
    )
    real = torch.rand(5, 1, 28, 28, requires_grad=True)
    r1 = gan._r1(real, D(real))
    want = 0.5 * 3.0 * D.lin.weight.detach().square().sum()
    assert torch.allclose(r1, want, rtol=1e-5), (r1, want)
    assert r1.requires_grad  # it trains D


@pytest.mark.parametrize(
    ("separate", "every", "done", "weight"),
    [(False, 1, 0, 1), (True, 1, 0, 1), (False, 4, 8, 4), (True, 4, 9, 0)],
    ids=["joint", "separate", "lazy-due", "lazy-skipped"],
)
def test_r1_adds_gamma_w_to_the_d_step_and_is_reported_apart_from_the_loss(separate, every, done, weight):
    """Same batch, noise and D, with and without R1, one SGD step of rate 1: the weights differ by exactly
    -weight * gamma * w, the bias not at all; the reported loss is the GAN loss in both, the penalty its own
    column. Lazy R1 (every k-th D update, ``done`` updates so far) weighs it k times when due, 0 otherwise."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    G = models.build_generator("mlp_g", 8, {"hidden": [16], "batchnorm": False})
    D0 = LinearD()
    real, z = torch.rand(6, 1, 28, 28), torch.randn(6, 8)
    targets = torch.ones(6), torch.zeros(6)
    after = {}
    for gamma in (0.0, 0.5):
        D = LinearD()
        D.load_state_dict(D0.state_dict())
        opt_d = torch.optim.SGD(D.parameters(), lr=1.0)
        gan = GANSteps(
            accelerator, G, D, None, opt_d, "bce", "bce", separate_d_forward=separate, r1_gamma=gamma, r1_every=every
        )
        gan.d_updates = done
        out = gan.d_step(real, z, *targets)
        after[gamma] = (D.lin.weight.detach().clone(), D.lin.bias.detach().clone(), out)
    (w0, b0, out0), (w1, b1, out1) = after[0.0], after[0.5]
    w = D0.lin.weight.detach()
    assert torch.allclose(w1 - w0, -weight * 0.5 * w, atol=1e-6)
    assert torch.equal(b1, b0)
    assert torch.allclose(out1[:4], out0[:4], equal_nan=True)  # loss, D(real), D(fake), (unmeasured) norm
    assert out0[4].isnan()
    if weight:
        assert torch.allclose(out1[4], 0.25 * w.square().sum())  # gamma / 2 * ||w||^2, before the lazy weight
    else:
        assert out1[4].isnan()
    assert not real.requires_grad  # the caller's batch is left alone


def test_ema_calibration_gives_the_averaged_weights_their_own_batchnorm_statistics():
    from distgan.steps import EMA

    torch.manual_seed(0)
    G = models.build_generator("mlp_g", 8, {"hidden": [16, 32]})
    ema = EMA(G, 0.9)
    with torch.no_grad():  # the average drifts away from the live G, whose statistics EMA.update copies
        for p in ema.model.parameters():
            p.mul_(1.5)
    live = {k: v.clone() for k, v in G.state_dict().items()}
    z = torch.randn(3000, 8)
    ema.calibrate(z, batch=3000)  # one batch: the statistics are that batch's mean and unbiased variance
    first, bn = ema.model.net[0], ema.model.net[1]
    with torch.no_grad():
        h = first(z)
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var(0, unbiased=True), rtol=1e-4)
    assert not torch.allclose(bn.running_mean, G.net[1].running_mean)
    assert bn.momentum == 0.1 and not ema.model.training
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in live.items())  # the live G is untouched

    again = EMA(G, 0.9)
    again.model.load_state_dict(ema.model.state_dict())
    again.calibrate(z, batch=700)  # in chunks of 700, 700, 700, 700 and 200: weighted by size, nearly the same
    assert torch.allclose(again.model.net[1].running_mean, bn.running_mean, atol=1e-5)
    assert torch.allclose(again.model.net[1].running_var, bn.running_var, rtol=0.01)


def test_ema_calibration_keeps_dropout_off_and_draws_nothing_from_the_rng():
    """Statistics for eval mode, where dropout is off; and no RNG draw, which would shift every later dropout
    mask of a run that saved mid-epoch against one that did not."""
    from distgan.steps import EMA

    torch.manual_seed(0)
    G = models.build_generator("mlp_g", 8, {"hidden": [16, 32], "dropout": 0.5})
    ema = EMA(G, 0.9)
    z = torch.randn(512, 8)
    state = torch.get_rng_state()
    ema.calibrate(z, batch=512)
    assert torch.equal(torch.get_rng_state(), state)
    same = EMA(G, 0.9)  # the same G with its dropout layers taken out
    same.model.net = nn.Sequential(*(nn.Identity() if isinstance(m, nn.Dropout) else m for m in same.model.net))
    same.calibrate(z, batch=512)
    for key, value in ema.model.state_dict().items():
        assert torch.equal(value, same.model.state_dict()[key]), key


def test_a_step_is_d_steps_d_updates_then_g_steps_g_updates_and_reports_by_name():
    """GANSteps.step against the same updates called by hand (noise and swapped, smoothed labels as the plan
    draws them): the same weights bit for bit, and each metric the mean of its updates under its own name."""
    from accelerate import Accelerator

    from distgan import config
    from distgan.rng import StepNoise, swap_rate
    from distgan.steps import STEP_KEYS, StepPlan

    accelerator = Accelerator(cpu=True)
    cfg = config.load(None, ["train.d_steps=2", "train.g_steps=3", "train.batch_size=8", "loss.swap_prob=0.5"])
    cfg = config.from_dict({**cfg.to_dict(), "model": {"g": "mlp_g", "d": "mlp_d", "z_dim": 8}})
    reals = torch.rand(2, 8, 1, 28, 28)

    def fresh():
        torch.manual_seed(0)
        G, D = models.build_pair(cfg.model)
        return GANSteps.from_config(accelerator, G, D, cfg, total_steps=10)

    a, b = fresh(), fresh()
    got = a.step(3, lambda k: reals[k], measure=True)
    assert tuple(got) == STEP_KEYS and got.values.shape == (len(STEP_KEYS),)

    plan, noise = StepPlan.from_config(cfg, 10), StepNoise(0, 8, 8, 1, 0, "cpu")
    assert plan == b.plan and plan.total_d_updates == 20
    b.measure = True
    d_out = []
    for k in range(2):
        index = 3 * 2 + k
        swap = swap_rate(plan.swap_prob, plan.swap_schedule, plan.swap_until, index / 20)
        d_out.append(b.d_step(reals[k], *noise.d_step(index, plan.real_label, plan.fake_label, swap)))
    g_out = [b.g_step(noise.g_step(3 * 3 + k)) for k in range(3)]
    for net in ("G", "D"):
        for p, q in zip(getattr(a, net).parameters(), getattr(b, net).parameters(), strict=True):
            assert torch.equal(p, q), net
    assert (a.d_updates, a.g_updates) == (2, 3)
    for key in ("loss_d", "d_real", "d_fake", "grad_norm_d"):
        assert torch.equal(got[key], torch.stack([o[key] for o in d_out]).mean()), key
    for key in ("loss_g", "grad_norm_g"):
        assert torch.equal(got[key], torch.stack([o[key] for o in g_out]).mean()), key
    assert got["r1"].isnan() and got["grad_norm_d"] > 0  # no R1 in this config; measured norms


def test_the_step_buffer_files_metrics_by_name_and_names_what_turned_non_finite():
    from accelerate import Accelerator

    from distgan.errors import NonFiniteError
    from distgan.steps import STEP_KEYS
    from distgan.tracking import StepBuffer

    accelerator = Accelerator(cpu=True)
    buffer = StepBuffer(torch.device("cpu"), 2)
    values = {k: torch.tensor(float(i)) for i, k in enumerate(STEP_KEYS)}
    buffer.add(0, dict(reversed(values.items())))  # any order: the names decide the columns
    (row,) = buffer.drain(accelerator)
    assert row == {"step": 0, **{k: float(i) for i, k in enumerate(STEP_KEYS)}}
    buffer.add(7, {**values, "d_fake": torch.tensor(float("inf")), "r1": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteError, match="D's output on generated images became non-finite .* at step 7"):
        buffer.drain(accelerator)
    with pytest.raises(KeyError):
        buffer.add(8, {k: v for k, v in values.items() if k != "loss_g"})


class AffineG(nn.Module):
    """G(z) = A z + b as an image: b is what every sample shares (no sigmoid, so its gradient is exactly the
    sum of the per-sample image gradients)."""

    def __init__(self, z_dim: int = 8):
        super().__init__()
        self.lin = nn.Linear(z_dim, 28 * 28)

    def forward(self, z):
        return self.lin(z).view(-1, 1, 28, 28)


@pytest.mark.parametrize("norm", ["batch", "running", "mixed"])
def test_with_batchnorm_in_d_the_g_step_sees_what_every_fake_shares_only_beside_other_statistics(norm):
    """D = Linear -> BatchNorm1d -> LeakyReLU -> Linear. Normalised by the all-fake batch's own statistics,
    D's output does not change when every fake moves alike, so G's shared bias gets exactly no gradient (the
    v5 pathology: G never leaves grey noise); by D's running statistics, or beside the last real batch
    (mixed), it does. Every way leaves D's BatchNorm in train mode; running mode leaves its statistics alone."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    G = AffineG()
    D = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    bn = D[2]
    opt_g = torch.optim.SGD(G.parameters(), lr=0.0)
    opt_d = torch.optim.SGD(D.parameters(), lr=0.0)
    gan = GANSteps(Accelerator(cpu=True), G, _Squeeze(D), opt_g, opt_d, "bce", "bce", g_step_d_norm=norm)
    gan.d_step(torch.rand(32, 1, 28, 28), torch.randn(32, 8), torch.ones(32), torch.zeros(32))
    before = bn.running_mean.clone()
    gan.g_step(torch.randn(32, 8))
    shared = G.lin.bias.grad.abs().max().item()
    per_sample = G.lin.weight.grad.abs().max().item()
    assert per_sample > 1e-4
    if norm == "batch":
        assert shared < 1e-6 * per_sample + 1e-9, shared
    else:
        assert shared > 1e-3 * per_sample, shared
    # train mode (batch, mixed): the G step's batch updated D's statistics; running mode reads them only
    assert torch.equal(bn.running_mean, before) == (norm == "running")
    assert bn.training


class _Squeeze(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).squeeze(1)


@pytest.mark.parametrize(
    ("config", "d_forward", "separate"),
    [
        ("v5", "auto", True),  # ref_d has BatchNorm1d
        ("default", "auto", False),  # mlp_d: none
        ("v4.1", "auto", False),  # Dropout does not couple a batch
        ("v5", "joint", False),
        ("default", "separate", True),
    ],
)
def test_d_forward_auto_runs_real_and_fakes_through_d_apart_exactly_when_d_has_batchnorm(config, d_forward, separate):
    """`train.d_forward: auto`: D sees real and fake images in separate forward passes (each batch its own
    BatchNorm statistics) when it has BatchNorm, in one joint pass otherwise; counted on D's forwards of a
    real training step built as the trainer builds it."""
    from accelerate import Accelerator

    from distgan.config import load
    from tests.conftest import REPO

    overrides = [f"train.d_forward={d_forward}", "train.batch_size=8", "train.g_steps=1", "train.d_steps=1"]
    cfg = load(REPO / "configs" / f"{config}.yaml", overrides)
    torch.manual_seed(0)
    G, D = models.build_pair(cfg.model)
    batches = []
    D.register_forward_hook(lambda module, args, out: batches.append(len(args[0])))
    gan = GANSteps.from_config(Accelerator(cpu=True), G, D, cfg, total_steps=1)
    gan.step(0, lambda k: torch.rand(8, 1, 28, 28) * 2 - 1)
    d_step = batches[:-1]  # the last forward is the G step's
    assert d_step == ([8, 8] if separate else [16]), batches


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 needs CUDA (refused on a CPU)")
def test_fp16_one_scaler_for_both_optimizers_updated_at_each_step_and_skips_counted():
    """fp16: accelerate's single GradScaler serves D's and G's optimizers and is updated at each of their
    steps; a step whose gradients overflow is skipped and counted per network. A scale of 2^60 makes the
    first D and G updates overflow: both skipped, the scale halved twice (once per optimizer step)."""
    from accelerate import Accelerator
    from accelerate.utils import GradScalerKwargs

    from distgan.config import load
    from tests.conftest import REPO

    acc = Accelerator(mixed_precision="fp16", kwargs_handlers=[GradScalerKwargs(init_scale=2.0**60)])
    cfg = load(REPO / "configs" / "default.yaml", ["train.batch_size=64", "train.mixed_precision=fp16"])
    torch.manual_seed(0)
    G, D = models.build_pair(cfg.model)
    gan = GANSteps.from_config(acc, G, D, cfg, total_steps=50)
    assert acc.scaler is not None and gan.opt_d.scaler is acc.scaler and gan.opt_g.scaler is acc.scaler

    def real(k):
        return torch.rand(64, 1, 28, 28, device=acc.device) * 2 - 1

    gan.step(0, real)
    assert gan.skipped == {"d": 1, "g": 1}
    assert acc.scaler.get_scale() == 2.0**58
    for step in range(1, 50):  # the scale backs off until the updates go through
        metrics = gan.step(step, real)
    assert gan.skipped["d"] < 25 and gan.skipped["g"] < 25, gan.skipped
    assert all(torch.isfinite(metrics[k]).all() for k in ("loss_d", "loss_g"))
