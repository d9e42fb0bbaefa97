"""The benchmark's report: the machine it ran on, and its figures as Markdown tables with the ratios."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch


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
    compiled = any("compiled" in row for row in report["training"])
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
        if compiled and "img_per_s" in row.get("compiled", {}):
            cells += [f"{row['compiled']['img_per_s']:,.0f}", f"{row['compiled']['img_per_s'] / d:.2f}x"]
        elif compiled:
            cells += [row.get("compiled", {}).get("skipped", "not run"), "-"]
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
