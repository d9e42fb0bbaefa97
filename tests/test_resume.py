"""Never lose a run: exact resume after kill -9 or a signal (1 and 2 processes), NaN guard, interrupted saves."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distgan import checkpoint
from distgan.dist import free_port
from tests import wandb_reader
from tests.conftest import REPO, distgan_frames, environment, launch, python, tiny_overrides
from tests.conftest import run as run_command
from tests.test_train import train as run_training

# MNIST subset, an MLP G with BatchNorm and Dropout (so RNG state matters), EMA, evaluation every 2 epochs:
# every piece of state a resume must restore. 4 epochs of 64 steps.
SETUP = [
    "--config",
    "configs/default.yaml",
    "data.limit=4096",
    "model.g_args={hidden: [128, 256], batchnorm: true, dropout: 0.3}",
    "model.d_args={hidden: [256, 128]}",
    "train.epochs=4",
    "train.batch_size=64",
    "train.log_every=16",
    "eval.samples=256",
    "output.keep_checkpoints=0",
]
TIMING = {"seconds", "img_per_s"}


def command(
    tmp_path: Path, name: str, nproc: int, *extra: str, setup: list[str] = SETUP, evals: int = 2
) -> tuple[list[str], dict]:
    """The user's command for ``setup`` on N processes: python -m distgan.train, or launch/cpu_multi.sh."""
    overrides = tiny_overrides(
        tmp_path, name, **{"eval.every_epochs": evals, **({"train.threads": 1} if nproc > 1 else {})}
    )
    if nproc == 1:
        return [sys.executable, "-m", "distgan.train", *setup, *overrides, *extra], {}
    env = {"NPROC": nproc, "MASTER_PORT": free_port()}
    return [str(REPO / "launch" / "cpu_multi.sh"), *setup, *overrides, *extra], env


def run(tmp_path: Path, name: str, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    cmd, env = command(tmp_path, name, nproc, *extra)
    return run_command(cmd, env=env, timeout=600)


def start(tmp_path: Path, name: str, nproc: int, *extra: str) -> subprocess.Popen:
    """The same command in the background (:func:`background`)."""
    return background(*command(tmp_path, name, nproc, *extra))


def background(cmd: list, env: dict) -> subprocess.Popen:
    """A command in the background, in its own session (so a test can kill it, group and all)."""
    return subprocess.Popen(
        [str(c) for c in cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=environment(env),
        start_new_session=True,
    )


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, tag: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while checkpoint.read_pointer(run_dir / "checkpoints", "latest") != tag:
        assert proc.poll() is None, f"the run ended before {tag}: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, f"no {tag} within {timeout} s"
        time.sleep(0.01)


def rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without timing values and without the record of a requested stop."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = {k: v for k, v in json.loads(line).items() if k not in TIMING}
        if row.get("event") != "stop":
            out.append(row)
    return out


def assert_same_training(a: Path, b: Path) -> None:
    """Bitwise-equal final weights (G, D, EMA) and optimizer states; identical metrics but for timing."""
    wa, wb = (load_file(r / "checkpoints" / "epoch-004" / "model.safetensors") for r in (a, b))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])][:5]
    ta, tb = (load_file(r / "checkpoints" / "epoch-004" / "train.safetensors") for r in (a, b))
    assert all(torch.equal(ta[k], tb[k]) for k in ta if k.startswith("opt_"))
    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb) and ra == rb


class PerWorld(dict):
    """Per number of processes, the run folder ``train(nproc)`` trains: once, when a test first asks for it."""

    def __init__(self, train: Callable[[int], subprocess.CompletedProcess], folder: Callable[[int], Path]):
        super().__init__()
        self.train, self.folder = train, folder

    def __missing__(self, nproc: int) -> Path:
        proc = self.train(nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
        self[nproc] = self.folder(nproc)
        return self[nproc]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, mnist_root) -> PerWorld:
    """The uninterrupted 4-epoch run on N processes."""
    base = tmp_path_factory.mktemp("straight")
    return PerWorld(lambda n: run(base, f"straight{n}", n), lambda n: base / f"straight{n}")


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_kill_9_after_a_checkpoint_then_resume_is_bitwise_the_straight_run(straight, tmp_path, nproc):
    reference = straight[nproc]
    proc = start(tmp_path, "killed", nproc)
    run_dir = tmp_path / "killed"
    wait_for_checkpoint(proc, run_dir, "epoch-002")
    epoch_seconds = json.loads(
        [r for r in (reference / "metrics.jsonl").read_text().splitlines() if '"epoch_end"' in r][0]
    )["seconds"]
    time.sleep(random.uniform(0, 1.5 * epoch_seconds))  # a random moment in epoch 3 or 4
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists(), "killed before the end"
    resumed = run(tmp_path, "killed", nproc, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout + resumed.stderr
    assert_same_training(reference, run_dir)


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_saves_mid_epoch_and_the_resume_is_exact(straight, tmp_path, nproc):
    """As SLURM pre-empts: SIGTERM to every process of the job (the launcher and its ranks)."""
    reference = straight[nproc]
    proc = start(tmp_path, "term", nproc)
    run_dir = tmp_path / "term"
    wait_for_checkpoint(proc, run_dir, "epoch-001")
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "stopped by signal 15 at step" in err and "--resume" in err, err[-3000:]
    assert err.count("stopped by signal 15 at step") == nproc, "every rank stops on it (each says so)"
    assert proc.returncode == launcher_exit_code(signal.SIGTERM, nproc)
    tag = checkpoint.read_pointer(run_dir / "checkpoints", "latest")
    assert tag != "epoch-001" and (run_dir / "checkpoints" / tag / "train.safetensors").is_file()
    stops = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines() if '"stop"' in r]
    assert len(stops) == 1 and stops[0]["checkpoint"] == f"checkpoints/{tag}"
    resumed = run(tmp_path, "term", nproc, "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_training(reference, run_dir)


QUICK = ["--config", "configs/default.yaml", "data.dataset=synthetic", "train.batch_size=64", "train.log_every=1"]
STOP_MESSAGE = re.compile(
    r"(D's loss|G's loss|D's output on real images|D's output on fakes|the weights of [GD_ema, ]+) became "
    r"non-finite \(NaN or inf\) at step (\d+)"
)


def quick(tmp_path: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    """A few synthetic steps of the default on N processes into tmp_path/q."""
    threads = {"train.threads": 1} if nproc > 1 else {}
    args = [*QUICK, *tiny_overrides(tmp_path, "q", **threads), *extra]
    return python("distgan.train", *args, timeout=300) if nproc == 1 else launch(args, nproc=nproc, timeout=300)


@pytest.fixture(scope="module")
def started(tmp_path_factory) -> PerWorld:
    """A run of 2 quick steps on N processes (each test copies it)."""
    base = tmp_path_factory.mktemp("started")
    return PerWorld(lambda n: quick(base / f"n{n}", n, "train.max_steps=2"), lambda n: base / f"n{n}" / "q")


@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    ("blow_up", "quantity"),
    [
        # D's learning rate absurd: D's first update blows it up, so G's loss, computed through D in the
        # same step, is the first non-finite value
        (["optim.d.lr=1.0e30", "train.max_steps=8"], "G's loss"),
        # G's one update overflows float32 after its loss was computed: only the weights are non-finite
        (["optim.g.lr=1.0e39", "train.max_steps=3"], "the weights of G, G_ema"),
    ],
    ids=["loss", "weights"],
)
def test_a_non_finite_loss_or_weight_stops_every_rank_and_saves_nothing(started, tmp_path, nproc, blow_up, quantity):
    """A NaN stops every rank (the launch ends, none waits in a collective), names what became non-finite
    and the step, points at the last good checkpoint, and writes nothing after it."""
    shutil.copytree(started[nproc], tmp_path / "q")
    ckpts = tmp_path / "q" / "checkpoints"
    before = {p.name: p.read_bytes() for p in (ckpts / "step-000002").iterdir()}
    blown = quick(tmp_path, nproc, *blow_up, "--resume", "auto")
    assert blown.returncode == 1, blown.stderr[-3000:]
    found = STOP_MESSAGE.search(blown.stderr)
    assert found is not None and found.group(1) == quantity, blown.stderr[-3000:]
    assert int(found.group(2)) >= 2
    assert blown.stderr.count("became non-finite") == nproc, "every rank stops on it (each says so)"
    assert not distgan_frames(blown.stderr), "a message, not a traceback (accelerate's launcher prints its own)"
    assert f"the last good checkpoint is {ckpts / 'step-000002'}" in blown.stderr
    assert checkpoint.read_pointer(ckpts, "latest") == "step-000002"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-000002"], "nothing saved after it"
    assert {p.name: p.read_bytes() for p in (ckpts / "step-000002").iterdir()} == before
    logged = [json.loads(r) for r in (tmp_path / "q" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r[k]) for r in logged for k in ("loss_d", "loss_g") if k in r), "no NaN logged"


def launcher_exit_code(signum: int, nproc: int) -> int:
    """What the command a user typed returns after a signal stopped the run: 128 + the signal's number on
    one process; under accelerate launch (torch elastic) the launcher forwards the signal, each rank saves
    and exits 128 + N, and the launcher itself reports the signal as its failure and exits 1."""
    return 128 + signum if nproc == 1 else 1


def receivers(launcher: int, signum: int, nproc: int) -> list[int]:
    """Where a signal goes: a terminal's Ctrl-C and `kill`/SLURM's SIGTERM reach the command typed (under
    accelerate launch, torch elastic forwards SIGINT and SIGTERM to every rank, each in its own session);
    SIGUSR1 must be sent to the ranks themselves (torch elastic does not forward it: it ends the launcher)."""
    if nproc == 1 or signum != signal.SIGUSR1:
        return [launcher]
    deadline, ranks = time.time() + 30, []
    while len(ranks) < nproc:
        assert time.time() < deadline, "the ranks did not start"
        tasks = Path(f"/proc/{launcher}/task").iterdir()
        ranks = [int(c) for t in tasks for c in (t / "children").read_text().split()]
        time.sleep(0.05)
    return ranks


# Training that runs until a signal stops it: synthetic data, one metrics row per step, no epoch-end saves.
ENDLESS = [*QUICK, "train.epochs=100000", "output.checkpoint_every_epochs=100000", "output.sample_every_epochs=100000"]


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_text().count('"loss_d"') if path.exists() else 0


@pytest.mark.parametrize(
    ("nproc", "signum"),
    [
        (1, signal.SIGINT),
        (1, signal.SIGUSR1),
        pytest.param(2, signal.SIGINT, marks=pytest.mark.slow),
        pytest.param(2, signal.SIGUSR1, marks=pytest.mark.slow),
    ],
    ids=["sigint-1", "sigusr1-1", "sigint-2", "sigusr1-2"],
)
def test_a_signal_finishes_the_step_saves_and_exits_128_plus_its_number(tmp_path, nproc, signum):
    """Ctrl-C (SIGINT to the terminal's process group) and SLURM's SIGUSR1: a step checkpoint where the run
    stopped, a stop row naming it, the resume command, and the exit code of :func:`launcher_exit_code`."""
    proc = background(*command(tmp_path, "sig", nproc, setup=ENDLESS, evals=0))
    run_dir, deadline = tmp_path / "sig", time.time() + 120
    while logged_steps(run_dir) < 3:
        assert proc.poll() is None and time.time() < deadline, "no training steps logged"
        time.sleep(0.05)
    for pid in receivers(proc.pid, signum, nproc):
        os.kill(pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == launcher_exit_code(signum, nproc), err[-3000:]
    assert err.count(f"stopped by signal {signum} at step") == nproc, "every rank stops on it (each says so)"
    stopped = re.search(rf"stopped by signal {signum} at step (\d+) with a checkpoint.*--resume {run_dir}", err)
    assert stopped is not None, err[-3000:]
    step = int(stopped.group(1))
    tag = checkpoint.read_pointer(run_dir / "checkpoints", "latest")
    assert tag == f"step-{step:06d}" and step >= 3
    state = json.loads((run_dir / "checkpoints" / tag / "state.json").read_text())
    assert state["counters"]["step"] == step
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss_d" in r] == list(range(step)), "every step before the stop, once"
    assert [r["checkpoint"] for r in rows if r.get("event") == "stop"] == [f"checkpoints/{tag}"]


def test_a_second_ctrl_c_interrupts_at_once_with_one_line(tmp_path, capsys, monkeypatch):
    """The first SIGINT is a request (the step finishes, a checkpoint is saved); a second one while that is
    under way stops at once: KeyboardInterrupt, which the CLI turns into one line and exit code 130."""
    from distgan import train as train_module
    from distgan.signals import StopRequest

    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs between two bytecodes of this thread
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    finally:
        stop.uninstall()

    def interrupted(cfg, resume):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    assert train_module.main(["--config", str(REPO / "configs" / "default.yaml"), *tiny_overrides(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "interrupted: stopped at once, nothing saved since the last checkpoint" in err and "Traceback" not in err


def best_is_lowest_fid(run: Path) -> bool:
    """Check that ``best`` names the checkpoint of the lowest FID so far; say whether that is not the newest."""
    evals = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in r]
    lowest = min(evals, key=lambda e: e["fid"])["epoch"]
    assert checkpoint.read_pointer(run / "checkpoints", "best") == f"epoch-{lowest:03d}", [e["fid"] for e in evals]
    return lowest != evals[-1]["epoch"]


def test_a_run_folder_alone_resumes_the_same_wandb_run_keeps_the_best_and_sums_up(tmp_path):
    """``--resume RUN`` without --config continues with the stored config and the same W&B run; ``best``
    names the lowest-FID checkpoint so far at every save (measured FIDs 2,332, 2,498, 1,638: after epoch 2
    the best is not the newest); summary.json adds up the whole run."""
    syn = ["data.dataset=synthetic", "train.batch_size=128", "train.epochs=2", "eval.every_epochs=1"]
    run = run_training(tmp_path, "w", *syn, "eval.samples=400", "output.tracker=wandb")
    shown = [best_is_lowest_fid(run)]
    proc = python("distgan.train", "--resume", str(run), "train.epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown.append(best_is_lowest_fid(run))
    assert True in shown, "at one save the lowest FID was not the newest checkpoint's (else this shows nothing)"

    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    infos = [wandb_reader.run_info(f) for f in files]
    assert len(files) == 2 and infos[0]["id"] == infos[1]["id"], infos
    state = json.loads((run / "checkpoints" / "epoch-003" / "state.json").read_text())
    assert infos[1]["id"] == state["counters"]["wandb_id"]
    steps = [[r["_step"] for r in wandb_reader.history(f) if "train/loss_d" in r] for f in files]
    assert steps == [list(range(32)), list(range(32, 48))], "the resumed W&B run continues at the next step"

    summary = json.loads((run / "summary.json").read_text())
    weights = load_file(run / "checkpoints" / "epoch-003" / "model.safetensors")
    assert summary["name"] == "default" and summary["steps"] == 48 and summary["nimg"] == 48 * 128
    assert summary["resumed_from_step"] == 32 and summary["world"] == 1 and summary["device"] == "cpu"
    assert summary["mixed_precision"] == "no" and summary["compile"] == "no"
    assert summary["seconds"] >= state["counters"]["train_seconds"] > 0  # both runs' time, to the end
    assert summary["img_per_s"] == pytest.approx(summary["nimg"] / summary["seconds"], rel=1e-3)
    for net in ("G", "D"):
        assert summary[f"params_{net.lower()}"] == sum(
            t.numel()
            for k, t in weights.items()
            if k.startswith(f"{net}.") and "running" not in k and "num_batches" not in k
        )


@pytest.mark.real_data
def test_a_save_interrupted_mid_write_leaves_a_resumable_previous_checkpoint(mnist_root, tmp_path, monkeypatch):
    first = run(tmp_path, "cut", 1, "train.epochs=1", "eval.every_epochs=0")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpts = tmp_path / "cut" / "checkpoints"
    tensors, train, info = checkpoint.load_training_state(ckpts / "epoch-001")

    def dies_mid_write(tensors, path, metadata=None):
        Path(path).write_bytes(b"\x00" * 1000)  # half a file on disk, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", dies_mid_write)
    with pytest.raises(
        checkpoint.CheckpointError, match="no space left.*previous checkpoint \\(epoch-001\\) is intact"
    ):
        checkpoint.save(ckpts, "epoch-002", tensors, {**info, "counters": {**info["counters"], "step": 256}}, train)
    monkeypatch.undo()
    assert checkpoint.read_pointer(ckpts, "latest") == "epoch-001"
    assert not list(ckpts.glob(".*tmp")) and not (ckpts / "epoch-002").exists()
    resumed = run(tmp_path, "cut", 1, "train.epochs=2", "eval.every_epochs=0", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert checkpoint.read_pointer(ckpts, "latest") == "epoch-002"


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB filesystem (tmpfs; needs root, as on CI): writes past it fail as a full disk does."""
    where = tmp_path / "small"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_real_full_disk_stops_with_one_line_and_keeps_the_previous_checkpoint(small_disk, tmp_path):
    """Not a faked OSError: the checkpoint (about 19 MB with Adam's state) meets a 2 MB disk."""
    ckpts = small_disk / "checkpoints"
    checkpoint.save(ckpts, "epoch-001", {"w": torch.zeros(1000)}, {"config": {}, "counters": {"step": 1}})
    with pytest.raises(
        checkpoint.CheckpointError, match="no space left.*previous checkpoint \\(epoch-001\\) is intact"
    ):
        checkpoint.save(ckpts, "epoch-002", {"w": torch.zeros(1 << 20)}, {"config": {}, "counters": {"step": 2}})
    assert checkpoint.read_pointer(ckpts, "latest") == "epoch-001" and not list(ckpts.glob(".*"))
    checkpoint.load(ckpts / "epoch-001")  # verifies its digests
    proc = python(
        "distgan.train",
        "--config",
        "configs/default.yaml",
        *tiny_overrides(tmp_path, "full", **{"output.dir": small_disk, "data.dataset": "synthetic"}),
        "train.max_steps=2",
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "no space left on the device while saving" in proc.stderr and "output.dir" in proc.stderr


def test_resuming_an_older_checkpoint_sets_the_newer_ones_aside(tmp_path):
    ckpts = tmp_path / "checkpoints"
    for i, tag in enumerate(["epoch-001", "epoch-002", "epoch-003"]):
        checkpoint.save(ckpts, tag, {"w": torch.zeros(1)}, {"config": {}, "counters": {"step": 10 * (i + 1)}})
    checkpoint.mark_best(ckpts, "epoch-003")
    assert sorted(checkpoint.abandon_newer(ckpts / "epoch-001")) == ["epoch-002", "epoch-003"]
    assert checkpoint.read_pointer(ckpts, "latest") == "epoch-001" and checkpoint.read_pointer(ckpts, "best") is None
    assert (ckpts / ".abandoned-epoch-003" / "model.safetensors").is_file()  # kept, not deleted


def test_resuming_an_older_checkpoint_keeps_the_newer_rows_grids_and_summary(tmp_path):
    """The abandoned continuation's metrics rows, grids and summary move aside (byte for byte), and the
    resumed run's metrics.jsonl holds only its own history: rows up to the checkpoint, then the new ones."""
    syn = ["data.dataset=synthetic", "data.limit=512", "train.batch_size=128", "train.epochs=3"]
    run = run_training(tmp_path, "r", *syn)
    text = (run / "metrics.jsonl").read_bytes()
    keep = json.loads((run / "checkpoints" / "epoch-001" / "state.json").read_text())["counters"]["metrics_bytes"]
    grids = {p.name: p.read_bytes() for p in (run / "samples").glob("*.png")}
    summary = (run / "summary.json").read_bytes()
    proc = python("distgan.train", "--resume", str(run / "checkpoints" / "epoch-001"), "train.epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (aside,) = run.glob("abandoned-*")
    assert (aside / "metrics.jsonl").read_bytes() == text[keep:]
    assert {p.name: p.read_bytes() for p in (aside / "samples").glob("*.png")} == {
        k: v for k, v in grids.items() if k in ("epoch-002.png", "epoch-003.png")
    }
    assert (aside / "summary.json").read_bytes() == summary
    assert sorted(p.name for p in (run / "checkpoints").glob(".abandoned-*")) == [
        ".abandoned-epoch-002",
        ".abandoned-epoch-003",
    ]
    now = (run / "metrics.jsonl").read_bytes()
    assert now[:keep] == text[:keep] and b'"epoch": 2' in now[keep:] and b'"epoch": 3' not in now[keep:]
    assert "the newer work is kept" in proc.stdout + proc.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 8  # the resumed run's own: 2 epochs


def test_resume_auto_without_a_name_continues_the_newest_run_of_the_config_even_with_glob_characters(tmp_path):
    common = ["--config", "configs/default.yaml", "name=exp[1]", "data.dataset=synthetic", "output.tracker=none"]
    common += [f"output.dir={tmp_path}", "eval.every_epochs=0", "train.threads=1"]
    for steps in (2, 3):  # two runs of the config; the second is the newest
        assert python("distgan.train", *common, f"train.max_steps={steps}").returncode == 0
        time.sleep(1.1)  # distinct timestamps in the names
    older, newer = sorted(tmp_path.glob("exp[[]1]-s0-*"), key=lambda p: p.stat().st_mtime)
    proc = python("distgan.train", *common, "train.max_steps=5", "--resume", "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(tmp_path.iterdir()) == sorted([older, newer]), "no new run started"
    assert checkpoint.read_pointer(newer / "checkpoints", "latest") == "step-000005"
    assert checkpoint.read_pointer(older / "checkpoints", "latest") == "step-000002"


def test_a_start_that_died_before_its_first_checkpoint_does_not_block_its_name(tmp_path):
    dead = tmp_path / "named"
    (dead / "samples").mkdir(parents=True)
    (dead / "config.yaml").write_text("x")  # what a start writes first; then it crashed
    (dead / "metrics.jsonl").write_text("{}\n")
    run_training(tmp_path, "named", "data.dataset=synthetic", "train.max_steps=2")
    (aside,) = tmp_path.glob("named.no-checkpoint-*")
    assert (aside / "config.yaml").read_text() == "x" and (aside / "metrics.jsonl").read_text() == "{}\n"
    assert (dead / "summary.json").is_file()


def test_resume_auto_sets_aside_a_named_run_that_never_saved(tmp_path):
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "config.yaml").write_text("x")  # an attempt killed before its first checkpoint
    run_training(tmp_path, "early", "data.dataset=synthetic", "train.epochs=1", "--resume", "auto")
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("early.no-checkpoint-")]
    assert len(aside) == 1 and (aside[0] / "config.yaml").read_text() == "x"
    assert (tmp_path / "early" / "summary.json").is_file()


def test_pruning_keeps_the_newest_the_latest_and_the_best(tmp_path):
    ckpts = tmp_path / "checkpoints"
    t = {"w": torch.zeros(1)}
    for i, tag in enumerate(["epoch-001", "epoch-002", "step-000250", "epoch-003", "epoch-004"]):
        checkpoint.save(ckpts, tag, t, {"config": {}, "counters": {"step": 100 * (i + 1)}})
    checkpoint.mark_best(ckpts, "epoch-001")
    (ckpts / ".epoch-005.tmp").mkdir()  # a save that never finished
    assert checkpoint.prune(ckpts, 2) == ["epoch-002", "step-000250"]
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == ["epoch-001", "epoch-003", "epoch-004"]
