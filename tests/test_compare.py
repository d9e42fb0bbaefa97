"""distgan.compare end to end on the tiny synthetic dataset: determinism, reuse, files, refusals."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distgan import compare, config, jobs, tracking
from distgan.dist import free_port
from tests import wandb_reader
from tests.conftest import REPO, environment, python, run

SMALL = """
name: {name}
data: {{dataset: synthetic}}
model:
  g: mlp_g
  d: mlp_d
  z_dim: 16
  g_args: {{hidden: [{width}], batchnorm: false}}
  d_args: {{hidden: [64]}}
optim: {{g: {{lr: 1.0e-3}}, d: {{lr: 1.0e-3}}}}
train: {{batch_size: 32, threads: 1, log_every: 8}}
output: {{tracker: none}}
eval: {{samples: 300}}
"""


def configs(tmp_path: Path) -> list[str]:
    paths = []
    for name, width in (("narrow", 32), ("wide", 128)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(SMALL.format(name=name, width=width))
        paths.append(str(path))
    return paths


def run_compare(
    paths: list[str], out: Path, runs: Path, *extra: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    args = [*paths, "--epochs", "2", "--seeds", "0,1", "--out", str(out), "--runs-dir", str(runs), *extra]
    return python("distgan.compare", *args, env=env, timeout=600)


def table(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if not k.startswith(compare.TIMING)} for row in csv.DictReader(f)]


# The --set every run of the shared comparison gets: eval.samples, which its configs set to 300
SET_SAMPLES = 256
SHARED = ("--set", "output.tracker=wandb", "--set", f"eval.samples={SET_SAMPLES}")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> dict:
    """One comparison shared by the tests that read it: 2 configs x 2 seeds, 2 epochs, on the synthetic
    dataset, logged to offline W&B, with a --set. Its report folder is ``rep`` (the W&B group)."""
    tmp = tmp_path_factory.mktemp("comparison")
    paths = configs(tmp)
    env = {  # the autouse _quiet_wandb fixture is function-scoped: a module fixture sets W&B's env itself
        "WANDB_MODE": os.environ.get("DISTGAN_TEST_WANDB_MODE", "offline"),
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp),
    }
    proc = run_compare(paths, tmp / "rep", tmp / "runs", *SHARED, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"paths": paths, "out": tmp / "rep", "runs": tmp / "runs", "env": env}


def csv_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def evals(run: Path) -> list[dict]:
    """A run's evaluations: the ``"event": "eval"`` rows of its metrics.jsonl."""
    rows = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return [r for r in rows if r.get("event") == "eval"]


@pytest.mark.slow
def test_the_same_comparison_twice_gives_the_same_tables_and_a_rerun_reuses_runs(comparison, tmp_path):
    paths, report1, runs1 = comparison["paths"], comparison["out"], comparison["runs"]
    second = run_compare(paths, tmp_path / "report2", tmp_path / "runs2", *SHARED, env=comparison["env"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing" not in second.stdout  # trained again from scratch
    for name in ("table.csv", "runs.csv"):
        a, b = table(report1 / name), table(tmp_path / "report2" / name)
        assert a == b, name  # identical apart from the timing columns
    rows = table(report1 / "table.csv")
    assert [r["config"] for r in rows] == ["narrow", "wide"] and rows[0]["seeds"] == "0 1"
    assert all(float(r["final_fid"]) > 0 and r["final_fid_std"] != "" for r in rows)
    runs = table(report1 / "runs.csv")
    assert len(runs) == 4 and runs[0]["final_fid"] != runs[1]["final_fid"]  # seeds differ
    for name in ("report.md", "curves.png", "montage.png"):
        assert (report1 / name).stat().st_size > 1000
    report = (report1 / "report.md").read_text()
    assert "| narrow |" in report and "![montage](montage.png)" in report
    assert "2 configs, 2 seeds (0, 1), 2 epochs each;" in report
    assert f"Command: `python -m distgan.compare {paths[0]} {paths[1]} --epochs 2 --seeds 0,1" in report

    # the same runs folder: nothing to train
    third = run_compare(paths, tmp_path / "report3", runs1, *SHARED, env=comparison["env"])
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("reusing") == 4 and len(list(runs1.iterdir())) == 4
    assert table(tmp_path / "report3" / "table.csv") == table(report1 / "table.csv")


@pytest.mark.slow
def test_set_reaches_the_stored_config_of_every_run(comparison):
    """README: `--set KEY=VALUE` overrides every run. The configs say eval.samples 300; the --set's value is
    in each run's config.yaml and is what each of its evaluations drew."""
    runs = sorted(comparison["runs"].iterdir())
    assert len(runs) == 4
    for folder in runs:
        assert config.load(folder / "config.yaml").eval.samples == SET_SAMPLES, folder.name
        samples = [r["samples"] for r in evals(folder)]
        assert samples == [SET_SAMPLES] * 2, folder.name  # an evaluation per epoch, each of the --set's size


def first_epoch_under(run: Path, threshold: float) -> int | None:
    """The first epoch whose evaluation's FID is at or below ``threshold``, from the run's metrics.jsonl."""
    return next((r["epoch"] for r in evals(run) if r["fid"] <= threshold), None)


@pytest.mark.slow
def test_fid_threshold_gives_the_first_epoch_at_or_under_it(comparison, tmp_path, monkeypatch, capsys):
    """--fid-threshold T: runs.csv's epochs_to_fid is the first epoch whose evaluation scored FID <= T (the
    report's column reads "epoch FID<=T"), recomputed from each run's metrics.jsonl eval rows, and table.csv's
    `reached` counts the seeds that got there. Every threshold tried is one of the FIDs the runs scored, so a
    strict < and a <= differ at each; --report-only rereads the finished runs without training."""
    monkeypatch.setattr(tracking, "summary_run", lambda *a, **k: None)  # no W&B report run from this process
    runs = sorted(comparison["runs"].iterdir())
    fids = sorted({r["fid"] for folder in runs for r in evals(folder)})
    assert len(fids) == 8  # 4 runs x 2 evaluations
    args = [*comparison["paths"], "--epochs", "2", "--seeds", "0,1", "--runs-dir", str(comparison["runs"]), *SHARED]
    seen = set()
    for i, threshold in enumerate(fids):
        out = tmp_path / f"t{i}"
        assert compare.main([*args, "--out", str(out), "--fid-threshold", repr(threshold), "--report-only"]) == 0
        assert f"epoch FID<={threshold:g}" in capsys.readouterr().out
        by_run = {r["run"]: r["epochs_to_fid"] for r in csv_rows(out / "runs.csv")}
        expected = {folder.name: first_epoch_under(folder, threshold) for folder in runs}
        assert by_run == {k: "" if v is None else str(v) for k, v in expected.items()}, threshold
        for row in csv_rows(out / "table.csv"):
            reached = [v for k, v in expected.items() if k.startswith(row["config"] + "-")]
            assert row["reached"] == f"{sum(v is not None for v in reached)}/2", threshold
        seen.update(expected.values())
    assert {None, 1, 2} <= seen  # the thresholds met runs that never got there, got there at once, and later


@pytest.mark.slow
def test_table_std_columns_are_the_sample_std_of_the_runs(comparison):
    """table.csv's `<metric>_std` is the sample standard deviation (ddof 1) over the config's seeds of the
    per-run values in runs.csv (0 for a single value, empty for none), and `<metric>` their mean."""
    runs = csv_rows(comparison["out"] / "runs.csv")
    rows = csv_rows(comparison["out"] / "table.csv")
    assert [r["config"] for r in rows] == ["narrow", "wide"]
    spread = 0
    for row in rows:
        mine = [r for r in runs if r["config"] == row["config"]]
        assert len(mine) == 2
        for key in compare.METRICS:
            values = [float(r[key]) for r in mine if r[key] != ""]
            if not values:
                assert row[key] == row[f"{key}_std"] == "", key
                continue
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            assert float(row[key]) == pytest.approx(mean, rel=1e-12), (row["config"], key)
            assert float(row[f"{key}_std"]) == pytest.approx(std, rel=1e-9, abs=1e-12), (row["config"], key)
            spread += std > 0
    assert spread >= 4  # the seeds differ, so ddof matters (FID, KID, IS, timings at least)


@pytest.mark.slow
def test_two_jobs_at_once_interrupted_and_resumed_give_the_one_job_tables(tmp_path):
    """--jobs 2 (1 thread per run on 2 cores, as the configs fix) against --jobs 1; the --jobs 2 comparison
    is stopped by SIGINT mid-way (every run saves and stops; exit 130) and finished by the same command."""
    paths = configs(tmp_path)
    one = run_compare(paths, tmp_path / "one", tmp_path / "runs1", "--jobs", "1")
    assert one.returncode == 0, one.stderr[-3000:]
    args = [
        *paths,
        "--epochs",
        "2",
        "--seeds",
        "0,1",
        "--out",
        str(tmp_path / "two"),
        "--runs-dir",
        str(tmp_path / "runs2"),
    ]
    cmd = [sys.executable, "-m", "distgan.compare", *args, "--jobs", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list((tmp_path / "runs2").glob("*/checkpoints/latest")):  # a run has saved its first epoch
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "stopping 2 running job(s)" in out and "run the same command again to resume" in err
    assert len(list((tmp_path / "runs2").glob("*/summary.json"))) < 4, "the comparison stopped before its end"
    again = run_compare(paths, tmp_path / "two", tmp_path / "runs2", "--jobs", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 at a time" in again.stdout and "4/4 done" in again.stdout
    for name in ("table.csv", "runs.csv"):
        assert table(tmp_path / "two" / name) == table(tmp_path / "one" / name), name
    assert sorted(p.name for p in (tmp_path / "two" / "logs").iterdir()) == sorted(
        f"{p.name}.log" for p in (tmp_path / "runs2").iterdir()
    )


@pytest.mark.slow
def test_slurm_submits_an_array_and_a_report_job_whose_tasks_run_here(tmp_path):
    """No cluster here: a stand-in sbatch records what it is given; then each array task runs locally with
    SLURM's variable set, and the report job writes the report from the finished runs."""
    paths = configs(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho 4242\n')
    (bin_dir / "sbatch").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    args = [
        *paths,
        "--epochs",
        "1",
        "--seeds",
        "0",
        "--out",
        str(tmp_path / "rep"),
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    sub = python("distgan.compare", *args, "--slurm", "--slurm-cpus", "1", "--sbatch-args", "--partition x", env=env)
    assert sub.returncode == 0, sub.stderr[-3000:]
    assert "array job 4242" in sub.stdout and not (tmp_path / "runs").exists()  # nothing trained here
    first, second = calls.read_text().splitlines()
    assert first.startswith("--parsable --partition x") and first.endswith("array.sbatch")
    assert "--dependency=afterany:4242" in second and second.endswith("report.sbatch")
    array = (tmp_path / "rep" / "slurm" / "array.sbatch").read_text()
    for line in ("#SBATCH --array=0-1", "#SBATCH --signal=B:TERM@120", "#SBATCH --requeue", "--cpus-per-task=1"):
        assert line in array
    tasks = [line for line in array.splitlines() if "-m distgan.train" in line]
    assert len(tasks) == 2 and all(t.rstrip("'").endswith("--resume auto") for t in tasks)
    for task in ("0", "1"):
        ran = run(["bash", tmp_path / "rep" / "slurm" / "array.sbatch"], env={"SLURM_ARRAY_TASK_ID": task}, timeout=600)
        assert ran.returncode == 0, ran.stderr[-3000:]
    again = run(["bash", tmp_path / "rep" / "slurm" / "array.sbatch"], env={"SLURM_ARRAY_TASK_ID": "0"}, timeout=600)
    assert again.returncode == 0 and "nothing to train" in again.stdout + again.stderr  # a requeued task
    report = run(["bash", tmp_path / "rep" / "slurm" / "report.sbatch"], timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| narrow |" in text and "| wide |" in text and "Failed runs" not in text


@pytest.mark.slow
def test_a_comparison_logged_to_wandb_groups_its_runs_and_adds_one_summary_run_with_the_table(comparison):
    """README: the runs share a W&B group named after the report folder, and one more run in that group,
    `<out>-report` (job type `report`), holds the table, the curves and the montage."""
    out = comparison["out"]
    (summary,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    info = wandb_reader.run_info(summary)
    assert (info["group"], info["job_type"], info["name"]) == (out.name, "report", f"{out.name}-report"), info
    logged = {k for row in wandb_reader.history(summary) for k in row}
    assert {"report/table/_type", "report/curves/_type", "report/montage/_type"} <= logged, sorted(logged)
    run_files = sorted(comparison["runs"].glob("*/wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 4  # one W&B run per (config, seed)
    for run_file in run_files:
        run = run_file.parents[2]  # <run>/wandb/offline-run-*/run-*.wandb
        info = wandb_reader.run_info(run_file)
        assert info["group"] == out.name, (run.name, info)  # the runs: the report's group
        assert info["name"] == run.name and info["job_type"] == run.name.split("-s")[0], info


def test_a_failing_job_does_not_stop_the_others(tmp_path):
    py = sys.executable
    work = [
        jobs.Job("fails", [py, "-c", "raise SystemExit(3)"], tmp_path / "fails.log"),
        jobs.Job("slow", [py, "-c", "import time; time.sleep(1); print('ok')"], tmp_path / "slow.log"),
        jobs.Job("next", [py, "-c", "print('ok')"], tmp_path / "next.log"),
    ]
    lines = []
    jobs.run_all(work, [(), ()], print_fn=lines.append, poll=0.05)
    assert [j.returncode for j in work] == [3, 0, 0]
    assert (tmp_path / "next.log").read_text().endswith("ok\n")
    assert any("fails failed (exit code 3)" in line for line in lines)
    assert lines[-1].startswith("compare: 2/3 done, 0 running, 1 failed, 0 waiting")


def test_runs_side_by_side_get_their_share_of_threads_unless_the_config_fixes_it(tmp_path):
    shared = compare.plan(["configs/default.yaml"], [0], 1, [], tmp_path, "g", threads=3)[0]["overrides"]
    assert "train.threads=3" in shared
    fixed = compare.plan(["configs/default.yaml"], [0], 1, ["train.threads=2"], tmp_path, "g", threads=3)[0]
    assert "train.threads=3" not in fixed["overrides"] and "train.threads=2" in fixed["overrides"]
    own = compare.plan(configs(tmp_path)[:1], [0], 1, [], tmp_path, "g", threads=3)[0]["overrides"]
    assert not any(o.startswith("train.threads") for o in own)  # the config says threads: 1


def test_jobs_split_the_cores_and_refuse_nonsense(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(compare.os, "cpu_count", lambda: 8)
    assert compare.slots_for("1", 1, 10) == ([()], None)
    assert compare.slots_for("4", 1, 10) == ([()] * 4, 2)
    assert compare.slots_for("4", 1, 3) == ([()] * 3, 2)  # never more jobs than runs, the cores among them
    assert compare.slots_for("auto", 1, 10) == ([()] * 8, 1)
    assert compare.slots_for("auto", 2, 10, "launch --port {port}") == (
        [()] * 4,
        1,
    )  # 2-process launcher: 4 jobs of 2 processes
    for bad in ("0", "-1", "x"):
        with pytest.raises(compare.CompareError, match="--jobs must be a number >= 1 or auto"):
            compare.slots_for(bad, 1, 10)


def test_compare_resumes_interrupted_runs_restarts_empty_ones_and_refuses_missing_configs_and_bad_arguments(
    tmp_path, capsys
):
    paths = configs(tmp_path)
    entries = compare.plan(paths[:1], [0], 2, [], tmp_path / "runs", "g")
    run = entries[0]["run"]
    (run / "checkpoints" / "epoch-001").mkdir(parents=True)  # interrupted after its first checkpoint
    (run / "checkpoints" / "latest").write_text("epoch-001\n")
    again = compare.plan(paths[:1], [0], 2, [], tmp_path / "runs", "g")
    assert again[0]["overrides"][-2:] == ["--resume", str(run)] and not again[0]["reuse"]
    shutil.rmtree(run / "checkpoints")  # a run stopped before its first checkpoint: started anew
    fresh = compare.plan(paths[:1], [0], 2, [], tmp_path / "runs", "g")[0]
    assert "--resume" not in fresh["overrides"] and not fresh["reuse"]
    assert compare.main([str(tmp_path / "nope.yaml"), "--epochs", "1", "--out", str(tmp_path / "r")]) == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        compare.main([paths[0], "--epochs", "1", "--seeds", "a,b", "--out", str(tmp_path / "r")])
    assert refused.value.code == 2, refused.value.code  # argparse's usage error: a failure, never 0
    assert "--seeds" in capsys.readouterr().err


def test_run_names_follow_the_config_and_ignore_where_runs_live(tmp_path):
    paths = configs(tmp_path)
    a = compare.plan(paths, [0, 1], 2, [], tmp_path / "x", "g1")
    b = compare.plan(paths, [0, 1], 2, [], tmp_path / "y", "g2")
    assert [e["run"].name for e in a] == [e["run"].name for e in b]
    assert len({e["run"].name for e in a}) == 4
    c = compare.plan(paths, [0, 1], 2, ["loss.real_label=[1.0, 1.0]"], tmp_path / "x", "g1")
    assert {e["run"].name for e in c}.isdisjoint(e["run"].name for e in a)  # another config, another run


def test_stored_configs_match_where_the_plan_fixes_a_value():
    assert compare._matches({"a": 1, "b": None}, {"a": 1, "b": 2})
    assert not compare._matches({"a": 1}, {"a": 2})
    assert compare.montage_epochs(10) == [2, 5, 8, 10] and compare.montage_epochs(2) == [1, 2]


@pytest.mark.slow
def test_compare_launches_its_runs_under_accelerate_as_the_readme_shows(tmp_path):
    """A --launcher comparison makes its own runs: a finished 1-process run of the same config and seed is
    not reused as a 2-process one (the world size is part of a run's identity)."""
    args = [configs(tmp_path)[0], "--epochs", "1", "--out", str(tmp_path / "r"), "--runs-dir", str(tmp_path / "runs")]
    single = python("distgan.compare", *args, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    port = free_port()
    launcher = (
        f"env ACCELERATE_USE_CPU=1 {Path(sys.executable).parent / 'accelerate'} launch --config_file "
        f"launch/cpu_multi.yaml --num_processes 2 --main_process_port {port}"
    )
    proc = python("distgan.compare", *args, "--launcher", launcher, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reusing" not in proc.stdout
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and runs[1].name == runs[0].name + "-w2"
    assert '"world": 1' in (runs[0] / "summary.json").read_text()
    assert '"world": 2' in (runs[1] / "summary.json").read_text()
    assert table(tmp_path / "r" / "table.csv")[0]["config"] == "narrow"
    again = python("distgan.compare", *args, "--launcher", launcher, timeout=600)
    assert again.returncode == 0 and again.stdout.count("reusing") == 1  # the 2-process run, by its own name


def test_curves_of_one_epoch_tick_whole_epochs_only(tmp_path):
    result = {"fid": [30.0], "epochs": [1], "loss_d": [0.5], "loss_g": [1.2], "loss_epochs": [1]}
    ticks = compare.plot_curves([{"name": "a", "result": result}], tmp_path / "curves.png")
    assert ticks == [[1.0], [1.0], [1.0]]
    many = {k: v * 5 if k.startswith(("fid", "loss_d", "loss_g")) else [1, 2, 3, 4, 5] for k, v in result.items()}
    assert all(
        t == int(t) for panel in compare.plot_curves([{"name": "a", "result": many}], tmp_path / "c.png") for t in panel
    )
