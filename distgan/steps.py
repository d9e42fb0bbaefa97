"""The GAN update, and the only module that knows its DDP subtleties.

Notation: G generator, D discriminator, z noise, real / fake image batches, logits = D's raw outputs.

D step: fake = G(z) without a graph (in train mode: G's BatchNorm statistics see this batch too, as
they would in a loop that reuses one fake batch for both steps); ONE D forward on cat(real, fake) and one backward ("joint"), or,
for a D with BatchNorm, real and fake each through its own forward and backward ("separate"), so BN
sees unmixed batches as in a plain loop. Either way D never runs twice before a backward (two forwards
+ DDP's buffer broadcast raise "modified by an inplace operation"). Loss in float32 on logits;
backward through accelerate (loss scaling, DDP all-reduce of D's gradients).

G step: D frozen (requires_grad False) and its forward inside ``accelerator.no_sync(D)``: D's
parameters get no gradient and DDP all-reduces nothing for D; only G's gradients are reduced.

One training step (:meth:`GANSteps.step`) is ``d_steps`` D updates, each on a fresh real batch with its own
noise and label targets (smoothing, swapping on its schedule), then ``g_steps`` G updates; it returns the
step's metrics by name (:data:`STEP_KEYS`), still on the device. The D:G ratio is separate optimizer steps
(no ``accumulate()``, whose one shared counter desyncs two models). Under fp16 accelerate keeps ONE GradScaler for both optimizers and updates it at every step;
skipped steps are counted and logged.

Gradient norms (after DDP's all-reduce, so equal on every rank) are measured only on steps where
``measure`` is set: the logging steps, so the other steps pay nothing. Nothing here syncs the host, except
under fp16: the GradScaler's skipped-step flag is read on the host after each optimizer step (and Adam is
not fused there).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from distgan import losses
from distgan.globalbatch import local, segments
from distgan.rng import StepNoise, swap_rate

D_KEYS = ("loss_d", "d_real", "d_fake", "grad_norm_d", "r1")
G_KEYS = ("loss_g", "grad_norm_g")
STEP_KEYS = ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "r1")
"""What one step reports: D's GAN loss (without R1), G's loss, mean D(real) and D(fake) as probabilities,
the gradient norms (nan unless measured), the R1 penalty (nan on steps without one)."""
FINITE_KEYS = ("loss_d", "loss_g", "d_real", "d_fake")
"""The values a run stops on when they turn NaN or inf (norms and R1 are nan by design on some steps)."""


class Metrics(Mapping[str, Tensor]):
    """Named values kept on the device as one vector (one stack, no host sync): ``m["loss_d"]``.
    ``m.values`` is the vector in ``m.names`` order; indexing it by position (``m[:4]``) reads that vector."""

    def __init__(self, names: Sequence[str], values: Tensor):
        if len(names) != len(values):
            raise ValueError(f"{len(names)} names for {len(values)} values")
        self.names, self.values = tuple(names), values

    @classmethod
    def stack(cls, named: Mapping[str, Tensor]) -> Metrics:
        return cls(tuple(named), torch.stack(list(named.values())))

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return self.values[self.names.index(key)]
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class StepPlan:
    """What a step does besides the update itself: the D:G ratio and the label targets' schedule."""

    d_steps: int = 1
    g_steps: int = 1
    real_label: tuple[float, float] = (1.0, 1.0)
    fake_label: tuple[float, float] = (0.0, 0.0)
    swap_prob: float = 0.0
    swap_schedule: str = "constant"
    swap_until: float = 1.0
    total_d_updates: int = 1
    """D updates in the whole run: the swap schedule's "fraction of training" counts them."""

    @classmethod
    def from_config(cls, cfg, total_steps: int) -> StepPlan:
        t, loss = cfg.train, cfg.loss
        return cls(
            t.d_steps,
            t.g_steps,
            loss.real_label,
            loss.fake_label,
            loss.swap_prob,
            loss.swap_schedule,
            loss.swap_until,
            total_steps * t.d_steps,
        )


def couples_batch(module: nn.Module) -> bool:
    """True when a sample's output depends on the rest of its batch (BatchNorm, minibatch std)."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) or getattr(m, "couples_batch", False) for m in module.modules()
    )


def make_adam(module: nn.Module, opt, fused: bool = True) -> torch.optim.Adam:
    """Adam from an ``AdamConfig``, with the fused kernel (CPU and CUDA, torch >= 2.4): the per-tensor loop
    costs a quarter of a small model's step on a CPU. Not under fp16: a fused Adam skips overflowing steps
    inside its kernel, where accelerate cannot see (and we could not count) them."""
    kwargs = {"lr": opt.lr, "betas": opt.betas, "weight_decay": opt.weight_decay}
    if not fused:
        return torch.optim.Adam(module.parameters(), foreach=True, **kwargs)
    try:
        return torch.optim.Adam(module.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError):  # an older torch or an unsupported device
        return torch.optim.Adam(module.parameters(), foreach=True, **kwargs)


class GANSteps:
    def __init__(
        self,
        accelerator: Accelerator,
        G: nn.Module,
        D: nn.Module,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        loss_d: str,
        loss_g: str,
        separate_d_forward: bool = False,
        r1_gamma: float = 0.0,
        r1_every: int = 1,
        noise: StepNoise | None = None,
        plan: StepPlan | None = None,
        g_step_d_norm: str = "batch",
    ):
        """``noise`` and ``plan`` serve :meth:`step`; :meth:`d_step` and :meth:`g_step` take their inputs."""
        self.accelerator, self.G, self.D, self.opt_g, self.opt_d = accelerator, G, D, opt_g, opt_d
        self.noise, self.plan = noise, plan
        # "running": D's BatchNorm layers in eval mode during the G step (see TrainConfig.g_step_d_norm)
        self._d_norms = (
            [m for m in D.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if g_step_d_norm == "running"
            else []
        )
        self._mixed = g_step_d_norm == "mixed"
        self._last_real: Tensor | None = None  # "mixed": the real batch the G step normalises its fakes with
        self.separate = separate_d_forward
        self.r1_gamma, self.r1_every = r1_gamma, r1_every
        self.d_updates = 0
        self.g_updates = 0
        self.ema: EMA | None = None
        self.loss_d, self.loss_g = loss_d, loss_g
        self.skipped = {"d": 0, "g": 0}
        self.measure = False
        self._nan = torch.full((), float("nan"), device=accelerator.device)

    @classmethod
    def from_config(cls, accelerator: Accelerator, G: nn.Module, D: nn.Module, cfg, total_steps: int) -> GANSteps:
        """The trainer's wiring for a ``Config``: raw G and D with their Adams, prepared by accelerate; the
        EMA of G where configured; this rank's noise; the step plan of a ``total_steps`` run."""
        # The EMA copy is made before prepare(): under mixed precision accelerate patches G's forward in place.
        ema = EMA(G, cfg.model.ema_decay) if cfg.model.ema_decay else None
        fused = accelerator.mixed_precision != "fp16"
        opt_g, opt_d = make_adam(G, cfg.optim.g, fused), make_adam(D, cfg.optim.d, fused)
        t, loss = cfg.train, cfg.loss
        separate = t.d_forward == "separate" or (t.d_forward == "auto" and couples_batch(D))
        G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
        if ema is not None:
            ema.model.to(accelerator.device)
        world, rank = accelerator.num_processes, accelerator.process_index
        noise = StepNoise(t.seed, cfg.model.z_dim, t.batch_size, world, rank, accelerator.device)
        plan = StepPlan.from_config(cfg, total_steps)
        gan = cls(
            accelerator,
            G,
            D,
            opt_g,
            opt_d,
            loss.d,
            loss.g,
            separate,
            loss.r1_gamma,
            loss.r1_every,
            noise,
            plan,
            t.g_step_d_norm,
        )
        gan.ema = ema
        return gan

    def step(self, step: int, real: Callable[[int], Tensor], measure: bool = False) -> Metrics:
        """Training step number ``step``: ``plan.d_steps`` D updates (the k-th on ``real(k)``), then
        ``plan.g_steps`` G updates. Noise and targets are functions of (seed, update number), so a resumed
        run draws what an uninterrupted one does. ``measure``: compute gradient norms (logging steps only).
        Returns :data:`STEP_KEYS`, averaged over the step's updates, on the device."""
        noise, plan = self.noise, self.plan
        if noise is None or plan is None:
            raise ValueError("GANSteps.step needs the noise and plan given to the constructor (or from_config)")
        self.measure = measure
        d_out = []
        for k in range(plan.d_steps):
            d_index = step * plan.d_steps + k
            p_swap = swap_rate(plan.swap_prob, plan.swap_schedule, plan.swap_until, d_index / plan.total_d_updates)
            z, real_t, fake_t = noise.d_step(d_index, plan.real_label, plan.fake_label, p_swap)
            d_out.append(self.d_step(real(k), z, real_t, fake_t))
        g_out = [self.g_step(noise.g_step(step * plan.g_steps + k)) for k in range(plan.g_steps)]
        d_all, g_all = torch.stack([m.values for m in d_out]), torch.stack([m.values for m in g_out])
        named = {**dict(zip(D_KEYS, d_all.mean(0), strict=True)), **dict(zip(G_KEYS, g_all.mean(0), strict=True))}
        named["r1"] = d_all[:, D_KEYS.index("r1")].nanmean()  # lazy R1: nan on the updates without it
        return Metrics.stack({k: named[k] for k in STEP_KEYS})

    def d_step(self, real: Tensor, z: Tensor, real_targets: Tensor, fake_targets: Tensor) -> Metrics:
        """One D update. Returns detached :data:`D_KEYS`: the loss, mean D(real), mean D(fake), grad norm (nan
        unless measured), R1 penalty (nan on steps without one); the loss is the GAN loss alone, without the penalty. With
        ``r1_every`` k > 1 the penalty is applied on every k-th D update only, weighted k times (StyleGAN2's
        lazy regularisation: about the same regulariser for a fraction of the double backwards)."""
        with torch.no_grad():
            fake = self.G(z).to(real.dtype)
        r1 = self._nan
        penalise = self.r1_gamma > 0 and self.d_updates % self.r1_every == 0
        if penalise:
            real = real.detach().requires_grad_(True)
        if self._mixed:
            self._last_real = real.detach()
        self.opt_d.zero_grad(set_to_none=True)
        if self.separate:
            # BatchNorm in D: real and fake get their own batch statistics, as in a plain loop. Each forward
            # is followed by its own backward (so DDP's buffer broadcast never lands between a forward and
            # its backward); the first backward skips the all-reduce, the second reduces the summed grads.
            with self.accelerator.no_sync(self.D):
                real_logits = self.D(real).float()
                real_term = losses.d_term(self.loss_d, real_logits, real_targets)
                if penalise:
                    r1 = self._r1(real, real_logits)
                self.accelerator.backward(real_term + self.r1_every * r1 if penalise else real_term)
            # read now: under CUDA graphs (train.compile=reduce-overhead) D's next run reuses its output memory
            real_mean = real_logits.detach().sigmoid().mean()
            fake_logits = self.D(fake).float()
            fake_term = losses.d_term(self.loss_d, fake_logits, fake_targets)
            self.accelerator.backward(fake_term)
            loss = real_term.detach() + fake_term.detach()
        else:
            with segments(len(real), len(fake)):  # globally: cat(every rank's real, every rank's fake)
                logits = self.D(torch.cat([real, fake])).float()
            real_logits, fake_logits = logits.split([len(real), len(fake)])
            loss = losses.d_loss(self.loss_d, real_logits, fake_logits, real_targets, fake_targets)
            if penalise:
                r1 = self._r1(real, real_logits)
            self.accelerator.backward(loss + self.r1_every * r1 if penalise else loss)
            real_mean = real_logits.detach().sigmoid().mean()
        norm = self._grad_norm(self.D, self.opt_d)
        self.opt_d.step()
        self.d_updates += 1
        self._count_skip("d", self.opt_d)
        with torch.no_grad():
            values = [loss.detach(), real_mean, fake_logits.sigmoid().mean(), norm, r1.detach()]
            return Metrics(D_KEYS, torch.stack(values))

    def g_step(self, z: Tensor) -> Metrics:
        """One G update through a frozen D. Returns detached :data:`G_KEYS`: the loss, the grad norm (nan
        unless measured)."""
        self.D.requires_grad_(False)
        for m in self._d_norms:
            m.eval()
        try:
            with self.accelerator.no_sync(self.D):
                fake = self.G(z)
                if self._mixed and self._last_real is not None:
                    real = self._last_real.to(fake.dtype)
                    with segments(len(real), len(fake)):
                        fake_logits = self.D(torch.cat([real, fake])).float()[len(real) :]
                else:
                    fake_logits = self.D(fake).float()
                loss = losses.g_loss(self.loss_g, fake_logits)
                self.opt_g.zero_grad(set_to_none=True)
                self.accelerator.backward(loss)
        finally:
            self.D.requires_grad_(True)
            for m in self._d_norms:
                m.train()
        norm = self._grad_norm(self.G, self.opt_g)
        self.opt_g.step()
        self.g_updates += 1
        self._count_skip("g", self.opt_g)
        if self.ema is not None:
            self.ema.update()
        return Metrics(G_KEYS, torch.stack([loss.detach(), norm]))

    def _r1(self, real: Tensor, real_logits: Tensor) -> Tensor:
        """``losses.r1`` at this run's gamma, under fp16 at the scaler's current scale (read on the device)."""
        scaler = self.accelerator.scaler
        scale = None if scaler is None else scaler.scale(torch.ones((), device=real.device))
        return losses.r1(real, real_logits, self.r1_gamma, scale)

    def _grad_norm(self, net: nn.Module, opt) -> Tensor:
        """The global L2 norm of net's gradients, true scale (fp16: unscaled first, as the step would)."""
        if not self.measure:
            return self._nan
        if self.accelerator.scaler is not None:
            self.accelerator.unscale_gradients(opt)
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        with torch.no_grad():
            return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).float()

    def _count_skip(self, net: str, opt) -> None:
        # Only fp16 has a scaler; reading step_was_skipped syncs the host, so never touch it otherwise.
        if self.accelerator.scaler is not None and getattr(opt, "step_was_skipped", False):
            self.skipped[net] += 1


class EMA:
    """An exponential moving average of G's weights: ema = d * ema + (1 - d) * G after the n-th G update,
    with d = min(decay, (1 + n) / (10 + n)): the warm-up keeps the average from dragging the random init
    along for thousands of steps (at decay 0.999 without it, init still weighs 15% after 1,900 updates).
    Buffers (BatchNorm statistics) are copied; ``calibrate`` recomputes them for the averaged weights before
    the EMA model is used. Identical on every rank, since G is."""

    def __init__(self, G: nn.Module, decay: float):
        self.source, self.decay = G, decay
        self.model = copy.deepcopy(G).eval().requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        ema_params = list(self.model.parameters())
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(ema_params, [p.detach() for p in self.source.parameters()], weight)
        for e, b in zip(self.model.buffers(), self.source.buffers(), strict=True):
            e.copy_(b)

    @torch.no_grad()
    def calibrate(self, z: Tensor, batch: int = 1024) -> None:
        """BatchNorm statistics of the EMA weights: the live G's running statistics describe its own
        weights, not their average (measured on the default's models at epoch 30: FID 12.1 with G's, 8.9
        recomputed).
        Each BatchNorm layer's running mean and variance become the average over the chunks of z, weighted by
        their sizes (each chunk's momentum is its share of the images seen so far). Only BatchNorm runs in
        training mode: dropout stays off, as where the statistics are used, and draws nothing from the RNG
        (a mid-epoch checkpoint calibrates where an uninterrupted run does not). A no-op without BatchNorm."""
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        momenta = [m.momentum for m in bns]
        self.model.eval()
        for m in bns:
            m.reset_running_stats()
            m.train()
        seen = 0
        try:
            for chunk in z.split(batch):
                seen += len(chunk)
                for m in bns:
                    m.momentum = len(chunk) / seen
                with local():  # every rank recalibrates on the same z: nothing to share
                    type(self.model).forward(self.model, chunk)
        finally:
            for m, momentum in zip(bns, momenta, strict=True):
                m.momentum = momentum
            self.model.eval()
