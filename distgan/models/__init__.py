"""Model registry: names in configs -> pure nn.Modules, plus the blog's named presets.

Every G maps z (B, z_dim) to images (B, 1, 28, 28) in [0, 1]; every D maps images to logits (B,).
Nothing here knows about processes, devices or precision.

Presets and the blog's weight sizes (float32 bytes of parameters and buffers, ../DIGEST):
- ``final_g`` / ``final_d``: the author's own final pair, about 40 MB and 5.35 KB.
- ``ref_g`` / ``ref_d``: the reference article's pair that v5 borrows, about 1 MB and 40 MB.
Widths the blog does not give are ours, chosen so those sizes hold (a test checks them).

A layer followed by BatchNorm has no bias (:data:`NO_BIAS_BEFORE_NORM`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from distgan.errors import ConfigError, suggest
from distgan.models.conv import ConvDiscriminator, ConvGenerator, FCConvGenerator, FullyConvGenerator
from distgan.models.mlp import MLPDiscriminator, MLPGenerator

NO_BIAS_BEFORE_NORM = True
"""Every Linear / conv layer that BatchNorm follows is built without a bias. BatchNorm subtracts it, in
training and (through the running mean) in evaluation, so it computes nothing; but its gradient is
numerical noise (about 1e-9), which Adam normalises into learning-rate-sized random steps. Measured: the
default config on 1 process x 64 against 2 x 32 ended 6e-4 apart in exactly those biases (everything
else within 3e-6), which made runs depend on the world size through noise alone."""


@dataclass(frozen=True)
class Spec:
    cls: Callable[..., nn.Module]
    preset: dict = field(default_factory=dict)
    doc: str = ""


GENERATORS: dict[str, Spec] = {
    "mlp_g": Spec(MLPGenerator, doc="generic MLP generator"),
    "dcgan_g": Spec(ConvGenerator, dict(width=64), "small DCGAN generator"),
    "v1_g": Spec(FullyConvGenerator, {}, "v1: fully convolutional G on a 28x28 noise image (z_dim 784)"),
    "v2_g": Spec(FCConvGenerator, {"fc": (256,), "channels": (8,)}, "v2: two FC layers + one conv layer"),
    "v3_g": Spec(FCConvGenerator, {"fc": (256, 512), "channels": (16, 8)}, "v3: more G layers (three FC + two convs)"),
    "v4_g": Spec(
        MLPGenerator,
        {"hidden": (256, 512, 1024), "batchnorm": True, "dropout": 0.3},
        "v4.0: G rewritten as an MLP with LeakyReLU and Dropout",
    ),
    "final_g": Spec(
        MLPGenerator,
        dict(hidden=(256, 512, 1024, 2048, 2560), batchnorm=True, dropout=0.3),
        "the author's final G: deep MLP, LeakyReLU, BatchNorm1d, Dropout (~40 MB)",
    ),
    "ref_g": Spec(
        MLPGenerator,
        dict(hidden=(128, 256), batchnorm=True, dropout=0.3),
        "the reference article's G used by v5: small MLP, LeakyReLU, BatchNorm1d, Dropout (~1 MB)",
    ),
}

DISCRIMINATORS: dict[str, Spec] = {
    "mlp_d": Spec(MLPDiscriminator, doc="generic MLP discriminator"),
    "dcgan_d": Spec(
        ConvDiscriminator,
        dict(channels=(32, 64)),
        "small DCGAN discriminator",
    ),
    "v2_d": Spec(
        ConvDiscriminator,
        {"channels": (32, 64, 128), "kernel": 3, "stride": 2, "padding": 1, "fc": (256,)},
        "v1/v2: the deep D that converged too fast (three convs + two FC layers)",
    ),
    "v3_d": Spec(ConvDiscriminator, {"channels": (16,), "kernel": 4, "stride": 2, "padding": 1}, "v3: fewer D layers"),
    "v4_d": Spec(
        ConvDiscriminator,
        {"channels": (16,), "kernel": 4, "stride": 2, "padding": 1, "dropout": 0.3},
        "v4.1: v3's D rewritten with Dropout",
    ),
    "final_d": Spec(
        ConvDiscriminator,
        dict(channels=(4, 8), kernel=5, stride=2, padding=2, dropout=0.3),
        "the author's final D: two Conv2d + one Linear, Dropout (~5.35 KB)",
    ),
    "ref_d": Spec(
        ConvDiscriminator,
        dict(
            channels=(32, 64, 128),
            kernel=3,
            stride=2,
            padding=1,
            fc=(4096, 256),
            batchnorm=True,
        ),
        "the reference article's D used by v5: convs then FCs, LeakyReLU, BatchNorm1d, no dropout (~40 MB)",
    ),
}

_REGISTRIES = {"g": GENERATORS, "d": DISCRIMINATORS}


def check_spec(kind: str, name: str, args: dict) -> Spec:
    """Validate a model name and its extra constructor arguments; raise ConfigError naming the fix."""
    registry = _REGISTRIES[kind]
    if name not in registry:
        raise ConfigError(
            f"model.{kind}: unknown model '{name}'.{suggest(name, registry)} Choose from: "
            + "; ".join(f"{n} ({spec.doc})" for n, spec in registry.items())
        )
    spec = registry[name]
    params = [p for p in inspect.signature(spec.cls).parameters if p != "z_dim"]
    for key in args:
        if key not in params:
            raise ConfigError(
                f"model.{kind}_args: '{key}' is not an argument of {name}.{suggest(key, params)} "
                f"Valid: {', '.join(params)}"
            )
    return spec


def _build(kind: str, name: str, args: dict, **fixed: Any) -> nn.Module:
    spec = check_spec(kind, name, args)
    try:
        return spec.cls(**fixed, **{**spec.preset, **args})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.{kind}_args for '{name}' are invalid: {e}") from None


def build_generator(name: str, z_dim: int, args: dict | None = None) -> nn.Module:
    return _build("g", name, args or {}, z_dim=z_dim)


def build_discriminator(name: str, args: dict | None = None) -> nn.Module:
    return _build("d", name, args or {})


def build_pair(model_cfg) -> tuple[nn.Module, nn.Module]:
    """(G, D) from a ``ModelConfig``; seed the RNG before calling for a reproducible init."""
    return (
        build_generator(model_cfg.g, model_cfg.z_dim, model_cfg.g_args),
        build_discriminator(model_cfg.d, model_cfg.d_args),
    )


MAX_PARAMS = 1_000_000_000  # per network: 4 GiB of float32 weights; the blog's largest is 40 MB


def check_build(model_cfg) -> None:
    """Build both networks on the meta device (no memory, no compute): argument values of the wrong type
    or shape fail here, as a config error, not as a traceback at the start of training."""
    import torch

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a zero-width layer's warning: refused below, in words
            nets = build_pair(model_cfg)
    except ConfigError:
        raise
    except (TypeError, ValueError, RuntimeError, IndexError, OverflowError) as e:
        raise ConfigError(
            f"model: {model_cfg.g} / {model_cfg.d} cannot be built from g_args={model_cfg.g_args} "
            f"d_args={model_cfg.d_args}: {e}"
        ) from None
    for net, model in zip("gd", nets, strict=True):
        name, args = getattr(model_cfg, net), getattr(model_cfg, f"{net}_args")
        empty = [k for k, p in model.named_parameters() if p.numel() == 0]
        if empty:
            raise ConfigError(
                f"model.{net}: {name} with {net}_args={args} has an empty layer ({empty[0]}): widths must be >= 1"
            )
        count = sum(p.numel() for p in model.parameters())
        if count > MAX_PARAMS:
            raise ConfigError(
                f"model.{net}: {name} with {net}_args={args} has {count:,} parameters ({count * 16 / 2**30:,.0f} GiB with "
                f"gradients and Adam's state); distgan takes at most {MAX_PARAMS:,}: check model.z_dim and the widths"
            )


def weight_bytes(module: nn.Module) -> int:
    """Bytes of float32 weights as saved: parameters and buffers (what a checkpoint of it holds)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
