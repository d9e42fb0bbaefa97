"""Typed experiment configuration: dataclasses per concern, YAML files, dotted CLI overrides.

A config file is a partial YAML mapping over the dataclass defaults below (the shared defaults).
A file may name another with ``base: other.yaml`` (relative to itself) and override only what differs.
Every key is checked: unknown keys and wrong types raise :class:`ConfigError`, which names the key
and suggests the closest valid one, so a typo never silently trains the wrong experiment.

Batch size is *global*: ``train.batch_size`` images per step summed over all processes, each process
taking ``batch_size / world_size``. No learning-rate rule is applied when the world size changes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from distgan import losses, models
from distgan.errors import ConfigError, suggest


@dataclass
class DataConfig:
    dataset: Literal["mnist", "fashion_mnist", "synthetic"] = "mnist"
    """Which dataset to train on; prepared under ``root`` by ``python -m distgan.data``. ``synthetic``: a
    tiny generated 10-class set (2,048 images) for smoke tests, with no files at all."""
    root: str = "data"
    """Folder holding ``MNIST/raw/`` (torchvision's layout)."""
    limit: int | None = None
    """Train on the first N training images only (smoke tests, quick looks); null: all of them."""


@dataclass
class ModelConfig:
    g: str = "dcgan_g"
    """Generator name in the model registry (``distgan.models.GENERATORS``)."""
    d: str = "dcgan_d"
    """Discriminator name in the model registry (``distgan.models.DISCRIMINATORS``)."""
    z_dim: int = 64
    """Latent size; also fixes the grid's fixed z, so configs with one z_dim share their grid noise."""
    g_args: dict = field(default_factory=dict)
    """Extra keyword arguments for the generator's constructor (checked against its signature)."""
    d_args: dict = field(default_factory=dict)
    """Extra keyword arguments for the discriminator's constructor."""
    ema_decay: float | None = None
    """Keep an exponential moving average of G's weights (e.g. 0.999) for grids, samples and checkpoints."""
    ema_bn_samples: int = 16384
    """With an EMA of a G that has BatchNorm: before the EMA model is used (grids, evaluations, checkpoints)
    its BatchNorm statistics are recomputed from this many fixed noise samples, so they describe the
    averaged weights rather than the live G's; 0 keeps G's statistics."""
    sync_bn: bool = True
    """BatchNorm statistics over the global batch, all processes together (distgan.globalbatch; CPU/gloo and
    GPUs, R1 included), so N processes train what one does. false: each process normalises its own share
    (batch / N images), one collective less per BatchNorm layer, and a result that depends on N. Dropout
    masks are always drawn for the global batch."""


@dataclass
class LossConfig:
    d: str = "bce"
    """Discriminator loss on logits (``distgan.losses.LOSSES``)."""
    g: str = "bce"
    """Generator loss on logits; with ``bce`` it is the non-saturating -log D(G(z))."""
    real_label: tuple[float, float] = (0.9, 1.0)
    """D's target for real images, drawn uniformly per sample in [low, high]; (1, 1) means none."""
    fake_label: tuple[float, float] = (0.0, 0.0)
    """D's target for generated images, drawn uniformly per sample in [low, high]."""
    swap_prob: float = 0.0
    """Label swapping: each sample's real and fake targets trade places with this probability."""
    swap_schedule: Literal["constant", "linear"] = "constant"
    """constant: swap_prob until swap_until; linear: from swap_prob at the start down to 0 at swap_until."""
    swap_until: float = 1.0
    """Fraction of training (D updates) after which no label is swapped (the blog's v3.2_: 0.5)."""
    r1_gamma: float = 0.0
    """R1 penalty weight: D's loss gains gamma / 2 * E||grad_x D(x)||^2 on real images; 0 turns it off."""
    r1_every: int = 1
    """Lazy R1: apply the penalty on every k-th D update only, weighted k times (1: every update)."""


@dataclass
class AdamConfig:
    lr: float = 1e-4
    """Adam's learning rate for this network."""
    betas: tuple[float, float] = (0.5, 0.999)
    """Adam's (beta1, beta2): the decay of its running mean and of its running square of the gradient."""
    weight_decay: float = 0.0
    """L2 penalty added to the gradient (torch.optim.Adam's weight_decay; the blog's v3.2_ gives G one)."""


@dataclass
class OptimConfig:
    g: AdamConfig = field(default_factory=AdamConfig)
    d: AdamConfig = field(default_factory=AdamConfig)


@dataclass
class TrainConfig:
    seed: int = 0
    """Fixes init, data order, noise and label draws (per rank, reproducibly)."""
    epochs: int = 10
    """Passes over the training set by D (real images seen)."""
    max_steps: int | None = None
    """Stop after this many steps even mid-epoch (smoke tests); the last state is still saved."""
    batch_size: int = 64
    """Global batch: images per D step summed over all processes."""
    d_steps: int = 1
    """D updates per step, each on a fresh real batch."""
    g_steps: int = 1
    """G updates per step, after the D updates."""
    d_forward: Literal["auto", "joint", "separate"] = "auto"
    """joint: one D forward on cat(real, fake); separate: real and fake each through their own forward and
    backward, so a BatchNorm (or minibatch std) in D never mixes them; auto: separate exactly when D has
    such a batch-coupled layer."""
    g_step_d_norm: Literal["batch", "running", "mixed"] = "batch"
    """How D's BatchNorm layers normalise in the G step. batch: by the all-fake batch's own statistics (D in
    train mode, the plain loop's choice), under which a change every fake shares is invisible to D and so
    gets no gradient; running: by D's running statistics; mixed: D runs on the last D step's real batch and
    the fakes together (loss on the fakes only), as the joint D step does. No effect on a D without
    BatchNorm."""
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None
    """null keeps accelerate's setting (``accelerate launch --mixed_precision``, default no)."""
    compile: Literal["no", "default", "reduce-overhead", "max-autotune"] | None = None
    """torch.compile G and D (inductor) with this mode, through accelerate (after the DDP wrap). reduce-overhead
    is CUDA graphs (GPU only; max-autotune uses them too on a GPU); untested on a GPU so far. null keeps accelerate's setting (``accelerate launch --dynamo_backend``,
    default no). Costs a compilation of each graph at the start; measured in BENCHMARKS.md."""
    threads: int | None = None
    """torch CPU threads per process; null picks cores / local processes and records it."""
    flush_denormal: bool = True
    """CPU: flush denormal floats to zero. GAN weights drift into denormals, where x86 arithmetic is many
    times slower (measured: +37% img/s for an MLP GAN on 2 cores); results stay deterministic."""
    log_every: int = 50
    """Steps between reads of the losses from the device (one sync per this many steps)."""


@dataclass
class OutputConfig:
    dir: str = "runs"
    """Parent folder of run folders."""
    name: str | None = None
    """Run folder name; null gives ``<config>-s<seed>-<timestamp>``."""
    tracker: str = "wandb"
    """Where the numbers go besides metrics.jsonl (always written), through accelerate: wandb (offline unless W&B
    is configured), tensorboard (``<run>/tensorboard/``), several joined by commas (wandb,tensorboard), or none."""
    wandb_project: str = "distgan"
    """The W&B project the run logs to."""
    wandb_group: str | None = None
    """W&B group of the run; null: the config's name (``distgan.compare`` sets its report's name)."""
    grid_seed: int = 0
    """Seed of the fixed z behind every epoch's 8x8 grid (kept apart from train.seed on purpose)."""
    grid_scale: int = 2
    """Each pixel of a saved grid drawn as scale x scale pixels: 2 makes the 8x8 grid 484 px wide (1: 242)."""
    checkpoint_every_epochs: int = 1
    """Epochs between checkpoints (the last one is always saved)."""
    keep_checkpoints: int = 3
    """Keep the newest this many checkpoints (plus ``best``, the lowest FID); 0 keeps every one."""
    sample_every_epochs: int = 1
    """Epochs between sample grids (``samples/epoch-NNN.png``)."""


@dataclass
class EvalConfig:
    every_epochs: int = 0
    """Score G (its EMA where kept) every this many epochs and at the end, with the evaluator
    (``python -m distgan.evaluate fit``; fitted on first use); 0: never."""
    samples: int = 10_000
    """Generated images per evaluation, split across processes (FID against the 10k test images)."""
    seed: int = 0
    """Seed of the evaluation noise: the same images' z for every epoch and every config with this z_dim."""
    pr_k: int = 3
    """Neighbours defining the precision/recall manifolds."""


@dataclass
class ClaimConfig:
    """What the blog says of this version: read by ``python -m distgan.blog``, never by training (a run's
    identity, its name hash and resume checks leave it out). The budget is ``train.epochs``."""

    text: str = ""
    """The blog's claim in one line, e.g. "D's loss drops fast; G never learns"."""
    expect: Literal["none", "digits", "fails", "degrades"] = "none"
    """The checkable outcome: ``digits`` (at the budget IS >= 7 and every class >= 4% of the samples),
    ``fails`` (IS below 3 at every evaluation), ``degrades`` (IS reaches 3, then ends at most 3/4 of its
    best), ``none`` (the blog claims no outcome: measured, not judged)."""


@dataclass
class Config:
    name: str = "default"
    """The experiment's name (defaults to the config file's stem)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    claim: ClaimConfig = field(default_factory=ClaimConfig)

    def to_dict(self) -> dict:
        return to_plain(self)


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists: the JSON/YAML form of a config."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------- typed construction


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_SCALARS = {bool: "true or false", int: "an integer", str: "a string"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form or raise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads a bare `no` as false: `mixed_precision: no`
            value = "no"
        if value not in args:
            hint = (
                " (YAML reads yes/on/true as a boolean: write one of the words above)"
                if isinstance(value, bool)
                else ""
            )
            raise ConfigError(
                f"{key}: {value!r} is not one of {', '.join(map(repr, args))}.{suggest(str(value), map(str, args))}"
                + hint
            )
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} numbers like [0.9, 1.0], got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp in _SCALARS:
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):  # YAML's true is no integer
            raise ConfigError(f"{key}: expected {_SCALARS[tp]}, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string; accept what float() reads
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    raise TypeError(f"unsupported config annotation {tp} at {key}")  # a bug in this module, not user input


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            raise ConfigError(f"unknown config key '{path}'.{suggest(path, valid)} Valid keys here: {', '.join(valid)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def _merge(base: dict, over: dict, cls: type | None = None) -> dict:
    """``over`` on top of ``base``: sections (dataclass fields) merge key by key; any other value, a dict
    such as model.g_args included, is replaced whole, so a child config can drop a base's argument."""
    cls = cls or Config
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for k, v in over.items():
        section = hints.get(k)
        if dataclasses.is_dataclass(section) and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, section)
        else:
            out[k] = v
    return out


MAX_YAML_BYTES = 1 << 20  # a config is a few hundred bytes; a megabyte is no config
MAX_YAML_DEPTH = 32  # sections, then a model's argument mapping, then a list: a handful of levels


class _StrictLoader(yaml.SafeLoader):
    """YAML as a config needs it: no aliases (``*name``: a 435-byte file of nested aliases once expanded to
    gigabytes), no duplicate keys at any level (PyYAML keeps the last silently; a repeated ``train:`` would
    reset the first one's keys), and a bounded nesting depth (deep nesting ends in RecursionError)."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted in a config", mark)
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: let PyYAML name it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, where: str) -> Any:
    """One YAML document under :class:`_StrictLoader`'s rules; ConfigError naming ``where`` otherwise."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where} holds {len(text):,} characters; a config is at most {MAX_YAML_BYTES:,}")
    if "\x00" in text:
        raise ConfigError(f"{where} contains a NUL character; remove it")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML: {e.problem or e.context}{at}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(e).split())}") from None


def read_yaml_file(path: Path) -> Any:
    """A YAML file's document; ConfigError for a file that is missing, not a file, unreadable or not UTF-8."""
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {what}; give a YAML file (the shipped ones are in configs/)")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path} is over {MAX_YAML_BYTES:,} bytes; a config is a few hundred")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (first bad byte at offset {e.start}); save it as UTF-8") from None
    return parse_yaml(text, str(path))


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config 'base' chain loops back to {path}")
    data = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{path}: 'base' must name a YAML file (relative to this one), got {base!r}")
        data = _merge(_read_yaml(path.parent / base, seen + (path,)), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.epochs=3`` -> (['train', 'epochs'], 3); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key; write section.key=value")
    value = parse_yaml(raw, f"override '{text}': the value") if raw.strip() else ""
    return key.split("."), value


def from_dict(data: dict) -> Config:
    """Validate a plain mapping (from YAML or a checkpoint) into a Config."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
    cfg = _build(Config, data)
    validate(cfg)
    return cfg


def load(path: str | Path | None = None, overrides: typing.Sequence[str] = (), base: dict | None = None) -> Config:
    """Read a YAML config (or take ``base``, e.g. a checkpoint's config) over the defaults, apply dotted
    overrides, validate."""
    data: dict = copy.deepcopy(base) if base is not None else {}
    if path is not None:
        data = _read_yaml(Path(path))
        data.setdefault("name", Path(path).stem)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{text}': '{k}' is a value, not a section")
            node = nxt
        node[keys[-1]] = value
    return from_dict(data)


# What a run without --config trains: what `make train` trains (the repository's configs/default.yaml).
DEFAULT_FILE = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
DEFAULT_NAME = "configs/default.yaml"

MAX_Z_DIM = 65_536
MAX_SAMPLES = 1_000_000  # eval.samples, model.ema_bn_samples
MAX_NAME_BYTES = 200
MAX_GRID_SCALE = 16  # output.grid_scale and distgan.sample --scale: a 3,872-pixel grid at most


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    t = cfg.train
    need(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    need(
        t.max_steps is None or t.max_steps >= 1,
        f"train.max_steps must be >= 1 or null, got {t.max_steps}",
    )
    need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    need(
        t.d_steps >= 1 and t.g_steps >= 1,
        "train.d_steps and train.g_steps must be >= 1",
    )
    need(
        t.threads is None or t.threads >= 1,
        f"train.threads must be >= 1 or null, got {t.threads}",
    )
    need(t.log_every >= 1, f"train.log_every must be >= 1, got {t.log_every}")
    need(cfg.data.limit is None or cfg.data.limit >= 1, f"data.limit must be >= 1 or null, got {cfg.data.limit}")
    need(cfg.model.z_dim >= 1, f"model.z_dim must be >= 1, got {cfg.model.z_dim}")
    check_sizes(cfg, need)
    for name in ("real_label", "fake_label"):
        lo, hi = getattr(cfg.loss, name)
        need(
            0.0 <= lo <= hi <= 1.0,
            f"loss.{name} must satisfy 0 <= low <= high <= 1, got [{lo}, {hi}]",
        )
    need(0.0 <= cfg.loss.swap_prob <= 1.0, f"loss.swap_prob must lie in [0, 1], got {cfg.loss.swap_prob}")
    need(0.0 < cfg.loss.swap_until <= 1.0, f"loss.swap_until must lie in (0, 1], got {cfg.loss.swap_until}")
    need(cfg.loss.r1_every >= 1, f"loss.r1_every must be >= 1, got {cfg.loss.r1_every}")
    need(cfg.loss.r1_gamma >= 0, f"loss.r1_gamma must be >= 0 (0: no penalty), got {cfg.loss.r1_gamma}")
    need(
        cfg.model.ema_bn_samples >= 0,
        f"model.ema_bn_samples must be >= 0 (0: keep G's), got {cfg.model.ema_bn_samples}",
    )
    ema = cfg.model.ema_decay
    need(ema is None or 0.0 < ema < 1.0, f"model.ema_decay must lie in (0, 1) or be null, got {ema}")
    for net in ("g", "d"):
        a: AdamConfig = getattr(cfg.optim, net)
        need(a.lr > 0, f"optim.{net}.lr must be > 0, got {a.lr}")
        need(
            all(0.0 <= b < 1.0 for b in a.betas),
            f"optim.{net}.betas must lie in [0, 1), got {list(a.betas)}",
        )
        need(
            a.weight_decay >= 0,
            f"optim.{net}.weight_decay must be >= 0, got {a.weight_decay}",
        )
    e = cfg.eval
    need(e.every_epochs >= 0, f"eval.every_epochs must be >= 0 (0: never), got {e.every_epochs}")
    need(e.pr_k >= 1, f"eval.pr_k must be >= 1, got {e.pr_k}")
    need(e.samples > e.pr_k, f"eval.samples must exceed eval.pr_k ({e.pr_k}), got {e.samples}")
    o = cfg.output
    need(o.checkpoint_every_epochs >= 1, "output.checkpoint_every_epochs must be >= 1")
    need(o.keep_checkpoints >= 0, f"output.keep_checkpoints must be >= 0 (0: keep all), got {o.keep_checkpoints}")
    need(o.sample_every_epochs >= 1, "output.sample_every_epochs must be >= 1")
    need(1 <= o.grid_scale <= MAX_GRID_SCALE, f"output.grid_scale must lie in 1..{MAX_GRID_SCALE}, got {o.grid_scale}")
    need(
        bool(cfg.name) and "/" not in cfg.name,
        f"name must be a non-empty word without '/', got {cfg.name!r}",
    )
    check_names(cfg, need)
    check_trackers(cfg, need)
    check_registries(cfg)


def check_sizes(cfg: Config, need) -> None:
    """Sizes that allocate memory: refused up front, not as an out-of-memory crash after an epoch."""
    need(cfg.model.z_dim <= MAX_Z_DIM, f"model.z_dim must be <= {MAX_Z_DIM:,}, got {cfg.model.z_dim:,}")
    need(
        cfg.model.ema_bn_samples <= MAX_SAMPLES,
        f"model.ema_bn_samples must be <= {MAX_SAMPLES:,}, got {cfg.model.ema_bn_samples:,}",
    )
    noise_gb = cfg.model.ema_bn_samples * cfg.model.z_dim * 4 / 2**30 if cfg.model.ema_decay else 0.0
    need(
        noise_gb <= 1,
        f"model.ema_bn_samples x model.z_dim is {noise_gb:.1f} GiB of noise (at most 1): lower ema_bn_samples",
    )
    need(cfg.eval.samples <= MAX_SAMPLES, f"eval.samples must be <= {MAX_SAMPLES:,}, got {cfg.eval.samples:,}")


TRACKERS = ("wandb", "tensorboard")


def trackers(cfg: Config) -> list[str]:
    """output.tracker as a list of tracker names ([] for none)."""
    return [] if cfg.output.tracker == "none" else cfg.output.tracker.split(",")


def check_trackers(cfg: Config, need) -> None:
    names = trackers(cfg)
    need(
        cfg.output.tracker == "none" or (len(set(names)) == len(names) and set(names) <= set(TRACKERS)),
        f"output.tracker must be none, or one or more of {', '.join(TRACKERS)} joined by commas "
        f"(wandb,tensorboard), got {cfg.output.tracker!r}.{suggest(cfg.output.tracker, [*TRACKERS, 'none'])}",
    )


def check_names(cfg: Config, need) -> None:
    """Folder names: one level, short enough for the suffixes distgan adds (a filesystem allows 255 bytes)."""
    o = cfg.output
    for key, value in (("name", cfg.name), ("output.name", o.name)):
        if value is None:
            continue
        need(
            value not in ("", ".", "..") and not set("/\\") & set(value),
            f"{key} must be one folder name (no '/' or '\\', not '.' or '..'), got {value!r}",
        )
        need(
            len(value.encode()) <= MAX_NAME_BYTES,
            f"{key} is {len(value.encode())} bytes long; at most {MAX_NAME_BYTES}: choose a short name",
        )


def check_registries(cfg: Config) -> None:
    models.check_spec("g", cfg.model.g, cfg.model.g_args)
    models.check_spec("d", cfg.model.d, cfg.model.d_args)
    models.check_build(cfg.model)
    for net in ("d", "g"):
        name = getattr(cfg.loss, net)
        if name not in losses.LOSSES:
            raise ConfigError(
                f"loss.{net}: unknown loss '{name}'.{suggest(name, losses.LOSSES)} "
                f"Choose from {', '.join(losses.LOSSES)}"
            )


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
