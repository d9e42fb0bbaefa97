"""Run many training commands at once on one machine: a comparison's runs side by side.

Each job gets a *slot*: on GPUs a set of devices (``CUDA_VISIBLE_DEVICES``: one GPU per job, or as many as
its launcher starts processes), on a CPU a share of the cores (``train.threads``, set by the caller in the
run's config, so it is recorded and part of the run's identity). A job that fails does not stop the others;
Ctrl-C (or SIGTERM) asks every running job to stop (they save a checkpoint: the trainer's signal path) and
waits for them, so the next invocation resumes each unfinished run. Progress is one line per change:
done / running / failed / waiting and an estimate of the time left.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STOP_WAIT_S = 300  # a run stopping saves a checkpoint (and may finish an evaluation)


@dataclass
class Job:
    name: str
    cmd: list[str]
    log: Path | None = None
    """Where the job's output goes; None: this terminal (one job at a time)."""
    returncode: int | None = None
    seconds: float = 0.0
    slot: tuple[str, ...] = ()
    proc: subprocess.Popen | None = field(default=None, repr=False)
    started: float = 0.0


def gpu_slots(jobs: int | None, per_job: int) -> list[tuple[str, ...]]:
    """Groups of ``per_job`` visible GPUs; ``jobs`` None: as many groups as fit."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    import torch

    ids = (
        [d for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(torch.cuda.device_count())]
    )
    groups = [tuple(ids[i : i + per_job]) for i in range(0, len(ids) - per_job + 1, per_job)]
    if not groups:
        raise ValueError(f"a run needs {per_job} GPU(s); {len(ids)} visible")
    return groups[: jobs or len(groups)]


def _eta(jobs: list[Job], slots: int) -> str:
    done = [j.seconds for j in jobs if j.returncode == 0]
    left = sum(1 for j in jobs if j.returncode is None)
    if not done or not left:
        return ""
    seconds = sum(done) / len(done) * left / max(1, min(slots, left))
    return f", about {seconds / 60:.0f} min left" if seconds >= 60 else f", about {seconds:.0f} s left"


def run_all(jobs: list[Job], slots: list[tuple[str, ...]], print_fn=print, poll: float = 0.5) -> list[Job]:
    """Run ``jobs`` at most ``len(slots)`` at a time, each with its slot's GPUs; return them with their exit
    codes. A KeyboardInterrupt (Ctrl-C), SIGTERM or any other failure here stops every running job with
    SIGTERM (the trainer saves and exits; SIGKILL after ``STOP_WAIT_S``), waits for them and is raised
    again."""
    waiting, running, free = list(jobs), [], list(slots)
    last = ""

    def status() -> None:
        nonlocal last
        done = sum(1 for j in jobs if j.returncode == 0)
        failed = sum(1 for j in jobs if j.returncode not in (None, 0))
        line = (
            f"compare: {done}/{len(jobs)} done, {len(running)} running, {failed} failed, {len(waiting)} waiting"
            + _eta(jobs, len(slots))
        )
        if line != last:
            print_fn(line)
            last = line

    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        while waiting or running:
            while waiting and free:
                job, job.slot = waiting.pop(0), free.pop(0)
                _start(job, print_fn)
                if job.proc is None:
                    free.append(job.slot)
                else:
                    running.append(job)
            status()
            time.sleep(poll)
            for job in [j for j in running if j.proc.poll() is not None]:
                job.returncode, job.seconds = job.proc.returncode, time.monotonic() - job.started
                running.remove(job)
                free.append(job.slot)
                if job.returncode:
                    where = f"; its output: {job.log}" if job.log else ""
                    print_fn(f"compare: {job.name} failed (exit code {job.returncode}){where}")
            status()
    except BaseException:
        alive = [j for j in running if j.proc.poll() is None]
        print_fn(f"compare: stopping {len(alive)} running job(s); each saves a checkpoint, the same command resumes")
        for job in alive:
            job.proc.send_signal(signal.SIGTERM)
        for job in running:
            try:
                job.returncode = job.proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.returncode = job.proc.wait()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return jobs


def _start(job: Job, print_fn) -> None:
    """Start ``job`` with its slot's GPUs; its output to its log (or this terminal). A command that cannot
    start is a failed job (exit code 127), not an error."""
    env = dict(os.environ)
    if job.slot:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(job.slot)
    try:
        out = open(job.log, "a") if job.log else None  # noqa: SIM115 (closed below; the child keeps its copy)
    except OSError as err:
        job.returncode, job.proc = 127, None
        print_fn(f"compare: cannot write {job.log} ({err})")
        return
    try:
        if out is not None:
            out.write(f"$ {shlex.join(job.cmd)}\n")
            out.flush()
        else:
            print_fn(f"compare: {shlex.join(job.cmd)}")
        job.proc = subprocess.Popen(job.cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
        job.started = time.monotonic()
    except OSError as err:
        job.returncode, job.proc = 127, None
        print_fn(f"compare: cannot run {job.cmd[0]!r} ({err})")
    finally:
        if out is not None:
            out.close()


def _raise_interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit("distgan.jobs is used by distgan.compare and distgan.blog")
