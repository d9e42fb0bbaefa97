"""The CLI explains itself: --help lists every config key --dry-run prints, with its default; --dry-run
shows what the launch resolves; overrides may come anywhere."""

from __future__ import annotations

import importlib
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
import yaml

from distgan import checkpoint, config, keys
from tests.conftest import REPO, environment, python, tiny_overrides

RESOLVED = {"train.threads", "train.mixed_precision", "train.compile"}  # null in --help, resolved by --dry-run


def leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and f"{prefix}{k}" not in ("model.g_args", "model.d_args"):
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def help_entries(text: str) -> dict[str, str]:
    """'    train.epochs (int) = 45' -> {'train.epochs': '45'}"""
    return dict(re.findall(r"^    ([a-z_.0-9]+) \([^\n]*\) = (.*)$", text, flags=re.M))


def test_help_names_every_key_the_dry_run_prints_with_its_default():
    shown = python("distgan.train", "--help")
    dry = python("distgan.train", "--dry-run")
    assert shown.returncode == 0 and dry.returncode == 0, dry.stderr[-2000:]
    entries = help_entries(shown.stdout)
    printed = leaves(yaml.safe_load(dry.stdout))
    assert sorted(entries) == sorted(printed), set(entries) ^ set(printed)
    for key, value in printed.items():
        if key in RESOLVED:
            assert entries[key] == "null" and value is not None, key  # --help: unset; --dry-run: as resolved
        else:
            assert entries[key] == keys.render(value), key
    assert "2.5 minutes" in shown.stdout  # what the first call may cost
    assert "train.max_steps" in shown.stdout and "data.limit" in shown.stdout


def test_every_key_has_a_doc_line_and_a_type():
    listed = keys.keys()
    assert len(listed) == len({k.name for k in listed}) > 50
    assert all(k.doc and k.type for k in listed if k.name != "name"), [k.name for k in listed if not k.doc]
    assert next(k for k in listed if k.name == "train.mixed_precision").type == "no | bf16 | fp16 | null"
    assert next(k for k in listed if k.name == "loss.real_label").type == "[number, number]"
    assert keys.first_sentence("Keep an EMA (e.g. 0.999) of G. More.") == "Keep an EMA (e.g. 0.999) of G."


def test_dry_run_resolves_the_launch_and_takes_overrides_anywhere(tmp_path):
    proc = python(
        "distgan.train",
        "--config",
        "configs/default.yaml",
        "train.epochs=3",
        "--dry-run",
        "train.seed=2",
        f"output.dir={tmp_path}",
        env={"ACCELERATE_USE_CPU": 1},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    header = [line for line in proc.stdout.splitlines() if line.startswith("#")]
    assert header[0].startswith("# device: 1 x cpu") and "2 thread(s) per process, mixed precision no" in header[0]
    assert header[1].startswith("# world: 1 process(es), 256 images per process")
    assert header[2].startswith(f"# run folder: {tmp_path}/default-s2-")
    cfg = config.from_dict(yaml.safe_load(proc.stdout))
    assert (cfg.train.epochs, cfg.train.seed, cfg.train.threads, cfg.train.mixed_precision) == (3, 2, 2, "no")
    assert list(tmp_path.iterdir()) == [], "a dry run writes nothing"


def test_without_config_the_cli_trains_what_make_train_trains():
    plain = python("distgan.train", "--dry-run")
    shipped = python("distgan.train", "--config", "configs/default.yaml", "--dry-run")
    assert plain.returncode == 0 and plain.stdout.split("\n", 3)[3] == shipped.stdout.split("\n", 3)[3]


def test_the_printed_resume_hint_works_as_printed_with_an_override_appended(tmp_path):
    """Both forms of the hint a stopped run prints: its own command plus --resume, and the one-process
    command; each with a further override after it (the old parser refused those)."""
    cmd = [sys.executable, "-m", "distgan.train", "--config", "configs/default.yaml", "data.dataset=synthetic"]
    cmd += [*tiny_overrides(tmp_path, "hint"), "train.epochs=40", "model.ema_bn_samples=256"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while checkpoint.read_pointer(tmp_path / "hint" / "checkpoints", "latest") is None:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    hint = re.search(r"continue with the same command plus (--resume \S+) \(one process: (.+)\)$", err, re.M)
    assert proc.returncode == 128 + signal.SIGTERM and hint, err[-3000:]
    same = python(*cmd[2:], *shlex.split(hint.group(1)), "train.max_steps=30")
    assert same.returncode == 0, same.stderr[-3000:]
    assert checkpoint.read_pointer(tmp_path / "hint" / "checkpoints", "latest") == "step-000030"
    alone = python(*shlex.split(hint.group(2))[2:], "train.max_steps=37")
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert checkpoint.read_pointer(tmp_path / "hint" / "checkpoints", "latest") == "step-000037"


@pytest.mark.parametrize(
    "entry",
    ["train", "compare", "blog", "data", "sample", "evaluate", "evaluate fit", "bench", "bench.jobs"],
)
def test_every_entry_point_says_what_it_writes_and_how_long_a_first_call_takes(entry, capsys):
    module, *sub = entry.split()
    main = importlib.import_module(f"distgan.{module}" + (".__main__" if module == "bench" else "")).main
    with pytest.raises(SystemExit) as done:
        main([*sub, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert re.search(r"\b[Ww]rites\b", text), text[:600]
    assert re.search(r"\d[\d.]* (seconds?|minutes?|hours?)|[Tt]akes (seconds|hours)|in seconds|a second", text), text[
        :600
    ]
