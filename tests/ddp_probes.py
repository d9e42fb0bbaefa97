"""Probes of the GAN update under DDP, each run in 2 gloo processes: python -m tests.ddp_probes NAME."""

from __future__ import annotations

import sys

import pytest
import torch


def _probe_g_step_leaves_d_alone():
    from accelerate import Accelerator
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from distgan import models
    from distgan.rng import StepNoise
    from distgan.steps import GANSteps

    acc = Accelerator()
    assert acc.num_processes == 2
    torch.manual_seed(0)
    G = models.build_generator("mlp_g", 8, {"hidden": [16], "batchnorm": False})
    D = models.build_discriminator("mlp_d", {"hidden": [16]})
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    G, D, opt_g, opt_d = acc.prepare(G, D, opt_g, opt_d)
    calls = {"G": 0, "D": 0}

    def counting(name):
        def hook(state, bucket):
            calls[name] += 1
            return allreduce_hook(state, bucket)

        return hook

    G.register_comm_hook(None, counting("G"))
    D.register_comm_hook(None, counting("D"))
    gan = GANSteps(acc, G, D, opt_g, opt_d, "bce", "bce")
    noise = StepNoise(0, 8, 8, 2, acc.process_index, acc.device)

    z, rt, ft = noise.d_step(0, (0.9, 1.0), (0.0, 0.0))
    gan.d_step(torch.rand(4, 1, 28, 28), z, rt, ft)
    assert calls["D"] > 0 and calls["G"] == 0, calls
    d_calls = calls["D"]
    for p in D.parameters():
        p.grad = None
    gan.g_step(noise.g_step(0))
    assert calls["D"] == d_calls, f"D was all-reduced during the G step: {calls}"
    assert calls["G"] > 0
    assert all(p.grad is None for p in D.parameters()), "D got gradients in the G step"
    assert all(p.requires_grad for p in D.parameters()), "D left frozen after the G step"
    # Noise differs between the two ranks (never N copies of one rank's work).
    mine = noise.g_step(7)
    both = acc.gather(mine)
    assert not torch.equal(both[:4], both[4:])
    acc.end_training()


def _probe_separate_d_forward_with_batchnorm():
    from accelerate import Accelerator

    from distgan import models
    from distgan.dist import RankMismatch, check_ranks_agree, sync_buffers
    from distgan.rng import StepNoise
    from distgan.steps import GANSteps

    acc = Accelerator()
    torch.manual_seed(0)
    G = models.build_generator("mlp_g", 8, {"hidden": [16]})
    D = models.build_discriminator("mlp_d", {"hidden": [16], "batchnorm": True})
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    G_raw, D_raw = G, D
    G, D, opt_g, opt_d = acc.prepare(G, D, opt_g, opt_d)
    gan = GANSteps(acc, G, D, opt_g, opt_d, "bce", "bce", separate_d_forward=True)
    noise = StepNoise(0, 8, 8, 2, acc.process_index, acc.device)
    for step in range(3):  # DDP's broadcast_buffers with BatchNorm: no "modified by an inplace operation"
        z, rt, ft = noise.d_step(step, (0.9, 1.0), (0.0, 0.0))
        gan.d_step(torch.rand(4, 1, 28, 28), z, rt, ft)
        gan.g_step(noise.g_step(step))
    # Parameters agree (all-reduced gradients); BatchNorm statistics were updated with each rank's own batch
    # after DDP's broadcast, so they differ until sync_buffers gives everyone rank 0's, as DDP would.
    with pytest.raises(RankMismatch):
        check_ranks_agree(acc, G=G_raw, D=D_raw)
    sync_buffers(acc, G_raw, D_raw)
    check_ranks_agree(acc, G=G_raw, D=D_raw)
    acc.end_training()


def _probe_r1_equals_one_process_on_the_whole_batch():
    """R1's double backward under DDP: two ranks of 4 images take the step one process takes on all 8."""
    import copy

    from accelerate import Accelerator

    from distgan import losses, models
    from distgan.steps import GANSteps

    acc = Accelerator()
    torch.manual_seed(0)
    G = models.build_generator("mlp_g", 8, {"hidden": [16], "batchnorm": False})
    D = models.build_discriminator("mlp_d", {"hidden": [16]})
    D_ref = copy.deepcopy(D)
    gen = torch.Generator().manual_seed(1)
    real, z = torch.rand(8, 1, 28, 28, generator=gen), torch.randn(8, 8, generator=gen)
    real_t, fake_t = torch.rand(8, generator=gen) * 0.1 + 0.9, torch.zeros(8)
    D_ddp, opt_d = acc.prepare(D, torch.optim.SGD(D.parameters(), lr=0.1))
    gan = GANSteps(acc, G, D_ddp, None, opt_d, "bce", "bce", r1_gamma=2.0)
    mine = slice(4 * acc.process_index, 4 * acc.process_index + 4)
    gan.d_step(real[mine], z[mine], real_t[mine], fake_t[mine])

    x = real.clone().requires_grad_(True)
    with torch.no_grad():
        fake = G(z)
    real_logits, fake_logits = D_ref(torch.cat([x, fake])).split([8, 8])
    (grad,) = torch.autograd.grad(real_logits.sum(), x, create_graph=True)
    loss = losses.d_loss("bce", real_logits, fake_logits, real_t, fake_t) + grad.square().flatten(1).sum(1).mean()
    loss.backward()
    with torch.no_grad():
        for p, q in zip(D_ref.parameters(), acc.unwrap_model(D_ddp).parameters(), strict=True):
            assert torch.allclose(p - 0.1 * p.grad, q, atol=1e-6), (p - 0.1 * p.grad - q).abs().max()
    acc.end_training()


def _probe_global_batch_step_equals_one_process():
    """BatchNorm statistics and Dropout masks over the global batch: two ranks of 4 images take the D and G
    steps one process takes on all 8 (SGD, so any gradient difference shows in the weights), for the
    blog's pairs with BatchNorm in G and D (v5), Dropout in D on a joint forward (v4.1), and a BatchNorm D
    under R1's double backward with the G step's mixed batches."""
    import copy

    from accelerate import Accelerator

    from distgan import models
    from distgan.globalbatch import globalize, local
    from distgan.steps import GANSteps

    acc = Accelerator()
    rank = acc.process_index
    gen = torch.Generator().manual_seed(1)
    real, z_d, z_g = (
        torch.rand(8, 1, 28, 28, generator=gen),
        torch.randn(8, 100, generator=gen),
        torch.randn(8, 100, generator=gen),
    )
    real_t, fake_t = torch.rand(8, generator=gen) * 0.1 + 0.9, torch.zeros(8)
    mine = slice(4 * rank, 4 * rank + 4)
    cases = {
        "v5 pair, separate D forward": ("ref_g", "ref_d", {"separate_d_forward": True}),
        "v4.1 pair, joint D forward": ("v4_g", "v4_d", {}),
        "v5 pair, R1 + mixed": ("ref_g", "ref_d", {"r1_gamma": 1.0, "g_step_d_norm": "mixed"}),
    }
    for case, (g, d, kwargs) in cases.items():
        torch.manual_seed(0)
        G, D = globalize(models.build_generator(g, 100)), globalize(models.build_discriminator(d))
        G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)

        def sgd(G, D):
            return torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1)

        ref = GANSteps(acc, G_ref, D_ref, *sgd(G_ref, D_ref), "bce", "bce", **kwargs)
        torch.manual_seed(5)
        with local():
            ref.d_step(real, z_d, real_t, fake_t)
            ref.g_step(z_g)
        G_ddp, D_ddp, opt_g, opt_d = acc.prepare(G, D, *sgd(G, D))
        gan = GANSteps(acc, G_ddp, D_ddp, opt_g, opt_d, "bce", "bce", **kwargs)
        torch.manual_seed(5)  # the dropout masks: drawn for the global batch by every rank
        gan.d_step(real[mine], z_d[mine], real_t[mine], fake_t[mine])
        gan.g_step(z_g[mine])
        for name, a, b in (("G", G_ref, G), ("D", D_ref, D)):
            for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
                worst = ((x.double() - y.double()).abs() / (1 + x.double().abs())).max().item()
                assert worst < 1e-5, f"{case}: {name}.{key} differs by {worst:.2e} (relative) from one process"
    acc.end_training()


def _probe_rank_mismatch_is_caught():
    from accelerate import Accelerator

    from distgan.dist import RankMismatch, check_ranks_agree

    acc = Accelerator()
    D = torch.nn.Linear(3, 1)
    torch.nn.init.constant_(D.weight, float(acc.process_index))
    try:
        check_ranks_agree(acc, D=D)
    except RankMismatch as e:
        assert "different D weights" in str(e)
    else:
        raise AssertionError("differing weights were not detected")
    acc.end_training()


def _probe_main_failure_reaches_every_rank():
    from accelerate import Accelerator

    from distgan.dist import MainProcessFailed, on_main

    acc = Accelerator()

    def fail():
        raise OSError("disk full")

    try:
        on_main(acc, fail)
    except OSError as e:
        assert acc.is_main_process and "disk full" in str(e)
    except MainProcessFailed as e:
        assert not acc.is_main_process and "OSError: disk full" in str(e)
    else:
        raise AssertionError("a failure on the main process went unnoticed")
    assert on_main(acc, lambda: 7) == (7 if acc.is_main_process else None)
    acc.end_training()


PROBES = {
    "g_step_leaves_d_alone": _probe_g_step_leaves_d_alone,
    "separate_d_forward_with_batchnorm": _probe_separate_d_forward_with_batchnorm,
    "rank_mismatch_is_caught": _probe_rank_mismatch_is_caught,
    "global_batch_step_equals_one_process": _probe_global_batch_step_equals_one_process,
    "r1_equals_one_process_on_the_whole_batch": _probe_r1_equals_one_process_on_the_whole_batch,
    "main_failure_reaches_every_rank": _probe_main_failure_reaches_every_rank,
}

if __name__ == "__main__":
    from accelerate import debug_launcher

    name = sys.argv[1]
    debug_launcher(PROBES[name], num_processes=2)
    print(f"probe {name}: ok")
