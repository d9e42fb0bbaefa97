"""``python -m distgan.bench.jobs``: the wall time of one comparison trained one run at a time against the
same comparison with ``--jobs N``, side by side on this machine (fresh runs folders each time).

    python -m distgan.bench.jobs --runs 4 --epochs 2 --jobs 2     # 4 seeds of configs/default.yaml

Prints both wall times and their ratio, and writes them to ``reports/bench/jobs.md``. The runs train,
evaluate every epoch (as every comparison does) and save checkpoints; the evaluator must be fitted
(``make evaluator``) so that its one-off fit is not timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from distgan.bench.report import machine


def timed_compare(cfg: str, seeds: str, epochs: int, jobs: int, work: Path, extra: list[str]) -> float:
    shutil.rmtree(work, ignore_errors=True)
    cmd = [sys.executable, "-m", "distgan.compare", cfg, "--epochs", str(epochs), "--seeds", seeds]
    cmd += ["--jobs", str(jobs), "--out", str(work / "report"), "--runs-dir", str(work / "runs"), *extra]
    cmd += ["--set", "output.tracker=none"]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"the comparison failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m distgan.bench.jobs",
        description=__doc__.split("\n\n")[0]
        + " Writes --out (a Markdown table); the default (4 runs of 2 epochs, twice) takes about 7 minutes on 2 cores.",
    )
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--runs", type=int, default=4, help="runs (seeds 0..runs-1)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2, help="runs side by side in the second comparison")
    p.add_argument("--work", default="reports/bench/jobs-work", help="scratch folder (deleted and remade)")
    p.add_argument("--out", default="reports/bench/jobs.md")
    p.add_argument("--set", dest="sets", action="append", default=[], help="an override for every run")
    args = p.parse_args(argv)
    seeds = ",".join(map(str, range(args.runs)))
    extra = [f"--set={s}" for s in args.sets]
    work = Path(args.work)
    one = timed_compare(args.config, seeds, args.epochs, 1, work / "one", extra)
    many = timed_compare(args.config, seeds, args.epochs, args.jobs, work / "many", extra)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    lines = [
        f"# {args.runs} runs of {args.config}, {args.epochs} epochs each (evaluation every epoch)",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine("cpu").items()),
        "",
        "| jobs | threads per run | wall s | ratio |",
        "|---|---|---|---|",
        f"| 1 | {os.cpu_count()} (the run's default) | {one:.0f} | 1.00 |",
        f"| {args.jobs} | {threads} | {many:.0f} | {many / one:.2f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
