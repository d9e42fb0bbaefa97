"""One measurement per fresh process (``python -m distgan.bench --child SPEC``), launched alone or as N
ranks by accelerate, and the best of several runs with the rivals interleaved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from distgan import config, data
from distgan.bench.rivals import dataloader, distgan_loader, peak_memory, plain_loop, tutorial_loop
from distgan.dist import free_port

LAUNCH = Path(__file__).resolve().parents[2] / "launch"


def child(spec: dict) -> dict:
    """Run one measurement described by ``spec`` in this process and return its figures."""
    device = torch.device(spec["device"])
    kind = spec["kind"]
    if device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    torch.set_flush_denormal(True)  # as distgan.train does, so no rival pays for denormals
    if kind == "distgan":
        return distgan_child(spec)
    cfg = config.load(spec.get("config"), spec.get("overrides", []))
    batch, images = cfg.train.batch_size, data.load_split("mnist", spec["root"], train=True)[0]
    n = spec["steps"]
    if kind == "loader":
        seconds, n = distgan_loader(images, batch, n, device)
    elif kind == "dataloader":
        seconds, n = dataloader(spec["root"], batch, n, spec["workers"], device)
    elif kind == "plain":
        seconds, n = plain_loop(cfg, images, device, spec["warmup"], n, spec.get("seconds", 0.0))
    elif kind == "tutorial":
        seconds, n = tutorial_loop(cfg, spec["root"], device, spec["warmup"], n, spec["workers"])
    else:
        raise ValueError(f"unknown measurement {kind!r}")
    per_step = batch * (cfg.train.d_steps if kind == "plain" else 1)
    return {"seconds": seconds, "steps": n, "img_per_s": n * per_step / seconds, **peak_memory(device)}


def distgan_child(spec: dict) -> dict:
    """distgan.train on MNIST: a first epoch of warm-up, then the timed epochs, which together hold at least
    ``steps`` steps (one epoch of a ``data.limit`` subset when that fits in the training set)."""
    from distgan import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.load(spec["config"], spec.get("overrides", []))
        step_images = cfg.train.batch_size * cfg.train.d_steps
        per_epoch = min(spec["steps"], len(data.load_split("mnist", spec["root"])[0]) // step_images)
        timed_epochs = -(-spec["steps"] // per_epoch)
        overrides = [
            *spec.get("overrides", []),
            "data.dataset=mnist",
            f"data.limit={per_epoch * step_images}",
            f"data.root={spec['root']}",
            f"train.epochs={1 + timed_epochs}",
            "train.max_steps=null",
            "eval.every_epochs=0",
            "output.tracker=none",
            f"output.dir={tmp}",
            "output.name=bench",
            "output.checkpoint_every_epochs=1000",
            "output.sample_every_epochs=1000",
        ]
        if spec["device"] == "cpu":
            os.environ["ACCELERATE_USE_CPU"] = "1"
        code = train.main(["--config", spec["config"], *overrides])
        if code:
            raise SystemExit(code)
        rank = int(os.environ.get("RANK", "0"))
        memory = peak_memory(
            torch.device(spec["device"], int(os.environ.get("LOCAL_RANK", "0")))
            if spec["device"] == "cuda"
            else torch.device("cpu")
        )
        if rank:
            return {"rank": rank, **memory}
        rows = [json.loads(line) for line in (Path(tmp) / "bench" / "metrics.jsonl").read_text().splitlines()]
        timed = [r for r in rows if r.get("event") == "epoch_end" and r["epoch"] >= 2]
        seconds = sum(r["seconds"] for r in timed)
        steps = timed[-1]["step"] - per_epoch  # the steps after the warm-up epoch
        return {"rank": 0, "seconds": seconds, "steps": steps, "img_per_s": steps * step_images / seconds, **memory}


def run_child(spec: dict, procs: int = 1) -> dict:
    """Measure ``spec`` in a fresh process (or ``procs`` launched by accelerate); the main rank's figures plus
    every rank's peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result"
        args = ["-m", "distgan.bench", "--child", json.dumps(spec), "--child-out", str(out)]
        env = dict(os.environ)
        if procs == 1:
            cmd = [sys.executable, *args]
        else:
            launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(procs)]
            if spec["device"] == "cpu":  # the gloo recipe of launch/cpu_multi.sh
                env["ACCELERATE_USE_CPU"] = "1"
                launcher += ["--config_file", str(LAUNCH / "cpu_multi.yaml"), "--main_process_port", str(free_port())]
            else:
                launcher += ["--multi_gpu", "--main_process_port", str(free_port())]
            cmd = [*launcher, *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        ranks = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("result*.json"))]
    main = next(r for r in ranks if r.get("rank", 0) == 0)
    ordered = sorted(ranks, key=lambda r: r.get("rank", 0))
    main["max_rss_mb_per_rank"] = [r["max_rss_mb"] for r in ordered]
    main["cuda_peak_mb_per_rank"] = [r["cuda_peak_mb"] for r in ordered if "cuda_peak_mb" in r]
    return main


def best(specs: list[tuple[str, dict, int]], repeats: int, log) -> dict[str, dict]:
    """Each (name, spec, procs) measured ``repeats`` times, rivals interleaved; the fastest run of each."""
    results: dict[str, dict] = {}
    for r in range(repeats):
        for name, spec, procs in specs:
            got = run_child(spec, procs)
            log(
                f"  {name} (run {r + 1}/{repeats}): {got['img_per_s']:,.0f} img/s, peak RSS {got['max_rss_mb_per_rank']} MB"
            )
            if name not in results or got["img_per_s"] > results[name]["img_per_s"]:
                results[name] = got
    return results
