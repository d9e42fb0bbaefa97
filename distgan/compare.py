"""Train several configs (and seeds) the same way and compare them: tables, curves, a montage, a W&B group.

    python -m distgan.compare configs/v3.2.yaml configs/v5.yaml configs/default.yaml --epochs 3 \\
        --seeds 0,1 --out reports/blog

Each (config, seed) becomes one run under ``--runs-dir`` named ``<config>-s<seed>-e<epochs>-<hash>``, the
hash covering its whole resolved config. A finished run (``summary.json``) whose stored config matches is
reused, not retrained, and an interrupted one is resumed from its last checkpoint; so re-running a
comparison, or adding a config to it, trains only what is new.
Runs are launched as ``python -m distgan.train`` subprocesses, or under ``--launcher`` (for example
``"accelerate launch --config_file launch/cpu_multi.yaml --num_processes 2"``).

``--out`` receives: ``report.md`` (the table, the pairs of configs, the pictures, the runs), ``table.csv``
(one row per config: mean, sample std and 95% interval over seeds; ``distgan.stats``), ``runs.csv`` (one
row per run), ``curves.png`` (FID and losses against
epochs, one line per config), ``montage.png`` (rows = configs, columns = epochs, the same fixed z).
Everything but the timing columns (``wall_s``, ``img_per_s``) is a pure function of the configs and seeds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from distgan import checkpoint, config, jobs, keys, stats
from distgan.dist import free_port
from distgan.errors import CompareError, DistganError

DEFAULT_LAUNCHER = shlex.quote(sys.executable)  # plain python -m distgan.train: one process
TIMING = ("wall_s", "img_per_s")
METRICS = (
    "final_fid",
    "best_fid",
    "best_epoch",
    "kid",
    "is",
    "classes_covered",
    "class_min",
    "class_max",
    "precision",
    "recall",
    "epochs_to_fid",
    *TIMING,
    "params_g",
    "params_d",
)
NAMING_KEYS = {("output", "name"), ("output", "dir"), ("output", "wandb_group")}  # where a run lives, not what it is
EVAL_KEYS = (
    "epoch",
    "step",
    "samples",
    "fid",
    "kid",
    "is",
    "classes_covered",
    "class_min",
    "class_max",
)  # kept per evaluation
NOT_TRAINING = {"claim"}  # what the blog says of a config: read by the report, never by training


# --------------------------------------------------------------------------- planning and training


def _identity(resolved: dict) -> dict:
    return {
        s: {k: v for k, v in sec.items() if (s, k) not in NAMING_KEYS} if isinstance(sec, dict) else sec
        for s, sec in resolved.items()
        if s not in NOT_TRAINING
    }


def _matches(planned, stored) -> bool:
    """Stored equals planned wherever the plan fixes a value (None: the run resolves it, e.g. threads)."""
    if isinstance(planned, dict):
        return isinstance(stored, dict) and all(_matches(v, stored.get(k)) for k, v in planned.items())
    return planned is None or planned == stored


def _stored_config(run: Path) -> dict | None:
    try:
        return config.from_dict(config.read_yaml_file(run / "config.yaml")).to_dict()
    except (OSError, config.ConfigError):
        return None


def with_port(launcher: list[str]) -> list[str]:
    """``launcher`` with ``{port}`` replaced by a free port (one per run started side by side)."""
    port = str(free_port())
    return [part.replace("{port}", port) for part in launcher]


def launcher_world(launcher: list[str]) -> int:
    """How many processes ``launcher`` starts, asked of the launcher itself (``-m distgan.dist`` prints the
    world its processes form): a few seconds, once per comparison."""
    cmd = [*with_port(launcher), "-m", "distgan.dist"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CompareError(f"cannot run {cmd[0]!r} ({err}); check --launcher") from None
    found = re.findall(r"distgan world (\d+)$", proc.stdout, re.MULTILINE)  # launchers may prefix lines
    if proc.returncode or len(found) != 1:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise CompareError(f"--launcher {shlex.join(launcher)!r} did not start a working distgan: {' / '.join(tail)}")
    return int(found[0])


def plan(
    configs: list[str],
    seeds: list[int],
    epochs: int,
    sets: list[str],
    runs_dir: Path,
    group: str,
    world: int = 1,
    threads: int | None = None,
) -> list[dict]:
    """One entry per (config, seed): its overrides, run folder and whether a finished twin exists. ``world``
    (the launcher's process count) is part of a run's identity: a 2-process comparison never reuses
    1-process runs. ``threads``: each run's ``train.threads`` where its config leaves it unset (runs side
    by side share the cores), recorded in its config like any other setting."""
    out = []
    for path in configs:
        for seed in seeds:
            overrides = [
                "eval.every_epochs=1",
                *sets,
                f"train.epochs={epochs}",
                f"train.seed={seed}",
                f"output.dir={runs_dir}",
                f"output.wandb_group={group}",
            ]
            cfg = config.load(path, overrides)
            if threads and cfg.train.threads is None:  # the config (or a --set) fixing threads wins
                overrides.insert(1, f"train.threads={threads}")
                cfg = config.load(path, overrides)
            ident = _identity(cfg.to_dict())
            digest = hashlib.blake2b(json.dumps(ident, sort_keys=True).encode(), digest_size=4).hexdigest()
            name = f"{cfg.name}-s{seed}-e{epochs}-{digest}" + (f"-w{world}" if world > 1 else "")
            run = runs_dir / name
            reuse = resume = False
            if run.exists():
                stored = _stored_config(run)
                if stored is not None and not _matches(ident, _identity(stored)):
                    raise CompareError(f"{run} holds a run of another config; delete it and compare again")
                reuse = (run / "summary.json").is_file()
                if reuse and json.loads((run / "summary.json").read_text()).get("world", 1) != world:
                    raise CompareError(f"{run} was trained by another number of processes; delete it and compare again")
                # a run that never saved a checkpoint starts anew (the trainer renames its folder aside)
                resume = not reuse and checkpoint.read_pointer(run / "checkpoints", "latest") is not None
            out.append(
                {
                    "config": path,
                    "name": cfg.name,
                    "seed": seed,
                    "epochs": epochs,
                    "claim": cfg.claim,
                    "wandb": cfg.output.wandb_project if "wandb" in config.trackers(cfg) else None,
                    "run": run,
                    "reuse": reuse,
                    "overrides": [*overrides, f"output.name={name}", *(["--resume", str(run)] if resume else [])],
                }
            )
    return out


def train_all(entries: list[dict], launcher: list[str], slots: list[tuple[str, ...]], logs: Path) -> list[dict]:
    """Train every entry not reused, ``len(slots)`` at a time (:mod:`distgan.jobs`); return the entries
    whose run failed (``failed``: the exit code). With one slot a run's output goes to this terminal, with
    several to ``logs/<run>.log``. Ctrl-C stops every run (each saves a checkpoint) and raises
    KeyboardInterrupt; the same command then resumes them."""
    todo = []
    for e in entries:
        if e["reuse"]:
            print(f"compare: reusing {e['run']} (finished, same config)", flush=True)
            continue
        cmd = [*with_port(launcher), "-m", "distgan.train", "--config", e["config"], *e["overrides"]]
        log = logs / f"{e['run'].name}.log" if len(slots) > 1 else None
        todo.append((e, jobs.Job(e["run"].name, cmd, log)))
    if not todo:
        return []
    if len(slots) > 1:
        logs.mkdir(parents=True, exist_ok=True)
        print(f"compare: {len(todo)} runs, {len(slots)} at a time; their output in {logs}/", flush=True)
    jobs.run_all([j for _, j in todo], slots, print_fn=lambda line: print(line, flush=True))
    failed = []
    for e, job in todo:
        if job.returncode:
            e["failed"], e["log"] = job.returncode, job.log
            failed.append(e)
    return failed


def _failure(e: dict) -> str:
    what = e["failed"] if isinstance(e["failed"], str) else f"exit code {e['failed']}"
    return what + (f", see {e['log']}" if e.get("log") else "")


def failures(failed: list[dict], total: int, covered: bool) -> str:
    """The one line that ends a comparison in which runs failed (``covered``: the report has the rest)."""
    listed = "; ".join(f"{e['run'].name}: {_failure(e)}" for e in failed)
    rest = "the report covers the others; " if covered else ""
    return f"{len(failed)} of {total} runs failed ({listed}); {rest}run the same command again to retry them"


def slots_for(
    spec: str, world: int, runs: int, launcher: str = DEFAULT_LAUNCHER
) -> tuple[list[tuple[str, ...]], int | None]:
    """``--jobs`` as (slots, threads per run). On GPUs one slot per ``world`` visible GPUs; on a CPU the
    cores split between the jobs (threads None: one job, the run's own default). ``auto``: every GPU group,
    or one job per core; never more jobs than ``runs`` (the threads follow the jobs that run). Several
    multi-process runs at once need ``{port}`` in ``launcher`` (a rendezvous port each)."""
    import torch

    if spec != "auto" and (not spec.isdigit() or int(spec) < 1):
        raise CompareError(f"--jobs must be a number >= 1 or auto, got {spec!r}")
    asked = None if spec == "auto" else int(spec)
    if torch.cuda.is_available():
        try:
            slots = jobs.gpu_slots(asked, world)
        except ValueError as err:
            raise CompareError(f"--jobs: {err}") from None
        if asked is not None and asked > len(slots):
            raise CompareError(f"--jobs {asked}: only {len(slots)} group(s) of {world} GPU(s) are visible")
        n = len(slots)
    else:
        n = asked or max(1, (os.cpu_count() or 1) // world)
        slots = [() for _ in range(n)]
    n = max(1, min(n, runs))  # never more jobs than runs (runs is fixed by the command: names stay stable)
    if world > 1 and n > 1 and "{port}" not in launcher:
        raise CompareError(
            "several multi-process runs at once need a rendezvous port each: put {port} in --launcher, "
            "e.g. 'accelerate launch --num_processes 2 --main_process_port {port}'"
        )
    threads = max(1, (os.cpu_count() or 1) // (n * world)) if n > 1 else None
    return slots[:n], threads


SBATCH_ARRAY = """#!/usr/bin/env bash
# distgan.compare --slurm: one array task per run. Each task continues its run if it exists (--resume auto
# with the run's fixed name), so a requeued (pre-empted) or resubmitted (timed-out) task resumes. SIGTERM
# 120 s before the end goes to the batch shell (B:), which exec'd the trainer: it saves a checkpoint and exits.
#SBATCH --job-name={job}
#SBATCH --array=0-{last}{limit}
#SBATCH --output={logs}/%x-%A_%a.out
#SBATCH --signal=B:TERM@120
#SBATCH --requeue
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={cpus}
{gpus}set -euo pipefail
cd {cwd}
RUNS=(
{runs}
)
eval "exec ${{RUNS[$SLURM_ARRAY_TASK_ID]}}"
"""

SBATCH_REPORT = """#!/usr/bin/env bash
# distgan.compare --slurm: the report, once every array task has ended (sbatch --dependency=afterany).
#SBATCH --job-name={job}-report
#SBATCH --output={logs}/%x-%j.out
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={cpus}
set -euo pipefail
cd {cwd}
{report}
"""


def write_slurm(
    entries: list[dict], launcher: list[str], out: Path, argv: list[str], cpus: int, gpus: int
) -> tuple[Path, Path]:
    """The comparison as SLURM jobs: ``out/slurm/array.sbatch`` (task i trains entry i, ``--resume auto``)
    and ``out/slurm/report.sbatch`` (this command without ``--slurm``, ``--report-only``)."""
    folder = out / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for i, e in enumerate(entries):
        overrides = [o for o in e["overrides"] if o != "--resume" and o != str(e["run"])]
        task_launcher = [part.replace("{port}", str(29500 + i % 20000)) for part in launcher]  # tasks may share a node
        runs.append(
            shlex.join([*task_launcher, "-m", "distgan.train", "--config", e["config"], *overrides, "--resume", "auto"])
        )
    given = _drop_values([a for a in argv if a != "--slurm"], ("--jobs", "--sbatch-args"))
    report = [sys.executable, "-m", "distgan.compare", *given, "--report-only"]
    fields = {"job": f"distgan-{out.name}", "logs": str((out / "logs").resolve()), "cpus": cpus}  # #SBATCH: no shell
    fields["cwd"] = shlex.quote(str(Path.cwd()))
    array = folder / "array.sbatch"
    array.write_text(
        SBATCH_ARRAY.format(
            **fields,
            last=len(entries) - 1,
            limit="",
            gpus=f"#SBATCH --gpus-per-task={gpus}\n" if gpus else "",
            runs="\n".join(f"  {shlex.quote(r)}" for r in runs),
        )
    )
    rep = folder / "report.sbatch"
    rep.write_text(SBATCH_REPORT.format(**fields, report=shlex.join(report)))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    return array, rep


def _drop_values(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` without ``flags`` and their values (``--flag V`` or ``--flag=V``)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        elif not any(a.startswith(f + "=") for f in flags):
            kept.append(a)
    return kept


def submit_slurm(array: Path, report: Path, extra: list[str]) -> str:
    """sbatch the array, then the report after it; returns what was submitted."""
    try:
        first = subprocess.run(["sbatch", "--parsable", *extra, str(array)], capture_output=True, text=True, check=True)
        job = first.stdout.strip().split(";")[0]
        second = subprocess.run(
            ["sbatch", "--parsable", f"--dependency=afterany:{job}", *extra, str(report)],
            capture_output=True,
            text=True,
            check=True,
        )
    except FileNotFoundError:
        raise CompareError(
            f"sbatch is not on this machine; the jobs are written: sbatch {array}, then "
            f"sbatch --dependency=afterany:<its job id> {report}"
        ) from None
    except subprocess.CalledProcessError as err:
        raise CompareError(f"sbatch refused the job: {err.stderr.strip() or err.stdout.strip()}") from None
    return f"array job {job} ({array}), report job {second.stdout.strip()} after it ({report})"


# --------------------------------------------------------------------------- reading runs


def read_run(run: Path, fid_threshold: float) -> dict:
    """Per-epoch curves and the table's numbers for one finished run."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run / "summary.json").read_text())
    evals = [r for r in rows if r.get("event") == "eval"]
    ends = [r for r in rows if r.get("event") == "epoch_end"]
    steps = [r for r in rows if "loss_d" in r]
    losses = {"loss_d": [], "loss_g": []}
    start = 0
    for end in ends:  # the mean of each epoch's step losses
        chunk = [r for r in steps if start <= r["step"] < end["step"]]
        for key in losses:
            vals = [r[key] for r in chunk if r[key] is not None]
            losses[key].append(float(np.mean(vals)) if vals else math.nan)
        start = end["step"]
    fids = [r["fid"] for r in evals]
    last = evals[-1] if evals else {}
    best = int(np.argmin(fids)) if fids else None
    reached = [r["epoch"] for r in evals if r["fid"] <= fid_threshold]
    return {
        "evals": [{k: r.get(k) for k in EVAL_KEYS} for r in evals],
        "epochs": [r["epoch"] for r in evals],
        "fid": fids,
        "loss_epochs": [r["epoch"] for r in ends],
        **losses,
        "final_fid": last.get("fid"),
        "best_fid": fids[best] if fids else None,
        "best_epoch": evals[best]["epoch"] if fids else None,
        "kid": last.get("kid"),
        "is": last.get("is"),
        "classes_covered": last.get("classes_covered"),
        "class_min": last.get("class_min"),
        "class_max": last.get("class_max"),
        "precision": last.get("precision"),
        "recall": last.get("recall"),
        "epochs_to_fid": reached[0] if reached else None,
        "wall_s": summary["seconds"],
        "img_per_s": summary["img_per_s"],
        "params_g": summary.get("params_g"),
        "params_d": summary.get("params_d"),
    }


def read_all(entries: list[dict], fid_threshold: float) -> None:
    """Attach each finished run's ``result`` (read_run) and its evaluations' sample count to its entry."""
    for e in entries:
        e["result"] = read_run(e["run"], fid_threshold)
        if e["result"]["final_fid"] is None:
            raise CompareError(f"{e['run']} has no evaluation; was eval.every_epochs set to 0?")
        e["samples"] = e["result"]["evals"][-1]["samples"]


def _stats(values: list) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def aggregate(entries: list[dict]) -> list[dict]:
    """One row per config, in the order given: mean, spread (sample std) and the half-width of the mean's
    95% confidence interval (Student's t over seeds; ``distgan.stats``)."""
    table = []
    for name in dict.fromkeys(e["name"] for e in entries):
        mine = [e for e in entries if e["name"] == name]
        row = {"config": name, "seeds": " ".join(str(e["seed"]) for e in mine)}
        for key in METRICS:
            values = [e["result"][key] for e in mine]
            mean, std = _stats(values)
            row[key], row[f"{key}_std"], row[f"{key}_ci95"] = mean, std, stats.ci95(values)[1]
        row["reached"] = f"{sum(e['result']['epochs_to_fid'] is not None for e in mine)}/{len(mine)}"
        table.append(row)
    return table


# --------------------------------------------------------------------------- writing the report


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and (digits <= 1 or abs(value) >= 100):
        return f"{int(value):,}"  # counts, epochs, parameters: no decimals
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in row.items()})


def markdown_table(table: list[dict], seeds: int, fid_threshold: float) -> str:
    cols = [
        ("FID final", "final_fid", 2),
        ("FID best (epoch)", "best_fid", 2),
        ("KID final", "kid", 4),
        ("IS", "is", 3),
        ("classes", "classes_covered", 1),
        ("class share min/max %", None, 1),
        ("precision", "precision", 3),
        ("recall", "recall", 3),
        (f"epoch FID<={fid_threshold:g}", "epochs_to_fid", 1),
        ("wall s", "wall_s", 0),
        ("img/s", "img_per_s", 0),
        ("params G / D", None, 0),
    ]
    lines = ["| config | " + " | ".join(c for c, _, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in table:
        cells = []
        for title, key, digits in cols:
            if title.startswith("class share"):
                lo, hi = r["class_min"], r["class_max"]
                cells.append("-" if lo is None else f"{100 * lo:.1f} / {100 * hi:.1f}")
            elif title.startswith("params"):
                cells.append(f"{_fmt(r['params_g'], 0)} / {_fmt(r['params_d'], 0)}")
            else:
                cell = _fmt(r[key], digits)
                if key == "best_fid" and r["best_epoch"] is not None:
                    cell += f" ({_fmt(r['best_epoch'], 1)})"
                if seeds > 1 and r[f"{key}_ci95"] is not None and key not in ("params_g", "params_d"):
                    cell += f" ± {_fmt(r[f'{key}_ci95'], digits)}"
                if key == "epochs_to_fid" and seeds > 1:
                    cell += f" [{r['reached']}]"
                cells.append(cell)
        lines.append(f"| {r['config']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


PAIRED = (("final FID", "final_fid", True), ("IS", "is", False))  # (title, key, lower is better)


def pairs_table(entries: list[dict]) -> str:
    """Every pair of configs on final FID and IS: how often A beats B over all (seed, seed) pairs, and whether
    the seeds can tell them apart (disjoint 95% intervals)."""
    names = list(dict.fromkeys(e["name"] for e in entries))
    values = {n: {k: [e["result"][k] for e in entries if e["name"] == n] for _, k, _ in PAIRED} for n in names}
    head = "| A | B | " + " | ".join(f"{t}: A beats B | {t}: verdict" for t, _, _ in PAIRED) + " |"
    lines = [head, "|---" * (2 + 2 * len(PAIRED)) + "|"]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            cells = [a, b]
            for _, key, lower in PAIRED:
                rate = stats.win_rate(values[a][key], values[b][key], lower)
                cells += [
                    "-" if rate is None else f"{100 * rate:.0f}%",
                    stats.verdict(values[a][key], values[b][key], (a, b), lower),
                ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(entries: list[dict], path: Path) -> list[list[float]]:
    """FID and both losses per epoch, a line per config; returns each panel's epoch ticks (whole epochs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for name in dict.fromkeys(e["name"] for e in entries):
        mine = [e["result"] for e in entries if e["name"] == name]
        for ax, key, xs_key in (
            (axes[0], "fid", "epochs"),
            (axes[1], "loss_d", "loss_epochs"),
            (axes[2], "loss_g", "loss_epochs"),
        ):
            n = min(len(r[key]) for r in mine)
            if n == 0:
                continue
            ys = np.array([r[key][:n] for r in mine], dtype=float)
            xs = mine[0][xs_key][:n]
            (line,) = ax.plot(xs, ys.mean(0), marker="o", label=name)
            if len(mine) > 1:
                ax.fill_between(xs, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
    for ax, title in zip(
        axes, ("FID (evaluator features; lower is better)", "D loss (epoch mean)", "G loss (epoch mean)"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        low, high = ax.get_xlim()
        ax.set_xlim(min(low, round(low) - 0.5), max(high, round(high) + 0.5))  # one epoch: a tick at 1, not 0.96
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    fig.suptitle("lines: mean over seeds; bands: the seeds' range (min to max)", fontsize=9)
    axes[0].legend()
    fig.savefig(path, dpi=100)
    ticks = [[t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] for ax in axes]
    plt.close(fig)
    return ticks


def montage_epochs(epochs: int, n: int = 4) -> list[int]:
    return sorted({max(1, round(epochs * (i + 1) / n)) for i in range(n)})


def saved_grids(run: Path, n: int = 4) -> list[str]:
    """Up to n of a run's sample grids (file stems, oldest to newest), spread evenly, the last one included."""
    stems = sorted(p.stem for p in (run / "samples").glob("*.png"))
    if len(stems) <= n:
        return stems
    return [stems[round(i * (len(stems) - 1) / (n - 1))] for i in range(n)]


def plot_montage(entries: list[dict], columns: list[int] | None, path: Path) -> None:
    """Rows: each config's first seed; columns: ``columns`` epochs, or (None) up to four of each row's own
    saved grids (``saved_grids``), each cell then titled with its own name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    firsts = list({e["name"]: e for e in reversed(entries)}.values())[::-1]  # each config's first seed
    rows = [[f"epoch-{c:03d}" for c in columns] if columns else saved_grids(e["run"]) for e in firsts]
    width = max(map(len, rows))
    fig, axes = plt.subplots(
        len(firsts),
        width,
        figsize=(2.4 * width, 2.5 * len(firsts)),
        squeeze=False,
        constrained_layout=True,
    )
    for i, (e, epochs) in enumerate(zip(firsts, rows, strict=True)):
        for j in range(width):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(epochs):
                ax.axis("off")
                continue
            png = e["run"] / "samples" / f"{epochs[j]}.png"
            if png.is_file():
                ax.imshow(np.asarray(Image.open(png)), cmap="gray", vmin=0, vmax=255)
            if columns is None or i == 0:
                ax.set_title(re.sub(r"-0*(?=\d)", " ", epochs[j]))  # epoch-004 -> epoch 4
            if j == 0:
                ax.set_ylabel(f"{e['name']} (seed {e['seed']})")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def command_line(module: str, argv: list[str] | None) -> str:
    """The command as a user would type it again (``python -m module ...``), for a report."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def write_report(
    entries: list[dict], out: Path, args: argparse.Namespace, failed: list[dict] | None = None
) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(entries)
    _write_csv(out / "table.csv", table)
    per_run = [
        {"config": e["name"], "seed": e["seed"], "run": e["run"].name, **{k: e["result"][k] for k in METRICS}}
        for e in entries
    ]
    _write_csv(out / "runs.csv", per_run)
    plot_curves(entries, out / "curves.png")
    budgets = sorted({e["epochs"] for e in entries})
    same = len(budgets) == 1
    columns = args.montage_epochs or (montage_epochs(budgets[0]) if same else None)
    plot_montage(entries, columns, out / "montage.png")
    machine = f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    text = [
        f"# Comparison: {out.name}",
        "",
        f"{_count(len(table), 'config')}, {_count(len(args.seeds), 'seed')} "
        f"({', '.join(map(str, args.seeds))}), "
        f"{_count(budgets[0], 'epoch') + ' each' if same else 'each at its own budget'}; "
        f"metrics from the last epoch's evaluation ({entries[0]['samples']} samples against the 10k test images, "
        "in the features of distgan's evaluator). With several seeds: mean ± the half-width of its 95% "
        "confidence interval (Student's t over seeds; table.csv also holds the sample std).",
        "",
        markdown_table(table, len(args.seeds), args.fid_threshold),
        "",
        *(
            [
                "## Pairs",
                "",
                "Over every (seed of A, seed of B) pair, how often A beats B (lower FID, higher IS; ties half), "
                "and a verdict only where the 95% intervals are disjoint.",
                "",
                pairs_table(entries),
                "",
            ]
            if len(table) > 1
            else []
        ),
        "![curves](curves.png)",
        "",
        "![montage](montage.png)",
        "",
        "## Runs",
        "",
        *[f"- `{e['run']}` ({'reused' if e['reuse'] else 'trained'}): {e['config']} seed {e['seed']}" for e in entries],
        "",
        *(
            [
                "## Failed runs (not in the tables; the same command retries them)",
                "",
                *[f"- `{e['run']}`: {e['config']} seed {e['seed']}, {_failure(e)}" for e in failed],
                "",
            ]
            if failed
            else []
        ),
        f"Machine: {machine}. Command: `{args.command}`",
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    return table


# --------------------------------------------------------------------------- command line


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_run_arguments(p: argparse.ArgumentParser, set_metavar: str, set_help: str) -> None:
    """--runs-dir, --set and --launcher: how runs are made, shared with ``distgan.blog``."""
    p.add_argument("--runs-dir", default="runs", help="where runs are made and looked up for reuse (default runs)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar=set_metavar, help=set_help)
    p.add_argument(
        "--launcher",
        default=DEFAULT_LAUNCHER,
        help="command that runs `-m distgan.train ...`, e.g. 'accelerate launch --num_processes 2'",
    )
    p.add_argument(
        "--jobs",
        default="1",
        help="runs side by side: N or auto (one per GPU, or per group of --launcher's GPUs; on a CPU one per "
        "core, the cores split between them as train.threads). Default 1",
    )


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = keys.parser(
        "python -m distgan.compare",
        __doc__.split("\n\n")[0]
        + " Writes OUT/: table.csv, runs.csv, report.md, curves.png, montage.png (and OUT/logs/ with --jobs), and one "
        "run per config and seed under --runs-dir, reused when it already finished. Each run takes what its "
        "config takes; the first evaluation also fits the evaluator (about 2.5 minutes on 2 cores, once).",
    )
    p.add_argument("configs", nargs="+", help="config YAML files, in the order the report lists them")
    p.add_argument("--epochs", type=int, required=True, help="epochs for every run")
    p.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated seeds (default 0)")
    p.add_argument("--out", required=True, help="report folder, e.g. reports/blog; its name is the W&B group")
    add_run_arguments(p, "KEY=VALUE", "an override for every run, e.g. --set eval.samples=5000 (repeatable)")
    p.add_argument("--fid-threshold", type=float, default=20.0, help="the table's 'epochs to reach FID' threshold")
    p.add_argument("--montage-epochs", type=_int_list, help="montage columns (default: 4 evenly spaced epochs)")
    p.add_argument(
        "--slurm",
        action="store_true",
        help="submit the runs to SLURM as one array job (a task per run) plus a report job after it, instead "
        "of training here; the scripts are written to OUT/slurm/",
    )
    p.add_argument("--sbatch-args", default="", help="extra sbatch options for both jobs, e.g. '--partition gpu'")
    p.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per array task (default 0: a CPU job)")
    p.add_argument(
        "--slurm-cpus", type=int, default=4, help="CPU cores per array task, its runs' train.threads (default 4)"
    )
    p.add_argument("--report-only", action="store_true", help="train nothing: report the runs already finished")
    p.add_argument("--world", type=int, help="processes per run (default: asked of --launcher; needed with --slurm)")
    return p, p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    p, args = parse_args(argv)
    args.command = command_line("distgan.compare", argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    if len(set(args.configs)) != len(args.configs):
        p.error("a config is listed twice")
    out = Path(args.out)
    try:
        for path in args.configs:
            if not Path(path).is_file():
                raise CompareError(f"config file {path} does not exist; the shipped ones are in configs/")
        if args.montage_epochs and not all(1 <= m <= args.epochs for m in args.montage_epochs):
            raise CompareError(f"--montage-epochs must lie in 1..{args.epochs}")
        launcher = shlex.split(args.launcher)
        if args.slurm or args.report_only:  # nothing trains here: each run alone on its SLURM allocation
            if args.world is None and args.launcher != DEFAULT_LAUNCHER:
                raise CompareError("with --slurm and a --launcher, give --world N (the processes each run starts)")
            world = args.world or 1
            slots, threads = [()], max(1, args.slurm_cpus // world)
        else:
            world = args.world or (1 if args.launcher == DEFAULT_LAUNCHER else launcher_world(launcher))
            slots, threads = slots_for(args.jobs, world, len(args.configs) * len(args.seeds), args.launcher)
        entries = plan(args.configs, args.seeds, args.epochs, args.sets, Path(args.runs_dir), out.name, world, threads)
        if len({e["name"] for e in entries}) != len(args.configs):
            raise CompareError("two configs share a name; rename one (the report names rows by config name)")
        if args.slurm:
            given = sys.argv[1:] if argv is None else argv
            array, report = write_slurm(entries, launcher, out, given, args.slurm_cpus, args.slurm_gpus)
            print(f"compare: submitted {submit_slurm(array, report, shlex.split(args.sbatch_args))}")
            return 0
        if args.report_only:
            failed = [e for e in entries if not e["reuse"]]
            for e in failed:
                e["failed"], e["log"] = "not finished", None
        else:
            failed = train_all(entries, launcher, slots, out / "logs")
        done = [e for e in entries if "failed" not in e]
        if done:
            read_all(done, args.fid_threshold)
            table = write_report(done, out, args, failed)
            projects = {e["wandb"] for e in done if e["wandb"]}
            if projects:  # the runs logged to W&B: one more run there holds the report
                from distgan import tracking

                pictures = {"curves": out / "curves.png", "montage": out / "montage.png"}
                for project in sorted(projects):
                    tracking.summary_run(out, project, out.name, table, pictures)
        if failed:
            raise CompareError(failures(failed, len(entries), covered=bool(done)))
    except KeyboardInterrupt:
        print("compare: stopped; run the same command again to resume", file=sys.stderr)
        return 130
    except DistganError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(markdown_table(table, len(args.seeds), args.fid_threshold))
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
