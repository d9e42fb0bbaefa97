"""distgan.compare end to end on the tiny synthetic dataset: determinism, reuse, files, refusals."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distgan import compare
from distgan.dist import free_port
from tests.conftest import python

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


def run_compare(paths: list[str], out: Path, runs: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [*paths, "--epochs", "2", "--seeds", "0,1", "--out", str(out), "--runs-dir", str(runs), *extra]
    return python("distgan.compare", *args, timeout=600)


def table(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if not k.startswith(compare.TIMING)} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_the_same_comparison_twice_gives_the_same_tables_and_a_rerun_reuses_runs(tmp_path):
    paths = configs(tmp_path)
    first = run_compare(paths, tmp_path / "report1", tmp_path / "runs1")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_compare(paths, tmp_path / "report2", tmp_path / "runs2")  # trained again from scratch
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing" not in second.stdout
    for name in ("table.csv", "runs.csv"):
        a, b = table(tmp_path / "report1" / name), table(tmp_path / "report2" / name)
        assert a == b, name  # identical apart from the timing columns
    rows = table(tmp_path / "report1" / "table.csv")
    assert [r["config"] for r in rows] == ["narrow", "wide"] and rows[0]["seeds"] == "0 1"
    assert all(float(r["final_fid"]) > 0 and r["final_fid_std"] != "" for r in rows)
    runs = table(tmp_path / "report1" / "runs.csv")
    assert len(runs) == 4 and runs[0]["final_fid"] != runs[1]["final_fid"]  # seeds differ
    for name in ("report.md", "curves.png", "montage.png"):
        assert (tmp_path / "report1" / name).stat().st_size > 1000
    report = (tmp_path / "report1" / "report.md").read_text()
    assert "| narrow |" in report and "![montage](montage.png)" in report

    third = run_compare(paths, tmp_path / "report3", tmp_path / "runs1")  # same runs folder: nothing to train
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("reusing") == 4 and len(list((tmp_path / "runs1").iterdir())) == 4
    assert table(tmp_path / "report3" / "table.csv") == table(tmp_path / "report1" / "table.csv")


def test_compare_resumes_interrupted_runs_and_refuses_empty_ones_missing_configs_and_bad_arguments(tmp_path):
    paths = configs(tmp_path)
    entries = compare.plan(paths[:1], [0], 2, [], tmp_path / "runs", "g")
    run = entries[0]["run"]
    (run / "checkpoints" / "epoch-001").mkdir(parents=True)  # interrupted after its first checkpoint
    (run / "checkpoints" / "latest").write_text("epoch-001\n")
    again = compare.plan(paths[:1], [0], 2, [], tmp_path / "runs", "g")
    assert again[0]["overrides"][-2:] == ["--resume", str(run)] and not again[0]["reuse"]
    shutil.rmtree(run / "checkpoints")  # a run that never saved anything
    with pytest.raises(compare.CompareError, match="never saved a checkpoint"):
        compare.plan(paths[:1], [0], 2, [], tmp_path / "runs", "g")
    assert compare.main([str(tmp_path / "nope.yaml"), "--epochs", "1", "--out", str(tmp_path / "r")]) == 1
    with pytest.raises(SystemExit):
        compare.main([paths[0], "--epochs", "1", "--seeds", "a,b", "--out", str(tmp_path / "r")])


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
