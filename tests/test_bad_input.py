"""Bad input: every mistake gets an error that says what to do, and nothing already saved is touched.
Plus a property test of the config loader and a scan of the package for pickle."""

from __future__ import annotations

import ast
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
from distgan.keys import keys as every_key
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


KEY_NAMES = [k.name for k in every_key()]


def shipped_values() -> dict[str, list]:
    """Per dotted key, every value the shipped configs give it: values a user plausibly writes."""
    out: dict[str, list] = {}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        for k in every_key(config.load(path)):
            if k.default not in out.setdefault(k.name, []):
                out[k.name].append(k.default)
    return out


SHIPPED_VALUES = shipped_values()


def plausible(key: str) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(SHIPPED_VALUES[key]), VALUES)


def nested(pairs: list[tuple[str, object]]) -> dict:
    """[('train.epochs', 3)] -> {'train': {'epochs': 3}}"""
    out: dict = {}
    for dotted, value in pairs:
        *sections, last = dotted.split(".")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[last] = value
    return out


# A few keys of the config edited at once, to values of the shipped configs or anything: about a third of these
# are valid configs, so the property below checks what an accepted config holds, not only that none crash.
EDITS = st.lists(
    st.sampled_from(KEY_NAMES).flatmap(lambda k: st.tuples(st.just(k), plausible(k))),
    min_size=1,
    max_size=3,
    unique_by=lambda kv: kv[0],
).map(nested)


def agrees(given: object, got: object) -> bool:
    """Whether an accepted config holds what it was given: every given key, with the value given (a number
    written as text or as an integer read as the float it stands for; YAML's bare ``no`` as ``'no'``)."""
    if isinstance(given, dict):
        return isinstance(got, dict) and all(k in got and agrees(v, got[k]) for k, v in given.items())
    if isinstance(given, (list, tuple)):
        return isinstance(got, list) and len(given) == len(got) and all(map(agrees, given, got))
    if given is False and got == "no":
        return True
    if isinstance(got, float) and not isinstance(given, bool):
        try:
            return float(given) == got
        except (TypeError, ValueError):
            return False
    return type(given) is type(got) and given == got


def accepted(cfg: config.Config, given: object) -> None:
    """What every accepted config must be: what it was given, and the same config again when read back from
    what a run stores (config.yaml, a checkpoint's JSON)."""
    plain = config.to_plain(cfg)
    assert agrees(given, plain), (given, plain)
    assert config.from_dict(plain) == cfg
    assert config.from_dict(config.parse_yaml(config.dump_yaml(cfg), "config.yaml")) == cfg


def refused(error: config.ConfigError) -> None:
    assert str(error).strip(), "a ConfigError says what is wrong"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(section(config.Config), EDITS, VALUES))
def test_any_mapping_is_a_valid_config_holding_it_or_a_config_error(data_in):
    try:
        cfg = config.from_dict(data_in)
    except config.ConfigError as e:
        refused(e)
    else:
        accepted(cfg, data_in)


DEFAULT_YAML = REPO / "configs" / "default.yaml"  # not a relative path: the test may run from anywhere
KEY_TEXT = st.one_of(st.sampled_from(KEY_NAMES), st.sampled_from(KEY_NAMES).map(lambda k: k[:-1]), st.text(max_size=12))
VALUE_TEXT = st.one_of(
    st.sampled_from(sorted({repr(v) for vs in SHIPPED_VALUES.values() for v in vs})), st.text(max_size=12)
)
OVERRIDES = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, v: f"{k}={v}", KEY_TEXT, VALUE_TEXT),
    st.sampled_from(KEY_NAMES).flatmap(lambda k: plausible(k).map(lambda v: f"{k}={json.dumps(v)}")),
)


@settings(max_examples=200, deadline=None)
@given(OVERRIDES)
def test_any_override_text_is_applied_or_a_config_error(text):
    try:
        cfg = config.load(DEFAULT_YAML, [text])
    except config.ConfigError as e:
        refused(e)
    else:
        dotted, value = config.parse_override(text)
        accepted(cfg, nested([(".".join(dotted), value)]))


PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
"""Modules that unpickle (marshal: code objects): importing one at all is an offence."""
UNPICKLERS = {
    "torch.load": ("weights_only", True, False),
    "torch.serialization.load": ("weights_only", True, False),
    "numpy.load": ("allow_pickle", False, True),
}
"""Calls that may unpickle: the keyword that decides, its safe constant, and whether leaving it out is safe."""
PICKLERS = {"torch.save", "torch.serialization.save", "pandas.read_pickle"}
"""Calls that always pickle (torch.save writes a pickle; pandas.read_pickle reads one)."""


def pickle_uses(source: str, filename: str = "<source>") -> list[str]:
    """Where ``source`` may unpickle: an import of a pickle-family module (``import``, ``from ... import``,
    ``__import__`` / ``importlib.import_module`` of a constant name), ``torch.load`` (under any alias or
    import form, ``torch.serialization.load`` included) unless called with ``weights_only=True``,
    ``numpy.load`` with ``allow_pickle`` not ``False``, ``torch.save``, or one of them passed around uncalled.
    Names are resolved through the file's imports (``import torch as t``, ``from torch import load as L``)."""
    tree = ast.parse(source, filename)
    names: dict[str, str] = {}  # local name -> the dotted object it stands for
    offences = []

    def module_of(node: ast.AST) -> str | None:
        """``__import__('x')`` / ``importlib.import_module('x')``: 'x', when a constant."""
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            return None
        if dotted(node.func) in ("__import__", "importlib.import_module") and isinstance(node.args[0].value, str):
            return node.args[0].value
        return None

    def dotted(node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return names.get(node.id, node.id if node.id in ("__import__", "getattr") else None)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call) and module_of(node):
            return module_of(node)
        if isinstance(node, ast.Call) and dotted(node.func) == "getattr" and len(node.args) == 2:
            base, attr = dotted(node.args[0]), node.args[1]
            if base and isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                return f"{base}.{attr.value}"
        return None

    def where(node: ast.AST, what: str) -> None:
        offences.append(f"{filename}:{node.lineno} {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    called = set()
    for node in ast.walk(tree):
        imported = []
        if isinstance(node, ast.Import):
            imported = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            imported = [node.module or ""]
        elif module_of(node):
            imported = [module_of(node)]
        if any(m.split(".")[0] in PICKLE_MODULES for m in imported):
            where(node, f"imports {', '.join(imported)}")
        if isinstance(node, ast.Call):
            func = dotted(node.func)
            called.add(id(node.func))
            if func in UNPICKLERS:
                key, safe, safe_unsaid = UNPICKLERS[func]
                given = [k.value for k in node.keywords if k.arg == key]
                splat = any(k.arg is None for k in node.keywords)  # **options may say anything
                ok = isinstance(given[0], ast.Constant) and given[0].value is safe if given else safe_unsaid
                if splat or not ok:
                    where(node, f"{func} without {key}={safe}")
            elif func in PICKLERS:
                where(node, func)
    for node in ast.walk(tree):
        loaded = isinstance(node, (ast.Name, ast.Attribute)) and not isinstance(node.ctx, ast.Store)
        if loaded and id(node) not in called and dotted(node) in {*UNPICKLERS, *PICKLERS}:
            where(node, f"{dotted(node)} passed around uncalled")
    return offences


MUST_FLAG = [
    "import torch\ntorch.load(f)",
    "import torch\ntorch.load(f, weights_only=False)",
    "import torch\ntorch.load(f, weights_only=flag)",
    "import torch\ntorch.load(f, **options)",
    "import torch as t\nt.load(f)",
    "from torch import load\nload(f)",
    "from torch import load as L\nL(f)",
    "import torch\ntorch.serialization.load(f)",
    "import torch.serialization\ntorch.serialization.load(f)",
    "import torch.serialization as ts\nts.load(f)",
    "from torch.serialization import load\nload(f)",
    "from torch import serialization\nserialization.load(f)",
    "import torch\nreader = torch.load\nreader(f)",
    "import torch\ngetattr(torch, 'load')(f)",
    "__import__('torch').load(f)",
    "import numpy as np\nnp.load(f, allow_pickle=True)",
    "import numpy\nnumpy.load(f, allow_pickle=True)",
    "from numpy import load\nload(f, allow_pickle=True)",
    "import numpy as np\nnp.load(f, allow_pickle=flag)",
    "import numpy as np\nnp.load(f, **options)",
    "import pickle",
    "import pickle as p",
    "from pickle import loads",
    "import _pickle",
    "import cPickle",
    "import dill",
    "import joblib",
    "import shelve",
    "import marshal",
    "from joblib import load",
    "def f():\n    import pickle",
    "__import__('pickle').loads(b)",
    "import importlib\nimportlib.import_module('dill')",
    "import torch\ntorch.save(x, f)",
    "from torch import save\nsave(x, f)",
    "import torch as T\nT.save(x, f)",
]
MUST_PASS = [
    "import torch\ntorch.load(f, weights_only=True)",
    "from torch import load\nload(f, weights_only=True)",
    "import torch as t\nt.load(f, map_location='cpu', weights_only=True)",
    "import numpy as np\nnp.load(f)",
    "import numpy as np\nnp.load(f, allow_pickle=False)",
    "from safetensors.torch import load_file, save_file\nsave_file(t, p)\nload_file(p)",
    "import json\njson.load(f)\njson.loads(s)",
    "import yaml\nyaml.safe_load(s)",
    "from distgan import checkpoint\ncheckpoint.load(folder)",
    "def load(x):\n    return x\nload(f)",
    "model.load(f)\nstate.save(f)\nself.torch.load(f)",
    "text = 'nothing is unpickled: no pickle, no torch.load'",
    "import torch\ntorch.loads = None\ntorch.saved = 1",
]


def test_the_pickle_scan_finds_every_form_and_only_those():
    """The scanner behind the next test, on snippets: each unpickling form (aliases, from-imports, numpy's
    allow_pickle, dynamic imports, torch.save) is found; safe loaders and look-alike names are not."""
    missed = [s for s in MUST_FLAG if not pickle_uses(s)]
    assert not missed, f"the scan misses: {missed}"
    wrong = {s: pickle_uses(s) for s in MUST_PASS if pickle_uses(s)}
    assert not wrong, f"the scan flags safe code: {wrong}"


def test_the_package_never_unpickles():
    """No pickle import, no torch.load without weights_only=True, no np.load(allow_pickle=True), no torch.save
    (a pickle writer), under any import form or alias, in any .py under distgan/."""
    files = sorted((REPO / "distgan").rglob("*.py"))
    assert len(files) > 20
    offences = [o for path in files for o in pickle_uses(path.read_text(), str(path.relative_to(REPO)))]
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
