"""Every version of the blog as a config: it validates, builds, trains; the D:G ratio counts right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distgan import config, models
from tests.conftest import REPO, tiny_overrides

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
VERSIONS = ["v1", "v2", "v3.0", "v3.1", "v3.2", "v3.2b", "v4.0", "v4.1", "v5", "final", "default"]


def test_every_version_of_the_blog_has_a_config():
    assert sorted(p.stem for p in CONFIGS) == sorted(VERSIONS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_its_models(path):
    cfg = config.load(path)
    G, D = models.build_pair(cfg.model)
    G.eval(), D.eval()
    with torch.no_grad():
        x = G(torch.randn(2, cfg.model.z_dim))
        assert x.shape == (2, 1, 28, 28)
        assert D(x).shape == (2,)


def flat(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}"""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed(a: str, b: str) -> set[str]:
    """The training keys that differ (each version's ``claim``, what the blog says of it, always does)."""
    x, y = (flat(config.load(REPO / "configs" / f"{n}.yaml").to_dict()) for n in (a, b))
    return {k for k in x if x[k] != y[k] and not k.startswith("claim.")}


def test_versions_differ_only_by_what_the_blog_changed():
    """v3.1 is v3.0 with G's loss and the ratio changed; v4.1 is v4.0 with another D."""
    assert changed("v3.0", "v3.1") == {"name", "loss.g", "train.g_steps"}
    assert changed("v4.0", "v4.1") == {"name", "model.d"}


def run(tmp_path: Path, name: str, *extra: str, config_file: str = "configs/default.yaml") -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "distgan.train", "--config", config_file, *tiny_overrides(tmp_path, name), *extra],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / name


@pytest.mark.real_data
@pytest.mark.parametrize("d_steps, g_steps", [(1, 1), (2, 1), (1, 3)])
def test_update_counts_over_an_epoch_per_ratio(mnist_root, tmp_path, d_steps, g_steps):
    """An epoch is one pass of D over the data: d_steps real batches per step, g_steps G updates per step."""
    batches = 4096 // 256  # data.limit / batch_size
    run_dir = run(
        tmp_path,
        "r",
        "data.limit=4096",
        "train.batch_size=256",
        "train.epochs=1",
        f"train.d_steps={d_steps}",
        f"train.g_steps={g_steps}",
        "model.g_args={hidden: [32]}",
        "model.d_args={hidden: [32]}",
    )
    counters = json.loads((run_dir / "checkpoints" / "epoch-001" / "state.json").read_text())["counters"]
    steps = batches // d_steps
    assert counters["step"] == steps
    assert counters["d_updates"] == steps * d_steps
    assert counters["g_updates"] == steps * g_steps
    assert counters["nimg"] == steps * d_steps * 256


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_trains_a_step(mnist_root, tmp_path, version):
    """In CI: one full step of each version (v1's step holds 200 G updates)."""
    run_dir = run(tmp_path, version, "train.max_steps=1", "data.limit=256", config_file=f"configs/{version}.yaml")
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_d" in r for r in rows)


@pytest.mark.versions
@pytest.mark.real_data
@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_trains_one_epoch(mnist_root, tmp_path, version):
    """make versions-smoke: one epoch of each version on a 512-image subset (batch 128, so 4 D steps)."""
    run_dir = run(
        tmp_path,
        version,
        "train.epochs=1",
        "data.limit=512",
        "train.batch_size=128",
        config_file=f"configs/{version}.yaml",
    )
    assert (run_dir / "checkpoints" / "epoch-001" / "model.safetensors").is_file()
