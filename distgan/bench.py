"""Speed, side by side on one machine: ``python -m distgan.bench`` (``make bench``).

(a) batches/s of distgan's loader (uint8 images on the device, a seeded permutation cut into shards)
    against torchvision's MNIST + ToTensor + DataLoader pipeline;
(b) training img/s per config: distgan (``python -m distgan.train`` itself) against a plain PyTorch loop of
    the same models, losses and optimisers on the same tensors (the framework's overhead) and against the
    classic tutorial loop (DataLoader batches, two D forwards, ``.item()`` every step);
(c) distgan on 1 against 2 processes (same global batch; gloo on a CPU, NCCL on GPUs);
(d) peak memory of every process (max RSS; peak CUDA allocation on a GPU).

Every measurement runs in a fresh subprocess (clean memory figures, no warm caches shared between rivals);
rivals alternate, and each figure is the best of ``--repeats``. distgan is timed on its second epoch of a
``data.limit`` subset (the first is the warm-up, compilation included), from its own metrics.jsonl: the
same loop a user runs, epoch-end flush included. Writes ``bench.json`` and ``BENCHMARKS.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor

from distgan import config, data, losses, models
from distgan.batches import DeviceImages, epoch_permutation, shard

LAUNCH = Path(__file__).resolve().parent.parent / "launch"


# ---------------------------------------------------------------- what every child reports


def peak_memory(device: torch.device) -> dict:
    """This process's peak resident memory (MB; Linux reports KB) and, on CUDA, its peak allocation."""
    out = {"max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def timed(step, warmup: int, steps: int | None, device: torch.device, seconds: float = 0.0) -> tuple[float, int]:
    """(seconds, calls) for ``steps`` calls of step(i) after ``warmup`` untimed ones, device work included;
    ``steps`` None: as many calls as fit in ``seconds`` (how the benchmark sizes its windows)."""
    for i in range(warmup):
        step(i)
    sync(device)
    t0 = time.perf_counter()
    i = warmup
    while (i - warmup < steps) if steps is not None else (time.perf_counter() - t0 < seconds or i - warmup < 8):
        step(i)
        i += 1
    sync(device)
    return time.perf_counter() - t0, i - warmup


# ---------------------------------------------------------------- (a) loaders


def distgan_loader(images: Tensor, batch: int, batches: int, device: torch.device) -> tuple[float, int]:
    """Seconds for ``batches`` float batches from distgan's loader, epochs redrawn as needed."""
    held = DeviceImages(images, device)
    per_epoch = len(held) // batch
    idx = None

    def step(i: int) -> None:
        nonlocal idx
        if i % per_epoch == 0:
            idx = shard(epoch_permutation(len(held), 0, i // per_epoch), batch, 1, 0).to(device)
        held.batch(idx[i % per_epoch]).sum()  # consume it, as a model would

    return timed(step, 2, batches, device)


def tutorial_batches(root: str, batch: int, workers: int):
    """The tutorial pipeline: torchvision MNIST, ToTensor, a shuffled DataLoader; cycles over epochs."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    dataset = datasets.MNIST(root, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    while True:
        yield from loader


def dataloader(root: str, batch: int, batches: int, workers: int, device: torch.device) -> tuple[float, int]:
    it = tutorial_batches(root, batch, workers)
    return timed(lambda i: next(it)[0].to(device).sum(), 2, batches, device)


# ---------------------------------------------------------------- (b) the two rival loops


def build(cfg: config.Config, device: torch.device):
    torch.manual_seed(cfg.train.seed)
    G, D = models.build_pair(cfg.model)
    return G.to(device), D.to(device)


def plain_loop(
    cfg: config.Config, images: Tensor, device: torch.device, warmup: int, steps: int | None, seconds: float
) -> tuple[float, int]:
    """The same update as distgan's (D on cat(real, fake) or separately, smoothed labels, lazy R1, EMA, fused
    Adam), written as one hand-made loop on device tensors, with no logging, checks or launcher."""
    from distgan.train import couples_batch, make_adam

    G, D = build(cfg, device)
    precision = cfg.train.mixed_precision or "no"
    opt_g, opt_d = make_adam(G, cfg.optim.g, precision != "fp16"), make_adam(D, cfg.optim.d, precision != "fp16")
    ema = [p.detach().clone() for p in G.parameters()] if cfg.model.ema_decay else None
    separate = cfg.train.d_forward == "separate" or (cfg.train.d_forward == "auto" and couples_batch(D))
    B, z_dim, t = cfg.train.batch_size, cfg.model.z_dim, cfg.train
    held = images.to(device)
    order = torch.randperm(len(held), device=device)

    def targets(lo_hi: tuple[float, float]) -> Tensor:
        return torch.empty(B, device=device).uniform_(*lo_hi)

    def penalty(real_l: Tensor, real: Tensor) -> Tensor:
        """Lazy R1, weighted by how rarely it runs."""
        return cfg.loss.r1_every * losses.r1(real, real_l, cfg.loss.r1_gamma)

    def step(i: int) -> None:
        for k in range(t.d_steps):
            start = ((i * t.d_steps + k) * B) % (len(held) - B + 1)
            real = held[order[start : start + B]].unsqueeze(1).float().div_(255)
            z = torch.randn(B, z_dim, device=device)
            real_t, fake_t = targets(cfg.loss.real_label), targets(cfg.loss.fake_label)
            r1 = cfg.loss.r1_gamma > 0 and (i * t.d_steps + k) % cfg.loss.r1_every == 0
            real.requires_grad_(r1)
            opt_d.zero_grad(set_to_none=True)
            with autocast(device, precision):
                with torch.no_grad():
                    fake = G(z).to(real.dtype)
                if separate:
                    real_l = D(real).float()
                    loss = losses.d_term(cfg.loss.d, real_l, real_t)
                    (loss + penalty(real_l, real) if r1 else loss).backward()
                    losses.d_term(cfg.loss.d, D(fake).float(), fake_t).backward()
                else:
                    real_l, fake_l = D(torch.cat([real, fake])).float().split([B, B])
                    loss = losses.d_loss(cfg.loss.d, real_l, fake_l, real_t, fake_t)
                    (loss + penalty(real_l, real) if r1 else loss).backward()
            opt_d.step()
        for _ in range(t.g_steps):
            D.requires_grad_(False)
            opt_g.zero_grad(set_to_none=True)
            with autocast(device, precision):
                losses.g_loss(cfg.loss.g, D(G(torch.randn(B, z_dim, device=device))).float()).backward()
            D.requires_grad_(True)
            opt_g.step()
            if ema is not None:
                torch._foreach_lerp_(ema, [p.detach() for p in G.parameters()], 1 - cfg.model.ema_decay)

    return timed(step, warmup, steps, device, seconds)


def tutorial_loop(
    cfg: config.Config, root: str, device: torch.device, warmup: int, steps: int, workers: int
) -> tuple[float, int]:
    """The classic tutorial: DataLoader batches, D on real then on fake.detach(), G through D on the same
    fake, hard labels, no R1 penalty, torch.optim.Adam with its defaults, both losses read with ``.item()``
    every step.
    Like the plain loop, a rival without accelerate: its bare ``backward()`` calls are the point."""
    G, D = build(cfg, device)
    precision = cfg.train.mixed_precision or "no"
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.g.lr, betas=cfg.optim.g.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.optim.d.lr, betas=cfg.optim.d.betas)
    criterion = torch.nn.BCEWithLogitsLoss()
    batches = tutorial_batches(root, cfg.train.batch_size, workers)
    history = []

    def step(i: int) -> None:
        real = next(batches)[0].to(device)
        ones = torch.full((len(real),), 1.0, device=device)
        zeros = torch.zeros(len(real), device=device)
        with autocast(device, precision):
            D.zero_grad()
            err_real = criterion(D(real).float(), ones)
            err_real.backward()
            fake = G(torch.randn(len(real), cfg.model.z_dim, device=device))
            err_fake = criterion(D(fake.detach()).float(), zeros)
            err_fake.backward()
            opt_d.step()
            G.zero_grad()
            err_g = criterion(D(fake).float(), ones)
            err_g.backward()
            opt_g.step()
        history.append((err_real.item() + err_fake.item(), err_g.item()))

    return timed(step, warmup, steps, device)


# ---------------------------------------------------------------- children (one measurement per process)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


# ---------------------------------------------------------------- the report


def machine(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def memory(result: dict) -> str:
    """Peak host RSS in MB, and the peak CUDA allocation when there is one."""
    rss = f"{result['max_rss_mb']:,.0f}"
    return rss + (f" ({result['cuda_peak_mb']:,.0f} CUDA)" if "cuda_peak_mb" in result else "")


def markdown(report: dict) -> str:
    m, a = report["machine"], report["args"]
    lines = [
        "# distgan benchmarks",
        "",
        f"Machine: {m.get('gpu', m['cpu'])}" + (f" ({m['gpus']} GPU)" if "gpu" in m else f", {m['cores']} cores"),
        f"({m['platform']}), Python {m['python']}, torch {m['torch']}; {m['date']}. Device {a['device']}, global",
        f"batch {a['batch_size']}, "
        + (f"{a['steps']} timed steps" if a["steps"] else f"timed windows of about {a['seconds']} s (steps per row)")
        + f", best of {a['repeats']}.",
        "Regenerate: `python -m distgan.bench " + " ".join(report["argv"]) + "`.",
        "",
    ]
    if report.get("loader"):
        base = report["loader"][0]["img_per_s"]
        lines += ["## (a) Loaders: batches of real images", "", "| loader | batches/s | img/s | vs DataLoader |"]
        lines += ["|---|---|---|---|"]
        for row in report["loader"]:
            r = row["img_per_s"]
            lines.append(f"| {row['name']} | {r / a['batch_size']:,.1f} | {r:,.0f} | {r / base:.2f}x |")
        lines.append("")
    workers = [k[len("tutorial_w") :] for k in report["training"][0] if k.startswith("tutorial_w")]
    compiled = "compiled" in report["training"][0]
    head = ["config", "precision", "steps", "distgan img/s", "plain loop img/s"]
    head += [f"tutorial, {w} workers, img/s" for w in workers]
    head += ["distgan / plain", "distgan / best tutorial"]
    head += ["compiled img/s", "compiled / distgan"] if compiled else []
    head += ["peak MB (RSS, CUDA): distgan / plain / tutorial"]
    lines += [
        "## (b, d) Training: distgan against a plain loop and the tutorial loop",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in report["training"]:
        d, p, t = row["distgan"]["img_per_s"], row["plain"]["img_per_s"], row["tutorial"]["img_per_s"]
        cells = [row["config"], row["precision"], str(row["steps"]), f"{d:,.0f}", f"{p:,.0f}"]
        cells += [f"{row[f'tutorial_w{w}']['img_per_s']:,.0f}" for w in workers]
        cells += [f"{d / p:.3f}x", f"{d / t:.2f}x"]
        if compiled:
            cells += [f"{row['compiled']['img_per_s']:,.0f}", f"{row['compiled']['img_per_s'] / d:.2f}x"]
        cells.append(" / ".join(memory(row[k]) for k in ("distgan", "plain", "tutorial")))
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("procs"):
        lines += [
            "",
            "## (c, d) distgan on 1 and several processes (same global batch)",
            "",
            "| config | processes | img/s | vs 1 process | peak RSS MB per process | peak CUDA MB per process |",
            "|---|---|---|---|---|---|",
        ]
        for row in report["procs"]:
            rss = ", ".join(f"{x:,.0f}" for x in row["max_rss_mb_per_rank"])
            cuda = ", ".join(f"{x:,.0f}" for x in row["cuda_peak_mb_per_rank"]) or "-"
            lines.append(
                f"| {row['config']} | {row['procs']} | {row['img_per_s']:,.0f} | {row['ratio']:.2f}x | {rss} | {cuda} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distgan.bench", description=__doc__.split("\n\n")[0])
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
    if args.child:
        result = child(json.loads(args.child))
        rank = result.get("rank", 0)
        Path(f"{args.child_out}{rank}.json").write_text(json.dumps(result))
        return 0

    precisions = [x for x in args.precision.split(",") if x]
    if any(x not in ("no", "bf16") for x in precisions):
        p.error(
            f"--precision takes no and/or bf16, got {args.precision!r} (fp16 needs a loss scaler the rival "
            "loops do not have; launch/gpu_check.sh checks distgan's fp16 path)"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    if args.procs is None:
        args.procs = "1,2" if args.device == "cpu" else ("1" if gpus < 2 else f"1,{gpus}")
    procs = [int(x) for x in args.procs.split(",") if x]
    if args.device == "cuda" and max(procs) > gpus:
        p.error(f"--procs {args.procs}: this machine has {gpus} GPU(s), one process each at most")
    for path in args.configs:
        cfg = config.load(path)
        if (cfg.train.d_steps, cfg.train.g_steps, cfg.loss.swap_prob) != (1, 1, 0.0):
            p.error(
                f"{path}: the rival loops do one D and one G update per step without label swapping; this config "
                f"has d_steps {cfg.train.d_steps}, g_steps {cfg.train.g_steps}, swap_prob {cfg.loss.swap_prob}"
            )
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

    workers = [int(x) for x in args.workers.split(",") if x]
    if not args.no_loader:
        log("(a) loaders")
        n = 200
        specs = [
            (
                "torchvision DataLoader (ToTensor, 0 workers)",
                {**base, "kind": "dataloader", "steps": n, "workers": 0},
                1,
            ),
            (
                "torchvision DataLoader (ToTensor, 2 workers)",
                {**base, "kind": "dataloader", "steps": n, "workers": 2},
                1,
            ),
            ("distgan (device tensor, sharded permutation)", {**base, "kind": "loader", "steps": n}, 1),
        ]
        for spec in specs:
            spec[1]["overrides"] = [f"train.batch_size={args.batch_size}"]
        found = best(specs, args.repeats, log)
        report["loader"] = [{"name": name, **found[name]} for name, _, _ in specs]
    report["training"], report["procs"] = [], []
    for path in args.configs:
        name = Path(path).stem
        rows = []
        for precision in precisions:
            log(f"(b) {name} in {precision}")
            over = [f"train.batch_size={args.batch_size}", f"train.mixed_precision={precision}"]
            over += [f"train.threads={threads}"] if args.device == "cpu" else []
            spec = {**base, "config": path, "overrides": over, "steps": args.steps, "seconds": args.seconds}
            if spec["steps"] is None:  # size the window: the steps the plain loop fits into --seconds
                spec["steps"] = run_child({**spec, "kind": "plain"})["steps"]
                log(f"  window: {spec['steps']} steps of {args.batch_size}")
            rivals = [("distgan", {**spec, "kind": "distgan"}, 1), ("plain", {**spec, "kind": "plain"}, 1)]
            rivals += [(f"tutorial_w{w}", {**spec, "kind": "tutorial", "workers": w}, 1) for w in workers]
            if args.compile:
                rivals.append(
                    ("compiled", {**spec, "kind": "distgan", "overrides": [*over, "train.compile=default"]}, 1)
                )
            found = best(rivals, args.repeats, log)
            tutorial = max((found[f"tutorial_w{w}"] for w in workers), key=lambda r: r["img_per_s"])
            rows.append({"config": name, "precision": precision, "steps": spec["steps"], "tutorial": tutorial, **found})
            report["training"].append(rows[-1])
        one = rows[0]["distgan"]  # the first precision's 1-process figure
        for n_procs in procs:
            if n_procs == 1:
                continue
            log(f"(c) {name} on {n_procs} processes in {precisions[0]}")
            threads_each = max(1, threads // n_procs)
            over = [f"train.batch_size={args.batch_size}", f"train.mixed_precision={precisions[0]}"]
            spec = {
                **base,
                "threads": threads_each,
                "config": path,
                "kind": "distgan",
                "steps": rows[0]["steps"],
                "overrides": [*over, f"train.threads={threads_each}"],
            }
            got = best([(f"{n_procs} processes", spec, n_procs)], args.repeats, log)[f"{n_procs} processes"]
            if not any(r["config"] == name for r in report["procs"]):
                report["procs"].append(
                    {
                        "config": name,
                        "procs": 1,
                        "img_per_s": one["img_per_s"],
                        "ratio": 1.0,
                        "max_rss_mb_per_rank": one["max_rss_mb_per_rank"],
                        "cuda_peak_mb_per_rank": one["cuda_peak_mb_per_rank"],
                    }
                )
            report["procs"].append(
                {
                    "config": name,
                    "procs": n_procs,
                    "img_per_s": got["img_per_s"],
                    "ratio": got["img_per_s"] / one["img_per_s"],
                    "max_rss_mb_per_rank": got["max_rss_mb_per_rank"],
                    "cuda_peak_mb_per_rank": got["cuda_peak_mb_per_rank"],
                }
            )
    log(f"wrote {out / 'bench.json'}")
    text = markdown(report)
    (out / "BENCHMARKS.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
