"""Distributed correctness on CPU (gloo, 2 processes on 2 cores): a correctness test, not a speed-up.

Each PITFALLS trap has a test here: mis-launch, D gradients during the G step, per-rank noise,
shard disjointness, rank agreement, one writer, world-size invariance, clean exit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distgan.config import load as load_config
from distgan.dist import free_port
from distgan.steps import STEP_KEYS
from tests.conftest import BIN, REPO, distgan_frames, launch, python, run, tiny_overrides

# A config without BatchNorm or Dropout: its trajectory may depend on the world size only through float
# reduction order.
BN_FREE = [
    "model.g=mlp_g",
    "model.d=mlp_d",
    "model.g_args={hidden: [128, 256], batchnorm: false}",
    "model.d_args={hidden: [256, 128]}",
]


def events(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss_d" not in r]


def step_rows(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss_d" in r]


@pytest.mark.slow
@pytest.mark.real_data
def test_two_processes_shard_agree_and_write_once(mnist_root, tmp_path):
    overrides = tiny_overrides(
        tmp_path,
        "two",
        **{"output.tracker": "wandb", "train.batch_size": 2048, "train.epochs": 2, "train.threads": "null"},
    )
    proc = launch(["--config", "configs/default.yaml", *overrides])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    run = tmp_path / "two"
    assert [p.name for p in tmp_path.iterdir()] == ["two"], "exactly one run folder"

    shard_events = [e["shards"] for e in events(run) if "shards" in e]
    assert len(shard_events) == 2  # one per epoch
    for s in shard_events:  # gathered from both ranks by the run itself
        assert s["ranks"] == 2 and s["per_rank"] == (60000 // 2048) * 1024
        assert s["distinct"] == 2 * s["per_rank"] == 60000 - 60000 % 2048  # disjoint, and covering

    for epoch in (1, 2):
        state = json.loads((run / "checkpoints" / f"epoch-{epoch:03d}" / "state.json").read_text())
        sums = state["counters"]["rank_checksums"]
        assert len(sums) == 2 and sums[0] == sums[1], "weights identical across ranks at each checkpoint"
        # ... and the checksums are of the weights saved (sum and sum of squares of every tensor, float64)
        saved = load_file(run / "checkpoints" / f"epoch-{epoch:03d}" / "model.safetensors").values()
        assert sums[0] == pytest.approx(
            sum(float(t.double().sum() + t.double().square().sum()) for t in saved), rel=1e-9
        )
        assert state["config"]["train"]["threads"] == 1  # 2 cores / 2 local processes

    assert len(list((run / "wandb").glob("offline-run-*"))) == 1, "exactly one W&B run"


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(next((run / "checkpoints").glob("step-*")) / "model.safetensors")


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize(
    ("config", "nproc", "per_rank", "bound"),
    [  # the README's measured figures: 6.2e-6 (1 x 64 against 2 x 32) and 1.8e-5 (1 x 96 against 3 x 32)
        ("default", 2, 32, 2e-5),
        ("default", 3, 32, 5e-5),
    ],
)
def test_world_size_invariance(mnist_root, tmp_path, config, nproc, per_rank, bound):
    """1 process at the global batch against N at batch / N, 20 steps on MNIST, in the float32 users train
    in: the same weights, BatchNorm statistics (running and the EMA's recomputed ones). Every shipped config
    is compared in float64 below (float32 measured here once: v4.0 7.3e-7, v4.1 2.3e-6, final 7.9e-7)."""
    common = [
        "--config",
        f"configs/{config}.yaml",
        "train.max_steps=20",
        f"train.batch_size={nproc * per_rank}",
        "data.limit=2048",
        "train.mixed_precision=no",
    ]
    one = python("distgan.train", *common, *tiny_overrides(tmp_path, "one", **{"train.threads": 1}))
    assert one.returncode == 0, one.stderr[-3000:]
    many = launch([*common, *tiny_overrides(tmp_path, "many", **{"train.threads": 1})], nproc=nproc)
    assert many.returncode == 0, many.stderr[-3000:]
    assert "Grad strides do not match" not in many.stderr
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "many")
    weights = max((a[k] - b[k]).abs().max().item() for k in a if "running" not in k)
    stats = (
        max(((a[k] - b[k]).abs() / (1 + a[k].abs())).max().item() for k in a if "running" in k)
        if any("running" in k for k in a)
        else 0.0
    )
    print(
        f"{config} 1x{nproc * per_rank} vs {nproc}x{per_rank}: max |weight difference| {weights:.1e}, BatchNorm statistics {stats:.1e}"
    )
    # Without the global-batch layers: ~1e-2 (the 2.1e-2 for the default).
    assert weights <= bound and stats <= bound


SHIPPED = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
# Per config: steps and images per rank (1 x batch against 2 x batch / 2): the acceptance's 20 steps of
# 2 x 32 where the models are MLPs, 3 steps of 2 x 4 where float64 convolutions on a CPU are slow.
FLOAT64 = {"v5": (20, 32), "default": (20, 32)}


def float64_launch(args: list[str], nproc: int):
    """``accelerate launch`` (the README's CPU form) of distgan.train in float64 (tests/float64_train.py)."""
    cmd = [BIN / "accelerate", "launch", "--config_file", REPO / "launch" / "cpu_multi.yaml", "--num_processes", nproc]
    cmd += ["--main_process_port", free_port(), "-m", "tests.float64_train", *args]
    return run(cmd, env={"ACCELERATE_USE_CPU": 1}, timeout=600)


@pytest.mark.real_data
@pytest.mark.parametrize(
    "config", [c if c == "v5" else pytest.param(c, marks=pytest.mark.slow) for c in SHIPPED]
)  # make test: v5; make test-slow (CI): the other ten
def test_world_size_invariance_float64_every_shipped_config(mnist_root, tmp_path, config):
    """The design itself, free of float32 rounding: some configs amplify rounding chaotically (v5: 1 thread
    against 2 threads of ONE process end 1.5e-3 apart after 20 steps in float32), so in float32 their
    1-process and 2-process runs differ whatever the layers do. In float64 (tests/float64_train.py) the
    whole run (data, noise, models, Adam) is float64; what remains of a difference is the design's.
    Measured: v5 6.9e-12 after 20 steps (exactly 0 after 1), the others 6e-16 to 9e-15; per-process
    BatchNorm (model.sync_bn=false) 9.9e-2 (the next test)."""
    steps, per_rank = FLOAT64.get(config, (3, 4))
    # more than 3 G updates per D update (v1: 200) cut to 3: the same loop, a fraction of the time
    extra = ["train.g_steps=3"] if load_config(f"configs/{config}.yaml").train.g_steps > 3 else []
    common = ["--config", f"configs/{config}.yaml", f"train.max_steps={steps}", f"train.batch_size={2 * per_rank}"]
    common += ["data.limit=2048", "train.mixed_precision=no", *extra]
    one = python("tests.float64_train", *common, *tiny_overrides(tmp_path, "one", **{"train.threads": 2}), timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    many = float64_launch([*common, *tiny_overrides(tmp_path, "many", **{"train.threads": 1})], nproc=2)
    assert many.returncode == 0, many.stderr[-3000:]
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "many")
    assert all(t.dtype == torch.float64 for t in a.values() if t.is_floating_point()), "the run was float64"
    worst = max(((a[k] - b[k]).abs() / (1 + a[k].abs())).max().item() for k in a if a[k].is_floating_point())
    print(f"{config} float64, 1x{2 * per_rank} vs 2x{per_rank}, {steps} steps: max relative difference {worst:.1e}")
    assert worst <= 1e-7
    # The logged step rows too: losses, D's outputs and the gradient norms measured after DDP's all-reduce
    # (Adam is blind to a gradient summed over ranks instead of averaged; the norm is not). They are float32
    # (losses on float32 logits, averaged over ranks in float32): measured 1.2e-7 apart relative (v5).
    one_rows, many_rows = step_rows(tmp_path / "one"), step_rows(tmp_path / "many")
    assert [r["step"] for r in one_rows] == [r["step"] for r in many_rows] == list(range(steps))
    assert any(r["grad_norm_d"] is not None and r["grad_norm_g"] is not None for r in one_rows)
    for x, y in zip(one_rows, many_rows, strict=True):
        for key in STEP_KEYS:
            assert (x[key] is None) == (y[key] is None), (x["step"], key)
            if x[key] is not None:
                assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-9), (x["step"], key, x[key], y[key])


@pytest.mark.slow
@pytest.mark.real_data
def test_float64_invariance_test_sees_per_process_batchnorm(mnist_root, tmp_path):
    """The float64 comparison above can fail: with per-process BatchNorm statistics the runs differ."""
    common = ["--config", "configs/default.yaml", "train.max_steps=5", "train.batch_size=16", "data.limit=2048"]
    one = python("tests.float64_train", *common, *tiny_overrides(tmp_path, "one"), timeout=600)
    many = float64_launch(
        [*common, *tiny_overrides(tmp_path, "many", **{"model.sync_bn": "false", "train.threads": 1})], 2
    )
    assert one.returncode == 0 and many.returncode == 0, many.stderr[-3000:]
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "many")
    worst = max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())
    print(f"default float64, 1x16 vs 2x8 with per-process BatchNorm, 5 steps: max difference {worst:.1e}")
    assert worst > 1e-4


@pytest.mark.slow
def test_evaluation_split_over_two_processes_equals_one_process_scoring_the_same_checkpoint(tmp_path):
    """Each rank generates and classifies its share (301 samples: the last rank's share is padded); the
    gathered metrics must equal those of the evaluate CLI scoring the saved G in one process."""
    overrides = tiny_overrides(tmp_path, "ev", **{"data.dataset": "synthetic", "train.threads": 1})
    proc = launch(
        [
            "--config",
            "configs/default.yaml",
            *BN_FREE,
            *overrides,
            "train.epochs=1",
            "train.batch_size=64",
            "eval.every_epochs=1",
            "eval.samples=301",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    during = [e for e in events(tmp_path / "ev") if e.get("event") == "eval"][-1]
    out = tmp_path / "after.json"
    cli = python("distgan.evaluate", "--checkpoint", str(tmp_path / "ev"), "--num", "301", "--out", str(out))
    assert cli.returncode == 0, cli.stderr[-3000:]
    after = json.loads(out.read_text())
    assert during["samples"] == after["samples"] == 301
    assert during["class_shares"] == after["class_shares"] and during["classes_covered"] == after["classes_covered"]
    for key in ("fid", "is", "precision", "recall"):
        assert during[key] == pytest.approx(after[key], rel=1e-4, abs=1e-6), key


def test_mis_launch_fails_fast_with_the_right_command(tmp_path):
    """torchrun x2 on a CPU-only machine without ACCELERATE_USE_CPU: two processes that think they are alone."""
    if torch.cuda.is_available():
        pytest.skip("with GPUs this launch is a correct one")
    t0 = time.perf_counter()
    torchrun = [BIN / "torchrun", "--nproc_per_node", "2", "--master_port", free_port()]
    args = ["-m", "distgan.train", "--config", "configs/default.yaml", *tiny_overrides(tmp_path, "bad")]
    proc = run([*torchrun, *args, "train.max_steps=5"], env={"ACCELERATE_USE_CPU": None}, timeout=120)
    elapsed = time.perf_counter() - t0
    assert proc.returncode != 0
    assert "they would train 2 separate copies" in proc.stderr and "launch/cpu_multi.sh" in proc.stderr
    assert not (tmp_path / "bad" / "checkpoints").exists()
    assert elapsed < 60  # seconds, not a training run


@pytest.mark.parametrize(
    "launcher",
    [
        ["--cpu", "--num_processes", "2"],
        ["--num_processes", "2"],
        ["--config_file", "launch/cpu_1proc.yaml", "--num_processes", "2"],
    ],
    ids=["cpu", "no-cpu", "config-file"],
)
def test_accelerate_simple_launcher_asked_for_two_processes_is_refused(tmp_path, launcher):
    """accelerate's simple launcher runs ONE process for --num_processes 2 (without a multi-process mode);
    distgan must refuse within seconds, say what works, and leave nothing behind."""
    if torch.cuda.is_available():
        pytest.skip("with GPUs accelerate may choose its multi-GPU launcher")
    t0 = time.perf_counter()
    args = ["-m", "distgan.train", "--config", "configs/default.yaml", *tiny_overrides(tmp_path, "bad")]
    cmd = [BIN / "accelerate", "launch", *launcher, "--main_process_port", free_port(), *args, "train.max_steps=5"]
    proc = run(cmd, env={"ACCELERATE_USE_CPU": None}, timeout=120)
    elapsed = time.perf_counter() - t0
    assert proc.returncode != 0
    assert "started ONE" in proc.stderr and "launch/cpu_multi.sh" in proc.stderr, proc.stderr[-2000:]
    assert not distgan_frames(proc.stderr), "distgan's refusal is a message, not a traceback"
    assert list(tmp_path.iterdir()) == [], "a refused launch leaves no run folder"
    assert elapsed < 30


@pytest.mark.parametrize(
    "launcher", [["--cpu"], ["--config_file", "launch/cpu_1proc.yaml"], []], ids=["cpu", "config-file", "bare"]
)
def test_accelerate_one_process_launches_still_train(tmp_path, launcher):
    """The README's one-process accelerate forms are not caught by the refusal above."""
    args = ["-m", "distgan.train", "--config", "configs/default.yaml", *tiny_overrides(tmp_path, "ok")]
    proc = run(
        [BIN / "accelerate", "launch", *launcher, *args, "data.dataset=synthetic", "train.max_steps=2"], timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 1 x cpu" in proc.stdout + proc.stderr


def test_one_image_per_process_trains_with_global_batchnorm_and_is_refused_without(tmp_path):
    """batch 2 on 2 processes: BatchNorm over the global batch has 2 rows per channel and trains; each
    process alone (model.sync_bn=false) would have 1 and is refused before any folder is made."""
    common = ["--config", "configs/default.yaml", "data.dataset=synthetic", "train.max_steps=2", "train.batch_size=2"]
    ok = launch([*common, *tiny_overrides(tmp_path, "ok", **{"train.threads": 1})])
    assert ok.returncode == 0, ok.stderr[-3000:]
    bad = launch([*common, *tiny_overrides(tmp_path, "bad", **{"train.threads": 1}), "model.sync_bn=false"])
    assert bad.returncode != 0
    assert "leaves BatchNorm 1 image per process (2 processes)" in bad.stderr and "model.sync_bn=true" in bad.stderr
    assert "Expected more than 1 value per channel" not in bad.stderr
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- probes (accelerate.debug_launcher)


@pytest.mark.parametrize(
    "probe",
    [
        "g_step_leaves_d_alone",
        "separate_d_forward_with_batchnorm",
        "rank_mismatch_is_caught",
        "r1_equals_one_process_on_the_whole_batch",
        "main_failure_reaches_every_rank",
        "global_batch_step_equals_one_process",
    ],
)
def test_gan_update_under_ddp(probe):
    """Each probe runs in 2 gloo processes forked by accelerate's debug_launcher, from a fresh interpreter:
    forking this pytest process after torch's OpenMP pool started can deadlock the children."""
    proc = python("tests.ddp_probes", probe, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"probe {probe}: ok" in proc.stdout


@pytest.mark.stress
@pytest.mark.real_data
def test_two_process_recipe_never_aborts_at_exit(mnist_root, tmp_path):
    """Launches in a row; gloo once aborted 1 run in 4 with SIGABRT at exit. make test: 2, besides every other
    launch of the suite, which conftest.launch checks the same way; make test-slow (CI): 8 (a 1-in-4 abort
    would pass all 8 with probability 0.1); make stress: 20."""
    for i in range(int(os.environ.get("DISTGAN_STRESS_LAUNCHES", "2"))):
        proc = launch(["--config", "configs/default.yaml", *tiny_overrides(tmp_path, f"r{i}"), "train.max_steps=2"])
        assert proc.returncode == 0, f"launch {i}: rc={proc.returncode}\n{proc.stderr[-2000:]}"
