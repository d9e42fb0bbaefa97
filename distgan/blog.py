"""The blog's story, measured: every version at its budget over seeds, and each claim checked.

    python -m distgan.blog                                  # every version, its own budget, seeds 0,1,2
    python -m distgan.blog --seeds 0 --max-epochs 2         # the same machinery, smaller

Each config's ``claim`` (``text``: the blog's words in one line; ``expect``: the outcome they imply) and
``train.epochs`` (the budget the blog implies) say what to check. Runs are made and reused exactly as by
``distgan.compare`` (an interrupted one resumes with the same command). ``--out`` (default reports/blog)
receives REPORT.md: per version the claim, FID / IS / classes by epoch (mean and 95% interval over seeds),
and whether the claim holds on how many seeds; plus table.csv, runs.csv, curves.png and montage.png.

Outcomes (on the evaluator's 10k-sample scores, ``distgan.evaluate``):
``digits``: at the budget IS >= 7 and every class at least 4% of the samples; ``fails``: IS below 3 at every
evaluation (noise, blobs, one class); ``degrades``: IS reaches 3, then ends at or below 3/4 of its best.
A verdict is given only at the claim's own budget; a run cut short by ``--max-epochs`` reports what it saw.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from distgan import compare, config, keys, stats
from distgan.errors import CompareError, DistganError

VERSIONS = (
    "v1",
    "v2",
    "v3.0",
    "v3.1",
    "v3.2",
    "v3.2b",
    "v4.0",
    "v4.1",
    "v5",
    "final",
)
DIGITS_IS, DIGITS_CLASS_MIN = 7.0, 0.04
READABLE_IS = 3.0
DEGRADED = 0.75


def is_digits(ev: dict) -> bool:
    return ev["is"] >= DIGITS_IS and ev["class_min"] >= DIGITS_CLASS_MIN


def outcome(expect: str, evals: list[dict]) -> bool | None:
    """Whether one run's evaluations (in epoch order) show ``expect``; None when nothing is claimed."""
    if expect == "none" or not evals:
        return None
    best = max(e["is"] for e in evals)
    if expect == "digits":
        return is_digits(evals[-1])
    if expect == "fails":
        return best < READABLE_IS
    if expect == "degrades":
        return best >= READABLE_IS and evals[-1]["is"] <= DEGRADED * best
    raise ValueError(f"unknown claim.expect {expect!r}")


def verdict(expect: str, results: list[dict], budget: int, cut: str | None = None) -> str:
    """'holds (k of n seeds)', 'does not hold (...)', 'split (...)', or why there is no verdict: ``cut`` says
    how the runs fell short of the claim's budget (then only what was seen is reported)."""
    if expect == "none":
        return "no outcome claimed: measured only"
    seen = [outcome(expect, r["evals"]) for r in results]
    k, n = sum(bool(s) for s in seen), len(seen)
    counts = f"{k} of {n} seed{'s' if n > 1 else ''}"
    if cut:
        return f"not checked: {cut} of its {budget} epochs ('{expect}' seen on {counts})"
    if 2 * k > n:
        return f"holds ({counts})"
    if 2 * k < n:
        return f"does not hold ({counts})"
    return f"split ({counts})"


def _cell(values: list, digits: int) -> str:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "-"
    mean, half = stats.ci95(vals)
    text = f"{mean:,.{digits}f}"
    return text if half is None or len(vals) < 2 else f"{text} ± {half:,.{digits}f}"


def by_epoch(results: list[dict]) -> str:
    """Markdown: one row per evaluation point (epoch, and the step: a run cut by max_steps is scored mid-epoch),
    mean ± 95% interval over seeds of FID, IS, classes, the smallest class's share."""
    points = sorted({(e["epoch"], e["step"]) for r in results for e in r["evals"]})
    lines = ["| epoch (step) | FID | IS | classes | smallest class % |", "|---|---|---|---|---|"]
    for epoch, step in points:
        at = [e for r in results for e in r["evals"] if (e["epoch"], e["step"]) == (epoch, step)]
        lines.append(
            f"| {epoch} ({step}) | {_cell([e['fid'] for e in at], 1)} | {_cell([e['is'] for e in at], 2)} | "
            f"{_cell([e['classes_covered'] for e in at], 1)} | "
            f"{_cell([100 * e['class_min'] for e in at if e['class_min'] is not None], 1)} |"
        )
    return "\n".join(lines)


def write(entries: list[dict], out: Path, args: argparse.Namespace, budgets: dict[str, int]) -> list[dict]:
    """REPORT.md plus compare's tables and pictures; returns the summary rows (one per version)."""
    compare.write_report(entries, out, args)
    rows, sections = [], []
    for name in dict.fromkeys(e["name"] for e in entries):
        mine = [e for e in entries if e["name"] == name]
        claim, trained, results = mine[0]["claim"], mine[0]["epochs"], [e["result"] for e in mine]
        said = verdict(claim.expect, results, budgets[name], mine[0]["cut"])
        rows.append({"version": name, "claim": claim.text or "-", "expect": claim.expect, "verdict": said})
        sections += [
            f"### {name}",
            "",
            f"- The blog: {claim.text or '(no claim recorded)'} (checked as `{claim.expect}`)",
            f"- Budget: {budgets[name]} epochs; trained {mine[0]['cut'] or trained}, "
            f"seeds {', '.join(str(e['seed']) for e in mine)}",
            f"- Verdict: **{said}**",
            "",
            by_epoch(results),
            "",
        ]
    head = [
        "# The blog's versions, measured",
        "",
        f"Seeds {', '.join(map(str, args.seeds))}; every epoch scored on {entries[0]['samples']} samples by "
        "distgan's evaluator (FID against the 10k test images; IS from 1 to 10). Cells: mean ± the half-width "
        "of its 95% confidence interval over seeds (Student's t). Outcomes: `digits` = at the budget IS >= "
        f"{DIGITS_IS:g} and every class >= {100 * DIGITS_CLASS_MIN:g}% of the samples; `fails` = IS < "
        f"{READABLE_IS:g} at every evaluation; `degrades` = IS reaches {READABLE_IS:g}, then ends at <= "
        f"{DEGRADED:g} x its best. A claim holds when its outcome shows on more than half of the seeds.",
        "",
        "| version | the blog says | checked as | verdict |",
        "|---|---|---|---|",
        *[f"| {r['version']} | {r['claim']} | `{r['expect']}` | {r['verdict']} |" for r in rows],
        "",
        "![montage](montage.png)",
        "",
        "Final-epoch table, pairs of versions, curves and runs: [report.md](report.md).",
        "",
        "## Per version",
        "",
    ]
    (out / "REPORT.md").write_text("\n".join(head + sections))
    return rows


def version_sets(sets: list[str], names: list[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` applies to every version, ``NAME:KEY=VALUE`` to version NAME only (config keys hold no
    ':'), e.g. ``v1:train.max_steps=6`` for the slowest one."""
    own: dict[str, list[str]] = {n: [] for n in names}
    for text in sets:
        head, eq, _ = text.partition("=")
        name, colon, key = head.partition(":")
        if not eq or not colon:
            for n in names:
                own[n].append(text)
        elif name in own:
            own[name].append(text[len(name) + 1 :])
        else:
            raise CompareError(f"--set {text}: no version named {name!r} here; versions: {', '.join(names)}")
    return own


def default_configs(root: Path = Path("configs")) -> list[str]:
    return [str(root / f"{v}.yaml") for v in VERSIONS]


def main(argv: list[str] | None = None) -> int:
    p = keys.parser(
        "python -m distgan.blog",
        __doc__.split("\n\n")[0]
        + " Writes OUT/REPORT.md (each claim with its verdict), the comparison's tables and figures, and one run per "
        "version and seed under --runs-dir. Full budgets take hours on a CPU (the README gives the figures); the "
        "first call also fits the evaluator (about 2.5 minutes on 2 cores, once). Interrupted: run it again.",
        how="as --set [VERSION:]KEY=VALUE (e.g. --set v5:train.epochs=2)",
    )
    p.add_argument("configs", nargs="*", help="version configs (default: every version in configs/, in blog order)")
    p.add_argument("--seeds", type=compare._int_list, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--max-epochs", type=int, help="cap every budget at this many epochs (no verdict where capped)")
    p.add_argument(
        "--out", default="reports/blog", help="report folder (default reports/blog; its name is the W&B group)"
    )
    compare.add_run_arguments(
        p,
        "[VERSION:]KEY=VALUE",
        "an override for every run, or with VERSION: for that version's runs only (repeatable)",
    )
    p.set_defaults(fid_threshold=20.0, montage_epochs=None)  # what compare's report reads
    args = p.parse_args(argv)
    args.command = compare.command_line("distgan.blog", argv)
    args.configs = args.configs or default_configs()
    if args.max_epochs is not None and args.max_epochs < 1:
        p.error("--max-epochs must be >= 1")
    out = Path(args.out)
    try:
        for path in args.configs:
            if not Path(path).is_file():
                raise CompareError(f"config file {path} does not exist; the shipped versions are in configs/")
        budgets = {c.name: c.train.epochs for c in map(config.load, args.configs)}  # the files', no overrides
        if len(budgets) != len(args.configs):
            raise CompareError("two configs share a name; rename one (the report names versions by config name)")
        own = version_sets(args.sets, list(budgets))
        launcher = shlex.split(args.launcher)
        world = 1 if args.launcher == compare.DEFAULT_LAUNCHER else compare.launcher_world(launcher)
        slots, threads = compare.slots_for(args.jobs, world, len(args.configs) * len(args.seeds), args.launcher)
        entries = []
        for path, (name, budget) in zip(args.configs, budgets.items(), strict=True):
            cfg = config.load(path, own[name])
            epochs = min(cfg.train.epochs, args.max_epochs or cfg.train.epochs)
            cut = None  # how the runs fall short of the claim's budget, if they do
            if cfg.train.max_steps is not None:
                cut = f"{cfg.train.max_steps} steps"
            elif epochs != budget:
                cut = str(epochs)
            for e in compare.plan([path], args.seeds, epochs, own[name], Path(args.runs_dir), out.name, world, threads):
                entries.append({**e, "cut": cut})
        failed = compare.train_all(entries, launcher, slots, out / "logs")
        if failed:
            raise CompareError(compare.failures(failed, len(entries), covered=False))
        compare.read_all(entries, args.fid_threshold)
        rows = write(entries, out, args, budgets)
    except KeyboardInterrupt:
        print("blog: stopped; run the same command again to resume", file=sys.stderr)
        return 130
    except DistganError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for r in rows:
        print(f"{r['version']:>6}: {r['verdict']}")
    print(f"report: {out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
