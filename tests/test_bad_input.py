"""Bad input: every mistake gets an error that says what to do, and nothing already saved is touched.
Plus a property test of the config loader and a scan of the package for pickle."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import io
import json
import shutil
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from distgan import checkpoint, config, data
from distgan import train as train_module
from tests.conftest import REPO

SMALL = ["data.dataset=synthetic", "train.epochs=1", "output.tracker=none", "train.threads=1", "eval.every_epochs=0"]


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder holding one finished run (the work that must survive every mistake) and bad files."""
    ws = tmp_path_factory.mktemp("ws")
    assert (
        train_module.main(["--config", "configs/default.yaml", *SMALL, f"output.dir={ws / 'runs'}", "output.name=prev"])
        == 0
    )
    ckpt = ws / "runs" / "prev" / "checkpoints" / "epoch-001"
    bad = ws / "bad"
    bad.mkdir()
    (bad / "malformed.yaml").write_text("train: {epochs: 3\n  batch_size: [\n")
    (bad / "list.yaml").write_text("- 1\n- 2\n")
    for name in ("truncated", "garbage", "foreign", "no_train", "bad_state"):  # each inside a run of its own
        shutil.copytree(ckpt, bad / name / "checkpoints" / "epoch-001")
    shutil.copytree(ckpt, bad / "loose")  # a checkpoint folder copied out of its run
    model = (ckpt / "model.safetensors").read_bytes()
    spoilt = {name: bad / name / "checkpoints" / "epoch-001" for name in ("truncated", "garbage", "foreign")}
    (spoilt["truncated"] / "model.safetensors").write_bytes(model[: len(model) // 2])
    (spoilt["garbage"] / "model.safetensors").write_bytes(b"\x07" * 4096)
    save_file({"weight": __import__("torch").zeros(3)}, spoilt["foreign"] / "model.safetensors")
    (bad / "no_train" / "checkpoints" / "epoch-001" / "train.safetensors").unlink()
    (bad / "bad_state" / "checkpoints" / "epoch-001" / "state.json").write_text("{not json")
    (bad / "a_file").write_text("x")
    (bad / "repeated_section.yaml").write_text("train:\n  epochs: 3\ntrain:\n  seed: 2\n")
    (bad / "repeated_key.yaml").write_text("train:\n  epochs: 3\n  epochs: 4\n")
    levels = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 9))
    (bad / "aliases.yaml").write_text("l0: &l0 [x]\n" + levels)  # 435 bytes that once expanded to 2.2 GB
    (bad / "deep.yaml").write_text("model:\n  g_args: {hidden: " + "[" * 3000 + "]" * 3000 + "}\n")
    (bad / "latin1.yaml").write_bytes("name: d\xe9j\xe0\n".encode("latin-1"))
    (bad / "latin1_base.yaml").write_text("base: latin1.yaml\n")
    (bad / "empty_base.yaml").write_text('base: ""\n')
    # whole runs, each altered after saving in one way
    for name in ("escape", "link", "weight", "counter"):
        shutil.copytree(ws / "runs" / "prev", bad / name)
    (bad / "escape" / "checkpoints" / "latest").write_text("../../../runs/prev/checkpoints/epoch-001\n")
    link = bad / "link" / "checkpoints"
    shutil.rmtree(link / "epoch-001")
    (link / "epoch-001").symlink_to(ws / "runs" / "prev" / "checkpoints" / "epoch-001")
    weights = bad / "weight" / "checkpoints" / "epoch-001" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0x40  # one bit of one weight
    weights.write_bytes(bytes(blob))
    # whole runs whose checkpoint was re-saved with one malformed part: the digests match, the content is wrong
    model, train, info = checkpoint.load_training_state(ckpt)
    info = {k: v for k, v in info.items() if k != "digests"}
    g_weight = next(k for k in model if k.startswith("G.") and model[k].dim() == 2)
    adam = next(k for k in train if k.startswith("opt_") and train[k].dim() == 2)
    remade = {
        "shape": ({**model, g_weight: torch.zeros(3, 3)}, train, info),
        "config_list": (model, train, {**info, "config": [1, 2]}),
        "step_text": (model, train, {**info, "counters": {**info["counters"], "step": "5"}}),
        "no_counters": (model, train, {k: v for k, v in info.items() if k != "counters"}),
        "adam_shape": (model, {**train, adam: torch.zeros(2, 2)}, info),
        "no_rng": (model, {k: v for k, v in train.items() if not k.startswith("rng.")}, info),
    }
    for name, (m, t, i) in remade.items():
        shutil.copytree(ws / "runs" / "prev", bad / name)
        shutil.rmtree(bad / name / "checkpoints")
        checkpoint.save(bad / name / "checkpoints", "epoch-001", m, i, t)
    # image files for distgan.evaluate --samples
    with open(bad / "plain.npz", "wb") as f:  # an .npy under an .npz name
        np.save(f, np.zeros((10, 28, 28), np.uint8))
    np.savez(bad / "floats.npz", images=np.zeros((10, 28, 28), np.float32))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)})
    with zipfile.ZipFile(bad / "huge.npz", "w") as archive:  # claims 730 GiB, holds a header
        archive.writestr("images.npy", header.getvalue())  # the magic string and the header, no data
    state_file = bad / "counter" / "checkpoints" / "epoch-001" / "state.json"
    state = json.loads(state_file.read_text())
    state["counters"]["step"] = 5
    state_file.write_text(json.dumps(state, indent=2))
    return ws


def cases(ws: Path) -> list[tuple[str, list[str], int, str]]:
    cfg = ["--config", "configs/default.yaml", *SMALL, f"output.dir={ws / 'runs'}"]
    bad = ws / "bad"
    prev = ws / "runs" / "prev"
    return [
        ("malformed YAML", ["--config", str(bad / "malformed.yaml")], 2, "is not valid YAML"),
        ("YAML that is not a mapping", ["--config", str(bad / "list.yaml")], 2, "must hold a mapping"),
        ("missing config file", ["--config", str(bad / "nope.yaml")], 2, "does not exist"),
        ("config that is a folder", ["--config", str(bad)], 2, "is a folder; give a YAML file"),
        ("a section twice", ["--config", str(bad / "repeated_section.yaml")], 2, "the key 'train' appears twice"),
        ("a key twice", ["--config", str(bad / "repeated_key.yaml")], 2, "the key 'epochs' appears twice"),
        ("nested aliases", ["--config", str(bad / "aliases.yaml")], 2, "aliases (*name) are not accepted"),
        ("3,000-deep nesting", ["--config", str(bad / "deep.yaml")], 2, "nested more than 32 levels deep"),
        (
            "config not UTF-8",
            ["--config", str(bad / "latin1.yaml")],
            2,
            "is not UTF-8 text (first bad byte at offset 7)",
        ),
        ("base not UTF-8", ["--config", str(bad / "latin1_base.yaml")], 2, "latin1.yaml is not UTF-8 text"),
        ("empty base", ["--config", str(bad / "empty_base.yaml")], 2, "'base' must name a YAML file"),
        ("NUL in an override", [*cfg, "output.name=a\x00b"], 2, "contains a NUL character"),
        ("unknown key", [*cfg, "train.epoch=3"], 2, "Did you mean 'train.epochs'?"),
        ("unknown section", [*cfg, "trian.epochs=3"], 2, "Did you mean 'train'?"),
        ("wrong type", [*cfg, "train.epochs=three"], 2, "train.epochs: expected an integer"),
        ("out of range", [*cfg, "train.epochs=0"], 2, "train.epochs must be >= 1"),
        ("label range", [*cfg, "loss.real_label=[1.2, 1.3]"], 2, "must satisfy 0 <= low <= high <= 1"),
        ("non-finite number", [*cfg, "optim.g.lr=.nan"], 2, "expected a finite number"),
        ("unknown model", [*cfg, "model.g=resnet"], 2, "model.g: unknown model 'resnet'. Choose from"),
        ("model that cannot take this latent", [*cfg, "model.g=v1_g", "model.g_args={}"], 2, "set model.z_dim=784"),
        ("model argument of a wrong type", [*cfg, "model.g_args={hidden: abc}"], 2, "model.g_args"),
        ("override without '='", [*cfg, "train.epochs"], 2, "must look like section.key=value"),
        ("too few evaluation samples", [*cfg, "eval.samples=2"], 2, "eval.samples must exceed"),
        ("a 1e12-sample evaluation", [*cfg, "eval.samples=1000000000000"], 2, "eval.samples must be <= 1,000,000"),
        ("a 1e8 latent", [*cfg, "model.z_dim=100000000"], 2, "model.z_dim must be <= 65,536"),
        ("a 2e9-wide layer", [*cfg, "model.g_args={hidden: [2000000000]}"], 2, "parameters (25,332 GiB with gradients"),
        ("a 0-wide layer", [*cfg, "model.g_args={hidden: [0]}"], 2, "has an empty layer"),
        ("1e11 BatchNorm samples", [*cfg, "model.ema_bn_samples=100000000000"], 2, "model.ema_bn_samples must be <="),
        ("noise that fills memory", [*cfg, "model.z_dim=60000"], 2, "3.7 GiB of noise (at most 1)"),
        ("output.name that is a file", [*cfg, f"output.dir={bad}", "output.name=a_file"], 1, "is a file, not a run"),
        ("a 300-character name", [*cfg, "output.name=" + "n" * 300], 2, "is 300 bytes long; at most 200"),
        ("a name that is a path", [*cfg, "output.name=../elsewhere"], 2, "output.name must be one folder name"),
        (
            "unwritable output folder",
            [*cfg, f"output.dir={bad / 'a_file' / 'runs'}", "output.name=x"],
            1,
            "cannot create the run folder",
        ),
        ("existing run without --resume", [*cfg, "output.name=prev"], 1, "already holds a run"),
        ("fp16 on a CPU", [*cfg, "train.mixed_precision=fp16", "output.name=x"], 1, "fp16 is not available on the CPU"),
        ("CUDA graphs on a CPU", [*cfg, "train.compile=reduce-overhead", "output.name=x"], 1, "need a CUDA GPU"),
        ("negative R1 weight", [*cfg, "loss.r1_gamma=-1"], 2, "loss.r1_gamma must be >= 0"),
        ("lazy R1 every 0 updates", [*cfg, "loss.r1_every=0"], 2, "loss.r1_every must be >= 1"),
        (
            "R1 under torch.compile",
            [*cfg, "loss.r1_gamma=1", "train.compile=default", "output.name=x"],
            1,
            "torch.compile does not support",
        ),
        ("resume: missing path", [*cfg, "--resume", str(bad / "nothing")], 1, "no checkpoint at"),
        (
            "resume: truncated checkpoint",
            ["--resume", str(bad / "truncated" / "checkpoints" / "epoch-001")],
            1,
            "it may be truncated",
        ),
        (
            "resume: not safetensors",
            ["--resume", str(bad / "garbage" / "checkpoints" / "epoch-001")],
            1,
            "not a readable safetensors file",
        ),
        (
            "resume: foreign safetensors",
            ["--resume", str(bad / "foreign" / "checkpoints" / "epoch-001")],
            1,
            "not a distgan checkpoint",
        ),
        (
            "resume: no training state",
            ["--resume", str(bad / "no_train" / "checkpoints" / "epoch-001")],
            1,
            "can be sampled from but not resumed",
        ),
        (
            "resume: corrupt state.json",
            ["--resume", str(bad / "bad_state" / "checkpoints" / "epoch-001")],
            1,
            "state.json is unreadable",
        ),
        (
            "resume: a checkpoint outside its run",
            ["--resume", str(bad / "loose")],
            1,
            "not inside a run's checkpoints/",
        ),
        (
            "resume: a latest pointer leading out of the run",
            ["--resume", str(bad / "escape")],
            1,
            "not a checkpoint name (epoch-NNN or step-NNNNNN)",
        ),
        (
            "resume: a checkpoint that is a symlink into another run",
            ["--resume", str(bad / "link")],
            1,
            "is a link out of its run's checkpoints/",
        ),
        (
            "resume: a weight altered after saving",
            ["--resume", str(bad / "weight")],
            1,
            "model.safetensors is not the file this checkpoint saved",
        ),
        (
            "resume: a counter altered after saving",
            ["--resume", str(bad / "counter")],
            1,
            "state.json is not the state saved with",
        ),
        (
            "resume: a mis-shaped weight, re-saved",
            ["--resume", str(bad / "shape")],
            1,
            "does not fit the models its config describes (size mismatch",
        ),
        ("resume: a stored config that is a list", ["--resume", str(bad / "config_list")], 1, "no config mapping"),
        ("resume: the same, with --config", [*cfg, "--resume", str(bad / "config_list")], 1, "no config mapping"),
        ("resume: a step that is text", ["--resume", str(bad / "step_text")], 1, "counters.step = '5', not a count"),
        ("resume: no counters", ["--resume", str(bad / "no_counters")], 1, "state.json holds no counters"),
        (
            "resume: a mis-shaped Adam state",
            ["--resume", str(bad / "adam_shape")],
            1,
            "its training state does not fit this run's models (ValueError: opt_",
        ),
        ("resume: no RNG state", ["--resume", str(bad / "no_rng")], 1, "(KeyError: 'rng.cpu')"),
        (
            "resume: another architecture",
            [*cfg, "model.g_args={hidden: [64], batchnorm: false}", "--resume", str(prev)],
            1,
            "model.g_args:",
        ),
        (
            "resume: another dataset",
            [*cfg, "data.dataset=mnist", "--resume", str(prev)],
            1,
            "data.dataset: 'synthetic' in the checkpoint, 'mnist' now",
        ),
    ]


CASES = [c[0] for c in cases(Path("/x"))]


@pytest.fixture(autouse=True)
def _fresh_accelerate_state(monkeypatch):
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")  # the CPU-only refusals stay refusals on a GPU machine

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_a_clear_error_and_touches_nothing(workspace, capsys, case):
    _, argv, code, message = next(c for c in cases(workspace) if c[0] == case)
    before = snapshot(workspace)
    assert train_module.main(argv) == code
    err = capsys.readouterr().err
    assert message in err, err[-2000:]
    assert "Traceback" not in err
    assert snapshot(workspace) == before  # no file written, changed or removed
    assert not (workspace / "runs" / "x").exists()


def cli_cases(ws: Path) -> list[tuple[str, str, list[str], int, str]]:
    """distgan.sample and distgan.evaluate: (case, module, argv, exit code, message)."""
    bad, prev = ws / "bad", ws / "runs" / "prev"
    ck = ["--checkpoint", str(prev)]
    return [
        (
            "sample: 1e11 images",
            "sample",
            [*ck, "--num", "100000000000", "--out", str(ws / "o.npz")],
            1,
            "--num must lie in",
        ),
        ("sample: --out a folder", "sample", [*ck, "--out", str(bad)], 1, "must end in .npz or .png"),
        (
            "sample: --out a folder.png",
            "sample",
            [*ck, "--out", str(bad / "dir.png")],
            1,
            "is a folder; give a file name",
        ),
        (
            "sample: --out under a file",
            "sample",
            [*ck, "--out", str(bad / "a_file" / "g.png")],
            1,
            "is a file, not a folder",
        ),
        (
            "sample: --device banana",
            "sample",
            [*ck, "--out", str(ws / "g.png"), "--device", "banana"],
            1,
            "not a device name",
        ),
        (
            "sample: --device cuda:99",
            "sample",
            [*ck, "--out", str(ws / "g.png"), "--device", "cuda:99"],
            1,
            "--device cuda:99",
        ),
        (
            "sample: --out over the run's own grid",
            "sample",
            [*ck, "--fixed-z", "--out", str(prev / "samples" / "epoch-001.png")],
            1,
            "lies inside the run folder",
        ),
        ("evaluate: --k -2", "evaluate", [*ck, "--k", "-2"], 1, "--k must be >= 1"),
        ("evaluate: --k 0", "evaluate", [*ck, "--k", "0"], 1, "--k must be >= 1"),
        ("evaluate: 1e12 samples", "evaluate", [*ck, "--num", "1000000000000"], 1, "--num must lie in"),
        (
            "evaluate: an .npy named .npz",
            "evaluate",
            ["--samples", str(bad / "plain.npz")],
            1,
            "is not an .npz archive",
        ),
        ("evaluate: float images", "evaluate", ["--samples", str(bad / "floats.npz")], 1, "expected uint8 images"),
        (
            "evaluate: a 730 GiB header",
            "evaluate",
            ["--samples", str(bad / "huge.npz")],
            1,
            "1,000,000,000 images; give",
        ),
        ("evaluate: --out in a run", "evaluate", [*ck, "--out", str(prev / "m.json")], 1, "lies inside the run folder"),
        ("evaluate: --device banana", "evaluate", [*ck, "--device", "banana"], 1, "not a device name"),
    ]


@pytest.mark.parametrize("case", [c[0] for c in cli_cases(Path("/x"))])
def test_sample_and_evaluate_refuse_bad_input_and_touch_nothing(workspace, capsys, case):
    from distgan import evaluate, sample

    (workspace / "bad" / "dir.png").mkdir(exist_ok=True)
    _, module, argv, code, message = next(c for c in cli_cases(workspace) if c[0] == case)
    before = snapshot(workspace)
    main = {"sample": sample.main, "evaluate": evaluate.main}[module]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err[-2000:]
    assert snapshot(workspace) == before


def test_missing_or_corrupt_data_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    def unavailable(ds, root, log):
        raise data.SourceUnavailable("offline (test)")

    monkeypatch.setattr(data, "SOURCES", {"every source": unavailable})
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03 truncated")
    argv = [
        "--config",
        "configs/default.yaml",
        f"data.root={tmp_path / 'data'}",
        f"output.dir={tmp_path / 'runs'}",
        "output.tracker=none",
    ]
    assert train_module.main(argv) == 1
    err = capsys.readouterr().err
    assert "could not prepare mnist" in err and "python -m distgan.data --dataset mnist" in err
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- the loader never tracebacks

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["mlp_g", "mlp_d", "dcgan_g", "bce", "hinge", "auto", "mnist", "1e-4"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def section(cls: type) -> st.SearchStrategy:
    """Mappings over a dataclass's fields: each value its default (often valid) or anything at all."""
    fields = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        hint = typing.get_type_hints(cls)[f.name]
        sub = section(hint) if dataclasses.is_dataclass(hint) else None
        fields[f.name] = st.one_of(st.just(config.to_plain(default)), sub if sub is not None else VALUES)
    extra = st.dictionaries(st.text(max_size=5), VALUES, max_size=1)
    return st.tuples(st.fixed_dictionaries({}, optional=fields), extra).map(lambda t: {**t[0], **t[1]})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(section(config.Config), VALUES))
def test_any_mapping_is_a_valid_config_or_a_config_error(data_in):
    with contextlib.suppress(config.ConfigError):
        config.from_dict(data_in)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_override_text_is_applied_or_a_config_error(text):
    with contextlib.suppress(config.ConfigError):
        config.load("configs/default.yaml", [text])


def test_the_package_never_unpickles():
    """No pickle import, no torch.load without weights_only=True, no torch.save (a pickle writer)."""
    offences = []
    for path in (REPO / "distgan").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib") for n in names):
                    offences.append(f"{path.name}:{node.lineno} imports pickle")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "load" and getattr(node.func.value, "id", "") == "torch":
                    ok = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                    if not ok:
                        offences.append(f"{path.name}:{node.lineno} torch.load without weights_only=True")
                if node.func.attr == "save" and getattr(node.func.value, "id", "") == "torch":
                    offences.append(f"{path.name}:{node.lineno} torch.save")
    assert offences == []


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ("weight", "model.safetensors is not the file this checkpoint saved"),
        ("counter", "state.json is not the state saved with"),
        ("escape", "not a checkpoint name"),
    ],
)
def test_sample_and_evaluate_refuse_a_checkpoint_altered_after_saving(workspace, capsys, run, message):
    from distgan import evaluate, sample

    before = snapshot(workspace)
    out = workspace / "out.npz"
    assert sample.main(["--checkpoint", str(workspace / "bad" / run), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert evaluate.main(["--checkpoint", str(workspace / "bad" / run), "--num", "100"]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists() and snapshot(workspace) == before
