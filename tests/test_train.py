"""End-to-end CPU training as a user runs it: files written, seeds, checkpoints, sampling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests import wandb_reader
from tests.conftest import REPO, run_module, tiny_overrides


def train(tmp_path: Path, name: str, *extra: str, config: str = "configs/default.yaml") -> Path:
    run_module("distgan.train", "--config", config, *tiny_overrides(tmp_path, name), *extra)
    return tmp_path / name


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.mark.real_data
def test_few_step_run_writes_grid_checkpoint_metrics_and_offline_wandb(mnist_root, tmp_path):
    run = train(tmp_path, "smoke", "train.max_steps=6", "train.log_every=4", "output.tracker=wandb")
    assert (run / "config.yaml").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss_d" in r]
    assert [r["step"] for r in steps] == list(range(6))
    assert all(np.isfinite([r["loss_d"], r["loss_g"], r["d_real"], r["d_fake"]]).all() for r in steps)
    assert 0 < steps[0]["d_real"] < 1 and 0 < steps[0]["d_fake"] < 1
    # the default's lazy R1: the penalty is logged apart, on every 4th D update, positive
    assert [r["r1"] is not None for r in steps] == [s % 4 == 0 for s in range(6)]
    assert all(r["r1"] > 0 for r in steps if r["r1"] is not None)

    grid = png(run / "samples" / "step-000006.png")
    assert grid.shape == (2 * (8 * 30 + 2), 2 * (8 * 30 + 2)) and grid.dtype == np.uint8  # output.grid_scale 2

    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    state = json.loads((ckpt / "state.json").read_text())
    assert state["counters"]["step"] == 6 and state["config"]["train"]["threads"] == 2

    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, "exactly one W&B run"
    assert list(offline[0].glob("run-*.wandb")), "the offline run log"
    assert list((offline[0] / "files" / "media" / "images").glob("samples_*.png")), "the grid as a W&B image"
    run_file = next(offline[0].glob("run-*.wandb"))
    logged = wandb_reader.history(run_file)
    assert [r["_step"] for r in logged if "train/loss_d" in r] == list(range(6))
    assert [r["_step"] for r in logged if "train/r1" in r] == [0, 4]
    assert any(r.get("samples/_type") == "images/separated" for r in logged)
    assert wandb_reader.config(run_file)["train"]["batch_size"] == 256
    info = wandb_reader.run_info(run_file)  # without output.wandb_group: grouped by config, named after the folder
    assert info["group"] == "default" and info["job_type"] == "default" and info["name"] == "smoke"


@pytest.mark.real_data
def test_checkpoint_loads_alone_and_sample_regenerates_the_grid_bit_exactly(mnist_root, tmp_path):
    run = train(tmp_path, "ck", "train.max_steps=5")
    model_file = run / "checkpoints" / "step-000005" / "model.safetensors"
    tensors = load_file(model_file)  # safetensors alone, no distgan code, no pickle
    assert any(k.startswith("G.") for k in tensors) and any(k.startswith("D.") for k in tensors)
    assert any(k.startswith("G_ema.") for k in tensors)  # the default keeps an EMA of G, which grids show
    # ... whose BatchNorm statistics were recomputed for the averaged weights, from the fixed calibration noise
    from distgan import config, models
    from distgan.rng import fixed_z
    from distgan.steps import EMA

    cfg = config.load(run / "config.yaml")
    G = models.build_generator(cfg.model.g, cfg.model.z_dim, cfg.model.g_args)
    ema = EMA(G, cfg.model.ema_decay)
    ema.model.load_state_dict({k[len("G_ema.") :]: v for k, v in tensors.items() if k.startswith("G_ema.")})
    ema.calibrate(fixed_z(cfg.model.z_dim, cfg.train.seed, cfg.model.ema_bn_samples, stream="ema_bn"))
    for key, value in ema.model.state_dict().items():
        if "running_" in key:
            torch.testing.assert_close(value, tensors[f"G_ema.{key}"])
            assert not torch.allclose(value, tensors[f"G.{key}"])

    out = tmp_path / "again.png"
    run_module("distgan.sample", "--checkpoint", str(run), "--fixed-z", "--out", str(out))
    np.testing.assert_array_equal(png(out), png(run / "samples" / "step-000005.png"))

    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "distgan.sample",
            "--checkpoint",
            str(run),
            "--fixed-z",
            "--num",
            "10",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "leave --num out" in bad.stderr

    npz = tmp_path / "s.npz"
    run_module("distgan.sample", "--checkpoint", str(model_file), "--num", "100", "--seed", "0", "--out", str(npz))
    imgs = np.load(npz)["images"]
    assert imgs.shape == (100, 28, 28) and imgs.dtype == np.uint8


@pytest.mark.real_data
def test_same_seed_same_weights_fast(mnist_root, tmp_path):
    a = load_file(train(tmp_path, "a", "train.max_steps=8") / "checkpoints/step-000008/model.safetensors")
    b = load_file(train(tmp_path, "b", "train.max_steps=8") / "checkpoints/step-000008/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.real_data
def test_one_epoch_twice_gives_byte_identical_g_and_another_seed_does_not(mnist_root, tmp_path):
    """The acceptance check as written: default config, train.epochs=1, three runs."""

    def g_bytes(run: Path) -> dict[str, bytes]:
        tensors = load_file(run / "checkpoints" / "epoch-001" / "model.safetensors")
        return {k: v.numpy().tobytes() for k, v in tensors.items() if k.startswith("G.")}

    first = g_bytes(train(tmp_path, "s0a", "train.epochs=1"))
    second = g_bytes(train(tmp_path, "s0b", "train.epochs=1"))
    other = g_bytes(train(tmp_path, "s1", "train.epochs=1", "train.seed=1"))
    assert first == second
    assert first.keys() == other.keys() and first != other


def test_existing_run_folder_is_never_overwritten(mnist_root, tmp_path):
    (tmp_path / "taken" / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "taken" / "checkpoints" / "keep"
    marker.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "distgan.train", *tiny_overrides(tmp_path, "taken"), "train.max_steps=1"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 1 and "already holds a run" in proc.stderr
    assert marker.read_text() == "x"


@pytest.mark.real_data
def test_bf16_trains_on_cpu_with_float32_losses(mnist_root, tmp_path):
    """bf16 really computes in bf16 (its first losses differ from float32's by bf16 rounding, not more),
    its weights stay float32 and its losses finite."""
    runs = {p: train(tmp_path, f"p-{p}", "train.max_steps=3", f"train.mixed_precision={p}") for p in ("bf16", "no")}
    rows = {p: [json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()] for p, r in runs.items()}
    steps = {p: [r for r in rows[p] if "loss_d" in r] for p in rows}
    assert all(np.isfinite(r["loss_d"]) and np.isfinite(r["loss_g"]) for r in steps["bf16"])
    first_bf16, first_fp32 = steps["bf16"][0], steps["no"][0]  # the same weights, data and noise at step 0
    for key in ("loss_d", "d_real", "d_fake"):
        gap = abs(first_bf16[key] - first_fp32[key]) / abs(first_fp32[key])
        assert 1e-5 < gap < 5e-2, f"{key}: bf16 {first_bf16[key]} against float32 {first_fp32[key]}"
    assert "mixed_precision: bf16" in (runs["bf16"] / "config.yaml").read_text()
    weights = load_file(next((runs["bf16"] / "checkpoints").glob("step-*")) / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.mixed_precision=fp16", "fp16 is not available on the CPU"),
        ("train.batch_size=1", "leaves BatchNorm 1 image in all to take statistics over"),
        ("train.batch_size=70000", "exceeds the dataset"),
        ("train.compile=reduce-overhead", "CUDA graphs, which need a CUDA GPU"),
    ],
)
def test_settings_that_cannot_run_are_refused_before_any_folder(mnist_root, tmp_path, override, message):
    proc = subprocess.run(
        [sys.executable, "-m", "distgan.train", *tiny_overrides(tmp_path, "x"), "train.max_steps=2", override],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "ACCELERATE_USE_CPU": "1"},  # refused on a CPU, even on a machine that has a GPU
    )
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "x").exists()  # nothing left behind: the same command, fixed, can run again


def test_wandb_dashboard_holds_losses_grad_norms_speed_evaluations_and_grid(tmp_path):
    run = train(
        tmp_path,
        "dash",
        "data.dataset=synthetic",
        "train.epochs=2",
        "train.batch_size=64",
        "train.log_every=8",
        "eval.every_epochs=1",
        "eval.samples=200",
        "output.tracker=wandb",
        "output.wandb_group=my-report",
        "model.ema_decay=null",
    )
    run_file = next((run / "wandb").glob("offline-run-*/run-*.wandb"))
    logged = wandb_reader.history(run_file)
    keys = set().union(*logged)
    for key in (
        "train/loss_d",
        "train/loss_g",
        "train/d_real",
        "train/d_fake",
        "train/grad_norm_d",
        "train/grad_norm_g",
        "epoch/img_per_s",
        "epoch/seconds",
        "epoch/lr_g",
        "epoch/lr_d",
        "eval/fid",
        "eval/kid",
        "eval/is",
        "eval/classes_covered",
        "eval/precision",
        "eval/recall",
        "eval/class_shares/9",
    ):
        assert key in keys, key
    norms = [r for r in logged if "train/grad_norm_d" in r]
    assert [r["_step"] for r in norms] == list(range(0, 64, 8))  # measured on logging steps only (2 x 32 steps)
    assert all(r["train/grad_norm_d"] > 0 and r["train/grad_norm_g"] > 0 for r in norms)
    assert [r["eval/fid"] > 0 for r in logged if "eval/fid" in r] == [True, True]  # one evaluation per epoch
    assert any(r.get("samples/_type") == "images/separated" for r in logged)
    info = wandb_reader.run_info(run_file)
    assert info["name"] == "dash" and info["group"] == "my-report" and info["job_type"] == "default"
    assert {"default", "world1", "seed0", "precision-no"} <= set(info["tags"])
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [e["epoch"] for e in evals] == [1, 2] and len(evals[0]["class_shares"]) == 10


def test_tensorboard_alongside_wandb_holds_the_scalars_of_metrics_jsonl_and_the_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(
        tmp_path,
        "tb",
        "data.dataset=synthetic",
        "train.epochs=2",
        "train.batch_size=128",
        "train.log_every=4",
        "eval.every_epochs=1",
        "eval.samples=200",
        "output.tracker=wandb,tensorboard",
    )
    (folder,) = (run / "tensorboard").iterdir()  # <run>/tensorboard/<project>/
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    board = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss_d" in r]
    assert len(steps) == 32
    for key in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert board[f"train/{key}"] == pytest.approx({r["step"]: r[key] for r in steps}, rel=1e-6), key
    evals = [r for r in rows if r.get("event") == "eval"]
    for key in ("fid", "is", "precision", "recall"):
        assert board[f"eval/{key}"] == pytest.approx({r["step"]: r[key] for r in evals}, rel=1e-6), key
    assert sorted(events.Tags()["images"]) == ["samples"] and len(events.Images("samples")) == 2  # a grid per epoch
    wandb_file = next((run / "wandb").glob("offline-run-*/run-*.wandb"))
    numbers = {k for r in wandb_reader.history(wandb_file) for k, v in r.items() if isinstance(v, (int, float))}
    assert set(board) == {k for k in numbers if not k.startswith(("_", "samples"))}  # both trackers, one record


def test_wandb_that_cannot_start_is_a_warning_and_the_run_goes_on_offline(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env.update(WANDB_MODE="online", HOME=str(tmp_path / "home"))  # online, but no credentials anywhere
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distgan.train",
            "--config",
            "configs/default.yaml",
            *tiny_overrides(tmp_path, "nowb"),
            "data.dataset=synthetic",
            "train.max_steps=3",
            "output.tracker=wandb",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B did not start" in proc.stderr and "retrying offline" in proc.stderr
    assert list((tmp_path / "nowb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (tmp_path / "nowb" / "summary.json").is_file()
