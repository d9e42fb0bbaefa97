"""Models: shapes, logits, registry errors, and the weight sizes the blog and the README state."""

from __future__ import annotations

import re

import pytest
import torch

from distgan import config, models
from distgan.config import ConfigError
from tests.conftest import REPO
from tests.model_checks import assert_returns_logits, readme_table, size_as_shown


@pytest.mark.parametrize("name", sorted(models.GENERATORS))
def test_generator_shapes_and_range(name):
    torch.manual_seed(0)
    z_dim = 784 if name == "v1_g" else 16  # v1's G takes z as a 28x28 noise image
    G = models.build_generator(name, z_dim=z_dim).eval()
    x = G(torch.randn(5, z_dim))
    assert x.shape == (5, 1, 28, 28)
    assert x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("name", sorted(models.DISCRIMINATORS))
def test_discriminator_returns_one_logit_per_image(name):
    """Every registered D: one float32 value per image, and a logit (no sigmoid or other bound after its last
    layer), as the README's "Every D returns logits" and the losses on logits need."""
    torch.manual_seed(0)
    D = models.build_discriminator(name).eval()
    out = D(torch.rand(5, 1, 28, 28))
    assert out.shape == (5,)
    assert out.dtype == torch.float32
    assert_returns_logits(D)


CONFIGURED = [config.load(p).model for p in sorted((REPO / "configs").glob("*.yaml"))]
"""Every config's model section."""


def built_as_configured(name: str) -> list[torch.nn.Module]:
    """``name`` as each config in configs/ that uses it builds it (its z_dim and args); a model no config uses,
    as the built-in defaults (``config.ModelConfig``) build it."""
    kind = "g" if name in models.GENERATORS else "d"
    uses = [m for m in CONFIGURED if getattr(m, kind) == name] or [config.ModelConfig(**{kind: name})]
    if kind == "g":
        return [models.build_generator(name, m.z_dim, m.g_args) for m in uses]
    return [models.build_discriminator(name, m.d_args) for m in uses]


MODELS_TABLE = readme_table("Models")


def test_the_readme_models_table_lists_every_registered_model():
    listed = [n for row in MODELS_TABLE for n in re.findall(r"`(\w+)`", row["name"])]
    assert sorted(listed) == sorted([*models.GENERATORS, *models.DISCRIMINATORS])


@pytest.mark.parametrize("row", MODELS_TABLE, ids=[r["name"].replace("`", "") for r in MODELS_TABLE])
def test_weight_sizes_match_the_readme_models_table(row):
    """Each row's float32 weights (before any '(blog: ...)' note), at the README's own precision, against each
    of its models as every config that uses it builds it."""
    names = re.findall(r"`(\w+)`", row["name"])
    shown = re.findall(r"\d+(?:\.\d+)? [KM]B", row["float32 weights"].partition("(")[0])
    assert len(shown) == len(names), f"{names}: sizes {shown}"
    for name, size in zip(names, shown, strict=True):
        for module in built_as_configured(name):
            assert size_as_shown(models.weight_bytes(module), size) == size, f"{name}: {models.weight_bytes(module)} B"


# The blog's figures (../shared/seed/DIGEST.md): saved weights of each network, float32.
BLOG_SIZES = {("g", "final_g"): 40e6, ("d", "final_d"): 5.35e3, ("g", "ref_g"): 1e6, ("d", "ref_d"): 40e6}


@pytest.mark.parametrize("kind, name", sorted(BLOG_SIZES))
def test_weight_sizes_match_the_blog_within_25_percent(kind, name):
    module = models.build_generator(name, 100) if kind == "g" else models.build_discriminator(name)
    size = models.weight_bytes(module)
    assert 0.75 <= size / BLOG_SIZES[(kind, name)] <= 1.25, f"{name}: {size} bytes"


def test_final_d_is_two_convs_and_one_linear():
    D = models.build_discriminator("final_d")
    kinds = [type(m).__name__ for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert kinds == ["Conv2d", "Conv2d", "Linear"]
    assert any(isinstance(m, torch.nn.Dropout) for m in D.modules())


def test_ref_d_has_batchnorm1d_and_no_dropout():
    D = models.build_discriminator("ref_d")
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in D.modules())
    assert not any(isinstance(m, torch.nn.Dropout) for m in D.modules())


def test_constructor_errors_become_config_errors():
    with pytest.raises(ConfigError, match="shrink 28x28"):
        models.build_discriminator("dcgan_d", {"channels": [8] * 6, "padding": 0})


def test_init_is_reproducible_from_the_seed():
    torch.manual_seed(3)
    a = models.build_generator("dcgan_g", 8).state_dict()
    torch.manual_seed(3)
    b = models.build_generator("dcgan_g", 8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fully_convolutional_g_refuses_a_latent_that_is_not_an_image():
    with pytest.raises(ConfigError, match="set model.z_dim=784"):
        models.build_generator("v1_g", 100)


def test_ema_follows_the_exponential_moving_average_after_its_warm_up():
    from distgan.steps import EMA

    G = torch.nn.Linear(2, 1)
    ema = EMA(G, decay=0.9)
    start = G.weight.detach().clone()
    with torch.no_grad():
        G.weight.add_(1.0)
    ema.update()  # warm-up: the first update keeps only 2/11 of the old average
    assert torch.allclose(ema.model.weight, (2 / 11) * start + (9 / 11) * (start + 1.0))
    ema.updates = 1000  # past the warm-up: the configured decay
    before = ema.model.weight.detach().clone()
    ema.update()
    assert torch.allclose(ema.model.weight, 0.9 * before + 0.1 * G.weight)
    assert not ema.model.weight.requires_grad and not ema.model.training
