"""The rivals the benchmark times, each one step at a time: distgan's loader and torchvision's DataLoader,
a plain PyTorch loop doing distgan's update by hand (the framework's overhead is distgan against it), and
the classic tutorial loop. The plain loop is deliberately a second, independent implementation of the GAN
update: it shares the models, losses and optimiser settings with distgan, never its loop.
"""

from __future__ import annotations

import resource
import time

import torch
from torch import Tensor

from distgan import config, losses, models
from distgan.batches import DeviceImages, epoch_permutation, shard
from distgan.steps import couples_batch, make_adam


def peak_memory(device: torch.device) -> dict:
    """This process's peak resident memory (MB; Linux reports KB) and, on CUDA, its peak allocation."""
    out = {"max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def timed(step, warmup: int, steps: int | None, device: torch.device, seconds: float = 0.0) -> tuple[float, int]:
    """(seconds, calls) for ``steps`` calls of step(i) after ``warmup`` untimed ones, device work included;
    ``steps`` None: as many calls as fit in ``seconds`` (how the benchmark sizes its windows)."""
    for i in range(warmup):
        step(i)
    sync(device)
    t0 = time.perf_counter()
    i = warmup
    while (i - warmup < steps) if steps is not None else (time.perf_counter() - t0 < seconds or i - warmup < 8):
        step(i)
        i += 1
    sync(device)
    return time.perf_counter() - t0, i - warmup


def distgan_loader(images: Tensor, batch: int, batches: int, device: torch.device) -> tuple[float, int]:
    """Seconds for ``batches`` float batches from distgan's loader, epochs redrawn as needed."""
    held = DeviceImages(images, device)
    per_epoch = len(held) // batch
    idx = None

    def step(i: int) -> None:
        nonlocal idx
        if i % per_epoch == 0:
            idx = shard(epoch_permutation(len(held), 0, i // per_epoch), batch, 1, 0).to(device)
        held.batch(idx[i % per_epoch]).sum()  # consume it, as a model would

    return timed(step, 2, batches, device)


def tutorial_batches(root: str, batch: int, workers: int):
    """The tutorial pipeline: torchvision MNIST, ToTensor, a shuffled DataLoader; cycles over epochs."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    dataset = datasets.MNIST(root, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    while True:
        yield from loader


def dataloader(root: str, batch: int, batches: int, workers: int, device: torch.device) -> tuple[float, int]:
    it = tutorial_batches(root, batch, workers)
    return timed(lambda i: next(it)[0].to(device).sum(), 2, batches, device)


def build(cfg: config.Config, device: torch.device):
    torch.manual_seed(cfg.train.seed)
    G, D = models.build_pair(cfg.model)
    return G.to(device), D.to(device)


def plain_loop(
    cfg: config.Config, images: Tensor, device: torch.device, warmup: int, steps: int | None, seconds: float
) -> tuple[float, int]:
    """The same update as distgan's (D on cat(real, fake) or separately, smoothed labels, lazy R1, EMA, fused
    Adam), written as one hand-made loop on device tensors, with no logging, checks or launcher."""
    G, D = build(cfg, device)
    precision = cfg.train.mixed_precision or "no"
    opt_g, opt_d = make_adam(G, cfg.optim.g, precision != "fp16"), make_adam(D, cfg.optim.d, precision != "fp16")
    ema = [p.detach().clone() for p in G.parameters()] if cfg.model.ema_decay else None
    separate = cfg.train.d_forward == "separate" or (cfg.train.d_forward == "auto" and couples_batch(D))
    B, z_dim, t = cfg.train.batch_size, cfg.model.z_dim, cfg.train
    held = images.to(device)
    order = torch.randperm(len(held), device=device)

    def targets(lo_hi: tuple[float, float]) -> Tensor:
        return torch.empty(B, device=device).uniform_(*lo_hi)

    def penalty(real_l: Tensor, real: Tensor) -> Tensor:
        """Lazy R1, weighted by how rarely it runs."""
        return cfg.loss.r1_every * losses.r1(real, real_l, cfg.loss.r1_gamma)

    def step(i: int) -> None:
        for k in range(t.d_steps):
            start = ((i * t.d_steps + k) * B) % (len(held) - B + 1)
            real = held[order[start : start + B]].unsqueeze(1).float().div_(255)
            z = torch.randn(B, z_dim, device=device)
            real_t, fake_t = targets(cfg.loss.real_label), targets(cfg.loss.fake_label)
            r1 = cfg.loss.r1_gamma > 0 and (i * t.d_steps + k) % cfg.loss.r1_every == 0
            real.requires_grad_(r1)
            opt_d.zero_grad(set_to_none=True)
            with autocast(device, precision):
                with torch.no_grad():
                    fake = G(z).to(real.dtype)
                if separate:
                    real_l = D(real).float()
                    loss = losses.d_term(cfg.loss.d, real_l, real_t)
                    (loss + penalty(real_l, real) if r1 else loss).backward()
                    losses.d_term(cfg.loss.d, D(fake).float(), fake_t).backward()
                else:
                    real_l, fake_l = D(torch.cat([real, fake])).float().split([B, B])
                    loss = losses.d_loss(cfg.loss.d, real_l, fake_l, real_t, fake_t)
                    (loss + penalty(real_l, real) if r1 else loss).backward()
            opt_d.step()
        for _ in range(t.g_steps):
            D.requires_grad_(False)
            opt_g.zero_grad(set_to_none=True)
            with autocast(device, precision):
                losses.g_loss(cfg.loss.g, D(G(torch.randn(B, z_dim, device=device))).float()).backward()
            D.requires_grad_(True)
            opt_g.step()
            if ema is not None:
                torch._foreach_lerp_(ema, [p.detach() for p in G.parameters()], 1 - cfg.model.ema_decay)

    return timed(step, warmup, steps, device, seconds)


def tutorial_loop(
    cfg: config.Config, root: str, device: torch.device, warmup: int, steps: int, workers: int
) -> tuple[float, int]:
    """The classic tutorial: DataLoader batches, D on real then on fake.detach(), G through D on the same
    fake, hard labels, no R1 penalty, torch.optim.Adam with its defaults, both losses read with ``.item()``
    every step.
    Like the plain loop, a rival without accelerate: its bare ``backward()`` calls are the point."""
    G, D = build(cfg, device)
    precision = cfg.train.mixed_precision or "no"
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.g.lr, betas=cfg.optim.g.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.optim.d.lr, betas=cfg.optim.d.betas)
    criterion = torch.nn.BCEWithLogitsLoss()
    batches = tutorial_batches(root, cfg.train.batch_size, workers)
    history = []

    def step(i: int) -> None:
        real = next(batches)[0].to(device)
        ones = torch.full((len(real),), 1.0, device=device)
        zeros = torch.zeros(len(real), device=device)
        with autocast(device, precision):
            D.zero_grad()
            err_real = criterion(D(real).float(), ones)
            err_real.backward()
            fake = G(torch.randn(len(real), cfg.model.z_dim, device=device))
            err_fake = criterion(D(fake.detach()).float(), zeros)
            err_fake.backward()
            opt_d.step()
            G.zero_grad()
            err_g = criterion(D(fake).float(), ones)
            err_g.backward()
            opt_g.step()
        history.append((err_real.item() + err_fake.item(), err_g.item()))

    return timed(step, warmup, steps, device)
