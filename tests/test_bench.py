"""Speed features: the benchmark command, torch.compile behind train.compile, a step loop that never waits.

Speed itself is never asserted here (shared machines are noisy): the benchmark prints figures and
ratios; these tests check that it measures what it says, and that the fast paths compute the same thing.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, run, run_module, tiny_overrides


def rows(run, event=None):
    out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in out if (r.get("event") == event if event else "loss_d" in r)]


# `python -m distgan.train ARGS`, then what torch._dynamo compiled in that process (its counters, as JSON)
TRAIN_AND_COUNT = """
import json, sys
from torch._dynamo.utils import counters
from distgan import train
code = train.main(sys.argv[1:])
print("dynamo counters: " + json.dumps({k: dict(v) for k, v in counters.items() if v}))
sys.exit(code)
"""


def train_counting_compiles(tmp_path: Path, name: str, *extra: str) -> tuple[Path, dict]:
    """A tiny default-config run and the torch._dynamo counters of its process."""
    args = ["--config", "configs/default.yaml", *tiny_overrides(tmp_path, name), *extra]
    proc = run([sys.executable, "-c", TRAIN_AND_COUNT, *args], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("dynamo counters: ")]
    return tmp_path / name, json.loads(line.split(": ", 1)[1])


@pytest.mark.slow
def test_compiled_training_computes_what_eager_training_computes(tmp_path):
    """train.compile=default (inductor, through accelerate) on the CPU really compiles G and D (torch._dynamo
    captured their graphs and inductor built them; the eager run compiled nothing) and gives the losses and
    weights of eager training to float32 rounding, so a user can switch it on without changing their results
    beyond that."""
    # without the default's R1 penalty (its double backward is what torch.compile cannot do: refused, tested),
    # at batch 64 and lr 2e-4: the default's 256 and 8e-4 grow float32 rounding faster
    common = ("data.dataset=synthetic", "train.max_steps=6", "train.log_every=1", "loss.r1_gamma=0")
    common += ("train.batch_size=64", "optim.g.lr=2.0e-4", "optim.d.lr=2.0e-4")
    eager, eager_counts = train_counting_compiles(tmp_path, "eager", *common, "train.compile=no")
    compiled, counts = train_counting_compiles(tmp_path, "compiled", *common, "train.compile=default")
    assert eager_counts == {}, eager_counts  # eager: dynamo never ran
    assert counts.get("stats", {}).get("unique_graphs", 0) >= 2, counts  # G's and D's forwards at least
    assert counts["frames"]["ok"] >= 2 and counts.get("inductor"), counts  # compiled, by inductor
    assert "compile: default" in (compiled / "config.yaml").read_text()
    a, b = rows(eager), rows(compiled)
    assert len(a) == len(b) == 6
    # Measured (2 cores, AMD EPYC, torch 2.14): the losses differ by at most 1.2e-7 relative (one float32 ulp),
    # the weights after 6 Adam steps by at most 1.1e-6 (G_ema's first layer; |w| <= 0.13). Bounds ~10x that, as
    # inductor's kernels (and so their rounding) differ across CPUs.
    for key in ("loss_d", "loss_g", "d_real", "d_fake"):
        np.testing.assert_allclose([r[key] for r in b], [r[key] for r in a], rtol=1.5e-6, atol=1e-9, err_msg=key)
    wa = load_file(next((eager / "checkpoints").glob("step-*")) / "model.safetensors")
    wb = load_file(next((compiled / "checkpoints").glob("step-*")) / "model.safetensors")
    assert wa.keys() == wb.keys()  # no _orig_mod. prefixes: a compiled run's checkpoint loads like any other
    for k in wa:
        np.testing.assert_allclose(wb[k].double().numpy(), wa[k].double().numpy(), rtol=0, atol=1e-5, err_msg=k)


def torch_process_anon_mb() -> float:
    """The anonymous resident memory (MB) of a fresh process that only imports torch: what every process that
    imports torch holds besides its mapped files. Not its whole RSS, whose file-backed share grows with what
    the page cache holds of torch's libraries (measured 509 to 599 MB here, where its anonymous share stays
    286 MB)."""
    code = "import re, torch; print(re.search(r'RssAnon:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))"
    proc = run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout) / 1024


def machine_memory_mb() -> float:
    kb = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1)
    return int(kb) / 1024


@pytest.mark.slow
@pytest.mark.real_data
def test_bench_measures_every_rival_and_writes_its_tables(mnist_root, tmp_path):
    """A few steps of `python -m distgan.bench`: the loaders, distgan / plain / tutorial loops, 1 and 2
    processes, peak memory, JSON and Markdown. Figures must be positive and the ratios their quotients."""
    out = tmp_path / "bench"
    args = ["--configs", "configs/default.yaml", "--device", "cpu", "--batch-size", "64", "--steps", "6"]
    args += ["--warmup", "2", "--repeats", "1", "--procs", "1,2", "--root", str(mnist_root), "--out", str(out)]
    run_module("distgan.bench", *args, "--compile")  # the README's line: the default's R1 cannot compile
    report = json.loads((out / "bench.json").read_text())
    assert [r["name"].split(" (")[0] for r in report["loader"]] == ["torchvision DataLoader"] * 2 + ["distgan"]
    (row,) = report["training"]
    assert row["steps"] == 6
    for rival in ("distgan", "plain", "tutorial_w0", "tutorial_w2"):
        got = row[rival]
        assert got["steps"] >= 6, got
        # the figure is what was timed: every rival's images over its own seconds
        assert got["img_per_s"] == pytest.approx(got["steps"] * 64 / got["seconds"], rel=1e-3), (rival, got)
    one, two = report["procs"]
    assert (one["procs"], two["procs"]) == (1, 2) and len(two["max_rss_mb_per_rank"]) == 2
    assert one["img_per_s"] == row["distgan"]["img_per_s"]
    text = (out / "BENCHMARKS.md").read_text()
    ratio = row["distgan"]["img_per_s"] / row["plain"]["img_per_s"]
    assert f"{ratio:.3f}x" in text and re.search(r"Machine: .+ cores", text)
    assert row["compiled"] == {"skipped": "R1 penalty (double backward) does not compile"}
    assert "R1 penalty (double backward) does not compile" in text

    # Peak memory: every measured process imported torch and read the whole MNIST training set (60,000 uint8
    # images of 28x28; the loaders and loops hold it, distgan.train's child counts it), so its peak RSS is at
    # least a bare torch process's anonymous memory plus those bytes, and at most the machine's memory.
    floor = torch_process_anon_mb() + 60_000 * 28 * 28 / 2**20
    peaks = {r["name"]: r["max_rss_mb"] for r in report["loader"]}
    peaks.update({rival: row[rival]["max_rss_mb"] for rival in ("distgan", "plain", "tutorial_w0", "tutorial_w2")})
    peaks.update({f"2 processes, rank {i}": mb for i, mb in enumerate(two["max_rss_mb_per_rank"])})
    assert all(floor <= mb <= machine_memory_mb() for mb in peaks.values()), (floor, peaks)
    assert len(set(peaks.values())) > 1, peaks  # measured per process, not one figure for all


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_step_loop_never_waits_for_the_gpu():
    """Between metrics flushes a step (batch, noise, labels, D and G updates, the default's lazy R1, EMA, the
    step buffer) issues no host-device synchronisation: CUDA's sync debug mode turns any into an error. It
    drives the trainer's own step function, wired as the trainer wires it (GANSteps.from_config)."""
    from accelerate import Accelerator

    from distgan import config, models
    from distgan.batches import DeviceImages
    from distgan.steps import GANSteps
    from distgan.tracking import StepBuffer

    cfg = config.load(REPO / "configs/default.yaml", ["train.batch_size=64"])
    accelerator = Accelerator(mixed_precision="bf16")
    G, D = models.build_pair(cfg.model)
    gan = GANSteps.from_config(accelerator, G, D, cfg, total_steps=16)
    images = DeviceImages(torch.randint(0, 256, (1024, 28, 28), dtype=torch.uint8), accelerator.device)
    idx = torch.randperm(1024, device=accelerator.device).view(16, 1, 64)  # (steps, d_steps, batch)
    buffer = StepBuffer(accelerator.device, 16)

    def step(s: int) -> None:
        buffer.add(s, gan.step(s, lambda k: images.batch(idx[s, k]), measure=False))

    step(0)  # first-call work (cuBLAS handles, allocator) may sync; the steady state may not
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for s in range(1, 16):
            step(s)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert buffer.full()
