"""``python -m distgan.bench``: the command line and its phases (see ``distgan.bench``): (a) loaders,
(b) training rivals per config and precision, (c) distgan on several processes; the report after each."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from distgan import config, data
from distgan.bench.measure import best, child, run_child
from distgan.bench.report import machine, markdown

Log = Callable[[str], None]
DERIVED = ("precisions", "proc_counts", "worker_counts")  # lists check_args derives from the options


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m distgan.bench",
        description=__doc__.split("\n\n")[0]
        + " Writes OUT/bench.json and OUT/BENCHMARKS.md; about 9 minutes on 2 CPU cores with the defaults.",
    )
    p.add_argument("--configs", nargs="+", default=["configs/v5.yaml", "configs/default.yaml"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="no", help="comma-separated: no,bf16,fp16 (fp16 on CUDA only)")
    p.add_argument("--batch-size", type=int, default=256, help="global batch for every rival (default 256)")
    p.add_argument(
        "--seconds",
        type=float,
        default=6.0,
        help="length of a timed window: the plain loop's first run counts the steps that fit, and every rival "
        "then times that many steps (distgan: one epoch of them)",
    )
    p.add_argument("--steps", type=int, help="a fixed number of timed steps instead of --seconds")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (plain and tutorial loops)")
    p.add_argument("--repeats", type=int, default=3, help="each figure is the best of this many runs")
    p.add_argument(
        "--procs", help="process counts for distgan, comma-separated (default: 1,2 on a CPU; 1 and every GPU on CUDA)"
    )
    p.add_argument("--workers", default="0,2", help="DataLoader workers of the tutorial loop, comma-separated")
    p.add_argument("--compile", action="store_true", help="also time distgan with train.compile=default")
    p.add_argument("--no-loader", action="store_true", help="skip the loader comparison")
    p.add_argument("--root", default="data", help="where MNIST is (prepared if missing)")
    p.add_argument("--out", default="reports/bench")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.child:
        check_args(p, args)
    return args


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what the rivals cannot mirror; resolve ``--procs``, ``--precision`` and ``--workers`` to lists."""
    args.precisions = [x for x in args.precision.split(",") if x]
    if any(x not in ("no", "bf16") for x in args.precisions):
        p.error(
            f"--precision takes no and/or bf16, got {args.precision!r} (fp16 needs a loss scaler the rival "
            "loops do not have; launch/gpu_check.sh checks distgan's fp16 path)"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    if args.procs is None:
        args.procs = "1,2" if args.device == "cpu" else ("1" if gpus < 2 else f"1,{gpus}")
    args.proc_counts = [int(x) for x in args.procs.split(",") if x]
    if args.device == "cuda" and max(args.proc_counts) > gpus:
        p.error(f"--procs {args.procs}: this machine has {gpus} GPU(s), one process each at most")
    for path in args.configs:
        cfg = config.load(path)
        if (cfg.train.d_steps, cfg.train.g_steps, cfg.loss.swap_prob) != (1, 1, 0.0):
            p.error(
                f"{path}: the rival loops do one D and one G update per step without label swapping; this config "
                f"has d_steps {cfg.train.d_steps}, g_steps {cfg.train.g_steps}, swap_prob {cfg.loss.swap_prob}"
            )
    args.worker_counts = [int(x) for x in args.workers.split(",") if x]


def loaders(args: argparse.Namespace, base: dict, log: Log) -> list[dict]:
    """(a) 200 batches from torchvision's DataLoader (0 and 2 workers) and from distgan's loader."""
    log("(a) loaders")
    n, over = 200, [f"train.batch_size={args.batch_size}"]
    specs = [
        (
            f"torchvision DataLoader (ToTensor, {w} workers)",
            {**base, "kind": "dataloader", "steps": n, "workers": w, "overrides": over},
            1,
        )
        for w in (0, 2)
    ]
    specs.append(
        ("distgan (device tensor, sharded permutation)", {**base, "kind": "loader", "steps": n, "overrides": over}, 1)
    )
    found = best(specs, args.repeats, log)
    return [{"name": name, **found[name]} for name, _, _ in specs]


def training(args: argparse.Namespace, base: dict, path: str, precision: str, log: Log) -> dict:
    """(b) distgan, the plain loop and the tutorial loop (and compiled distgan) on one config and precision."""
    log(f"(b) {Path(path).stem} in {precision}")
    over = [f"train.batch_size={args.batch_size}", f"train.mixed_precision={precision}"]
    over += [f"train.threads={base['threads']}"] if args.device == "cpu" else []
    spec = {**base, "config": path, "overrides": over, "steps": args.steps, "seconds": args.seconds}
    if spec["steps"] is None:  # size the window: the steps the plain loop fits into --seconds
        spec["steps"] = run_child({**spec, "kind": "plain"})["steps"]
        log(f"  window: {spec['steps']} steps of {args.batch_size}")
    rivals = [("distgan", {**spec, "kind": "distgan"}, 1), ("plain", {**spec, "kind": "plain"}, 1)]
    rivals += [(f"tutorial_w{w}", {**spec, "kind": "tutorial", "workers": w}, 1) for w in args.worker_counts]
    skipped = {}
    if args.compile and config.load(path).loss.r1_gamma:
        # torch.compile has no double backward: distgan refuses compile with R1, so the row says so
        skipped["compiled"] = {"skipped": "R1 penalty (double backward) does not compile"}
        log(f"  compiled: skipped for {Path(path).stem}: {skipped['compiled']['skipped']}")
    elif args.compile:
        rivals.append(("compiled", {**spec, "kind": "distgan", "overrides": [*over, "train.compile=default"]}, 1))
    found = {**best(rivals, args.repeats, log), **skipped}
    tutorial = max((found[f"tutorial_w{w}"] for w in args.worker_counts), key=lambda r: r["img_per_s"])
    return {"config": Path(path).stem, "precision": precision, "steps": spec["steps"], "tutorial": tutorial, **found}


def processes(args: argparse.Namespace, base: dict, path: str, first: dict, report: dict, log: Log) -> None:
    """(c) distgan on each process count of ``--procs`` against its 1-process figure (``first``'s), each row
    added to ``report`` as soon as it is measured."""
    name, one, precision = Path(path).stem, first["distgan"], args.precisions[0]
    for n_procs in args.proc_counts:
        if n_procs == 1:
            continue
        log(f"(c) {name} on {n_procs} processes in {precision}")
        threads_each = max(1, base["threads"] // n_procs)
        over = [f"train.batch_size={args.batch_size}", f"train.mixed_precision={precision}"]
        spec = {
            **base,
            "threads": threads_each,
            "config": path,
            "kind": "distgan",
            "steps": first["steps"],
            "overrides": [*over, f"train.threads={threads_each}"],
        }
        got = best([(f"{n_procs} processes", spec, n_procs)], args.repeats, log)[f"{n_procs} processes"]
        if not any(r["config"] == name for r in report["procs"]):
            report["procs"].append(
                {"config": name, "procs": 1, "img_per_s": one["img_per_s"], "ratio": 1.0, **_memory(one)}
            )
        ratio = got["img_per_s"] / one["img_per_s"]
        report["procs"].append(
            {"config": name, "procs": n_procs, "img_per_s": got["img_per_s"], "ratio": ratio, **_memory(got)}
        )


def _memory(result: dict) -> dict:
    return {k: result[k] for k in ("max_rss_mb_per_rank", "cuda_peak_mb_per_rank")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        result = child(json.loads(args.child))
        Path(f"{args.child_out}{result.get('rank', 0)}.json").write_text(json.dumps(result))
        return 0
    data.prepare("mnist", args.root)
    threads = torch.get_num_threads() if args.device == "cpu" else 1
    base = {
        "device": args.device,
        "root": args.root,
        "threads": threads,
        "warmup": args.warmup,
        "workers": args.workers,
    }
    report: dict = {
        "machine": machine(args.device),
        "args": vars(args),
        "argv": argv if argv is not None else sys.argv[1:],
    }
    out = Path(args.out)

    def log(line: str) -> None:  # progress, and the report so far (a run cut short keeps its rows)
        print(line, flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")

    if not args.no_loader:
        report["loader"] = loaders(args, base, log)
    report["training"], report["procs"] = [], []
    for path in args.configs:
        first = len(report["training"])
        for precision in args.precisions:
            report["training"].append(training(args, base, path, precision, log))
        processes(args, base, path, report["training"][first], report, log)
    log(f"wrote {out / 'bench.json'}")
    text = markdown(report)
    (out / "BENCHMARKS.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
