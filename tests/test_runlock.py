"""One live trainer per run folder (distgan.runlock), with real processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distgan.runlock import RunInUse, RunLock
from tests.conftest import REPO, environment


def start(tmp_path: Path, *extra: str, wait: float = 1.0, log: Path | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "distgan.train", "--config", "configs/default.yaml", "data.dataset=synthetic"]
    args += ["train.epochs=1000", "train.threads=1", f"output.dir={tmp_path}", "output.name=r"]
    args += ["output.tracker=none", "eval.every_epochs=0", "model.ema_bn_samples=256", *extra]
    env = environment({"DISTGAN_LOCK_WAIT": str(wait)})
    out = subprocess.PIPE if log is None else log.open("w")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def until(check, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.2)


def holder(run: Path) -> str:
    try:
        return (run / ".lock").read_text()
    except FileNotFoundError:  # between two holders
        return ""


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_second_trainer_is_refused_while_the_first_lives_and_a_waiting_one_takes_over(tmp_path):
    run = tmp_path / "r"
    first, third = start(tmp_path, log=tmp_path / "first.log"), None
    try:
        until(lambda: (run / "checkpoints" / "latest").is_file())  # trained and saved an epoch
        second = start(tmp_path, "--resume", "auto", wait=1.0)
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 1, out[-2000:]
        assert f"is in use by pid {first.pid}" in out and "one trainer per run folder" in out
        assert "Traceback" not in out
        assert first.poll() is None, "the first trainer was disturbed"

        # a requeued job whose predecessor is still stopping: it waits, then continues the run
        log = tmp_path / "third.log"
        third = start(tmp_path, "--resume", "auto", wait=120.0, log=log)
        until(lambda: "waiting up to 120 s" in log.read_text())
        first.send_signal(signal.SIGTERM)  # checkpoints and exits
        assert first.wait(timeout=120) == 128 + signal.SIGTERM  # stopped cleanly, with a checkpoint
        until(lambda: f'"pid": {third.pid}' in holder(run))
        third.send_signal(signal.SIGTERM)
        assert third.wait(timeout=120) == 128 + signal.SIGTERM
        # first's last save, on its way out, by its own word (third may have saved since: not `latest`)
        stopped = re.search(
            r"stopped by signal 15 at step (\d+) with a checkpoint", (tmp_path / "first.log").read_text()
        )
        out = log.read_text()
        assert stopped and f" at step {stopped.group(1)} (epoch" in out, out[
            -2000:
        ]  # the newest, not the one seen before
        assert re.search(rf"resuming {re.escape(str(run))}/checkpoints/\S+ at step {stopped.group(1)} ", out)
    finally:
        for p in (first, third):
            if p is not None and p.poll() is None:
                p.kill()
    steps = [r["step"] for r in rows(run) if "loss_d" in r]
    assert steps == sorted(set(steps)), "two writers interleaved metrics.jsonl"


def test_a_lock_whose_holder_died_is_free(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from distgan.runlock import RunLock; "
            "RunLock.acquire(Path(sys.argv[1]), wait=0); print('held', flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        cwd=REPO,
        env=environment(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUse, match=f"pid {holder.pid} on .* since "):
            RunLock.acquire(tmp_path, wait=0.3, log=lambda m: None)
    finally:
        holder.kill()  # kill -9: no cleanup runs
        holder.wait()
    lock = RunLock.acquire(tmp_path, wait=0, log=lambda m: None)  # the kernel released the dead holder's lock
    lock.release()
