"""Every version of the blog as a config: it validates, builds, trains; the D:G ratio counts right."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from distgan import config, models
from tests.conftest import REPO, tiny_overrides
from tests.model_checks import assert_returns_logits, count_as_shown, parameters, readme_table, size_as_shown

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
VERSIONS = ["v1", "v2", "v3.0", "v3.1", "v3.2", "v3.2b", "v4.0", "v4.1", "v5", "final", "default"]


def test_every_version_of_the_blog_has_a_config():
    assert sorted(p.stem for p in CONFIGS) == sorted(VERSIONS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_its_models(path):
    cfg = config.load(path)
    G, D = models.build_pair(cfg.model)
    G.eval(), D.eval()
    with torch.no_grad():
        x = G(torch.randn(2, cfg.model.z_dim))
        assert x.shape == (2, 1, 28, 28)
        assert D(x).shape == (2,)
    assert_returns_logits(D)  # as configured (its d_args), D returns logits


def flat(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}"""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed(a: str, b: str) -> set[str]:
    """The training keys that differ (each version's ``claim``, what the blog says of it, always does)."""
    x, y = (flat(config.load(REPO / "configs" / f"{n}.yaml").to_dict()) for n in (a, b))
    return {k for k in x if x[k] != y[k] and not k.startswith("claim.")}


VERSIONS_TABLE = {row["config"]: row for row in readme_table("The blog's versions")}
"""The README's table of versions, by config name."""

COLUMNS = {
    "model.g": "G / D",
    "model.d": "G / D",
    "model.z_dim": "parameters G / D",
    "model.g_args": "parameters G / D",
    "model.d_args": "parameters G / D",
    "loss.d": "loss D / G",
    "loss.g": "loss D / G",
    **{f"loss.{k}": "tricks" for k in ("real_label", "fake_label", "swap_prob", "swap_schedule", "swap_until")},
    **{f"loss.{k}": "tricks" for k in ("r1_gamma", "r1_every")},
    "train.d_steps": "D:G updates",
    "train.g_steps": "D:G updates",
    "train.epochs": "epochs",
    **{f"optim.{n}.{k}": "Adam lr (betas)" for n in "gd" for k in ("lr", "betas", "weight_decay")},
}
"""Config keys the versions table shows, and the column that shows each; a key not here is in no column."""
DERIVED = {"parameters G / D", "weights G / D", "tricks"}  # may change with a model (its size, its Dropout)


def base_of(name: str) -> str | None:
    raw = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    return raw.get("base", "").removesuffix(".yaml") or None


BASED = [n for n in VERSIONS if base_of(n)]


def test_versions_differ_only_by_what_the_blog_changed():
    """v3.1 is v3.0 with G's loss and the ratio changed; v4.1 is v4.0 with another D."""
    assert changed("v3.0", "v3.1") == {"name", "loss.g", "train.g_steps"}
    assert changed("v4.0", "v4.1") == {"name", "model.d"}


@pytest.mark.parametrize("name", BASED)
def test_each_version_differs_from_its_base_by_what_the_readme_row_changes(name):
    """A config with ``base:`` changes only keys the README's versions table shows, each in a column whose
    cell differs from its base's row; and every such cell but the derived ones (sizes, tricks) is a key
    it changes. So a line added to a config, or a README row edited, that the other does not say fails."""
    base = base_of(name)
    keys = changed(base, name) - {"name"}
    unshown = sorted(k for k in keys if k not in COLUMNS)
    assert not unshown, f"{name} changes {unshown} from {base}: the README's versions table shows none of them"
    row, was = VERSIONS_TABLE[name], VERSIONS_TABLE[base]
    same = sorted(k for k in keys if row[COLUMNS[k]] == was[COLUMNS[k]])
    assert not same, f"{name} changes {same} from {base}, but the README's rows show the same there"
    differ = {c for c in row if c != "config" and row[c] != was[c]}
    unexplained = sorted(differ - DERIVED - {COLUMNS[k] for k in keys})
    assert not unexplained, f"the README's {name} row differs from {base}'s in {unexplained}; the config does not"


def test_the_readme_versions_table_has_a_row_per_config():
    assert sorted(VERSIONS_TABLE) == sorted(p.stem for p in CONFIGS)


def tricks(cfg: config.Config, D: torch.nn.Module) -> dict:
    """The training tricks a config uses, as the versions table's 'tricks' column names them."""
    loss, out = cfg.loss, {}
    for side, label, plain in (("real", loss.real_label, (1.0, 1.0)), ("fake", loss.fake_label, (0.0, 0.0))):
        if tuple(label) != plain:
            out[side] = tuple(label)
    if loss.swap_prob:
        out["swap"] = (loss.swap_prob, loss.swap_schedule, loss.swap_until)
    if loss.r1_gamma:
        out["R1"] = (loss.r1_gamma, loss.r1_every)
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in D.modules()):
        out["D dropout"] = True
    return out


def read_tricks(cell: str) -> dict:
    """The README's tricks cell ('real 0.9, fake 0.1, swap 0.1 linear to 0 at 0.5, D dropout') as :func:`tricks`."""
    out: dict = {}
    for item in [] if cell == "-" else re.split(r",\s(?![^\[]*\])", cell):
        if m := re.fullmatch(r"(real|fake) U\[(\S+),(\S+)\]", item):
            out[m[1]] = (float(m[2]), float(m[3]))
        elif m := re.fullmatch(r"(real|fake) (\S+)", item):
            out[m[1]] = (float(m[2]), float(m[2]))
        elif m := re.fullmatch(r"swap (\S+) constant", item):
            out["swap"] = (float(m[1]), "constant", 1.0)
        elif m := re.fullmatch(r"swap (\S+) linear to 0 at (\S+)", item):
            out["swap"] = (float(m[1]), "linear", float(m[2]))
        elif m := re.fullmatch(r"R1 (\S+) every (\d+)(?:st|nd|rd|th) D update", item):
            out["R1"] = (float(m[1]), int(m[2]))
        elif item == "D dropout":
            out["D dropout"] = True
        else:
            raise AssertionError(f"the README's tricks cell {cell!r}: {item!r} is no trick the test knows")
    return out


ADAM = re.compile(r"G (\S+) \((\S+), (\S+)\) wd (\S+); D (\S+) \((\S+), (\S+)\)(?: wd (\S+))?")


@pytest.mark.parametrize("name", sorted(VERSIONS_TABLE))
def test_the_readme_versions_table_sizes_match_what_the_config_builds(name):
    """The row's parameter counts and float32 weights of G and D, at the README's own precision, against
    configs/NAME.yaml's models as built (z_dim, args and all)."""
    row, cfg = VERSIONS_TABLE[name], config.load(REPO / "configs" / f"{name}.yaml")
    G, D = models.build_pair(cfg.model)
    counts, sizes = row["parameters G / D"].split(" / "), row["weights G / D"].split(" / ")
    assert [count_as_shown(parameters(n), c) for n, c in zip((G, D), counts, strict=True)] == counts
    assert [size_as_shown(models.weight_bytes(n), s) for n, s in zip((G, D), sizes, strict=True)] == sizes


@pytest.mark.parametrize("name", sorted(VERSIONS_TABLE))
def test_the_readme_versions_table_row_matches_the_config(name):
    """The row's other cells against configs/NAME.yaml as loaded: G and D, losses, D:G updates, tricks (D's
    Dropout from the D it builds), Adam's lr, betas and weight decay, epochs."""
    row, cfg = VERSIONS_TABLE[name], config.load(REPO / "configs" / f"{name}.yaml")
    D = models.build_discriminator(cfg.model.d, cfg.model.d_args)
    assert row["G / D"] == f"{cfg.model.g} / {cfg.model.d}"
    assert row["loss D / G"] == f"{cfg.loss.d} / {cfg.loss.g}"
    assert row["D:G updates"] == f"{cfg.train.d_steps}:{cfg.train.g_steps}"
    assert read_tricks(row["tricks"]) == tricks(cfg, D)
    adam = ADAM.fullmatch(row["Adam lr (betas)"])
    assert adam, row["Adam lr (betas)"]
    g, d = cfg.optim.g, cfg.optim.d
    shown = [float(v) if v is not None else None for v in adam.groups()]
    # The README gives D's weight decay only where one is set (final's 1e-05): checked where shown.
    wd_d = d.weight_decay if shown[7] is not None else None
    assert shown == [g.lr, *g.betas, g.weight_decay, d.lr, *d.betas, wd_d]
    assert row["epochs"] == str(cfg.train.epochs)


def run(tmp_path: Path, name: str, *extra: str, config_file: str = "configs/default.yaml") -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "distgan.train", "--config", config_file, *tiny_overrides(tmp_path, name), *extra],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / name


@pytest.mark.real_data
@pytest.mark.parametrize("d_steps, g_steps", [(1, 1), (2, 1), (1, 3)])
def test_update_counts_over_an_epoch_per_ratio(mnist_root, tmp_path, d_steps, g_steps):
    """An epoch is one pass of D over the data: d_steps real batches per step, g_steps G updates per step."""
    batches = 4096 // 256  # data.limit / batch_size
    run_dir = run(
        tmp_path,
        "r",
        "data.limit=4096",
        "train.batch_size=256",
        "train.epochs=1",
        f"train.d_steps={d_steps}",
        f"train.g_steps={g_steps}",
        "model.g_args={hidden: [32]}",
        "model.d_args={hidden: [32]}",
    )
    counters = json.loads((run_dir / "checkpoints" / "epoch-001" / "state.json").read_text())["counters"]
    steps = batches // d_steps
    assert counters["step"] == steps
    assert counters["d_updates"] == steps * d_steps
    assert counters["g_updates"] == steps * g_steps
    assert counters["nimg"] == steps * d_steps * 256


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_trains_a_step(mnist_root, tmp_path, version):
    """In CI: one full step of each version at its own D:G ratio (v1's step holds 200 G updates; batch 16
    for time): each optimizer stepped d_steps / g_steps times in it, as its Adam state and the run's
    counters record."""
    steps, path = 1, f"configs/{version}.yaml"
    run_dir = run(
        tmp_path, version, f"train.max_steps={steps}", "data.limit=256", "train.batch_size=16", config_file=path
    )
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss_d" in r for r in rows) == steps
    train, wanted = config.load(run_dir / "config.yaml").train, config.load(REPO / path).train
    assert (train.d_steps, train.g_steps) == (wanted.d_steps, wanted.g_steps)  # the ratio ran is the version's
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    counters = json.loads((ckpt / "state.json").read_text())["counters"]
    adam = load_file(ckpt / "train.safetensors")
    for net, per_step in (("d", train.d_steps), ("g", train.g_steps)):
        counts = {int(v) for k, v in adam.items() if k.startswith(f"opt_{net}.") and k.endswith(".step")}
        assert counts == {steps * per_step}, f"{net.upper()}'s Adam stepped {counts} times in {steps} steps"
        assert counters[f"{net}_updates"] == steps * per_step, counters


@pytest.mark.versions
@pytest.mark.real_data
@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_trains_one_epoch(mnist_root, tmp_path, version):
    """make versions-smoke: one epoch of each version on a 512-image subset (batch 128, so 4 D steps)."""
    run_dir = run(
        tmp_path,
        version,
        "train.epochs=1",
        "data.limit=512",
        "train.batch_size=128",
        config_file=f"configs/{version}.yaml",
    )
    assert (run_dir / "checkpoints" / "epoch-001" / "model.safetensors").is_file()
