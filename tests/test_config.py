"""Config: YAML over defaults, dotted overrides, and errors that name the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from distgan import config
from distgan.resume import resume_conflicts
from tests.conftest import python

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_validate():
    cfg = config.load()
    assert cfg.train.batch_size == 64 and cfg.loss.real_label == (0.9, 1.0)


def test_overrides_are_typed():
    cfg = config.load(None, ["train.epochs=3", "optim.g.lr=2e-4", "loss.real_label=[0.8, 1.0]", "output.name=x"])
    assert cfg.train.epochs == 3 and cfg.optim.g.lr == 2e-4 and cfg.loss.real_label == (0.8, 1.0)
    assert isinstance(cfg.optim.g.lr, float)


def test_a_bare_no_means_the_choice_no(tmp_path):
    # YAML 1.1 reads `no` as false; `train.mixed_precision=no` must still mean "no", in a file and an override
    assert config.load(None, ["train.mixed_precision=no", "train.compile=no"]).train.mixed_precision == "no"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\n  compile: no\n")
    cfg = config.load(path)
    assert (cfg.train.mixed_precision, cfg.train.compile) == ("no", "no")
    with pytest.raises(config.ConfigError, match="mixed_precision: True is not one of"):
        config.load(None, ["train.mixed_precision=yes"])


def test_int_is_accepted_where_a_float_is_expected():
    assert config.load(None, ["optim.d.weight_decay=0"]).optim.d.weight_decay == 0.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key 'train.epoch'. Did you mean 'train.epochs'?"),
        ("trian.epochs=3", "Did you mean 'train'?"),
        ("train.epochs=three", "train.epochs: expected an integer, got 'three'"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("train.epochs=0", "train.epochs must be >= 1"),
        ("optim.g.lr=-1", "optim.g.lr must be > 0"),
        ("loss.real_label=[1.0, 0.9]", "0 <= low <= high <= 1"),
        ("loss.real_label=0.9", "expected a list of 2 numbers"),
        ("train.mixed_precision=fp8", "'fp8' is not one of"),
        ("model.g=dcgan_gg", "unknown model 'dcgan_gg'. Did you mean 'dcgan_g'?"),
        ("model.g_args={widht: 3}", "'widht' is not an argument of dcgan_g. Did you mean 'width'?"),
        ("loss.d=bcee", "unknown loss 'bcee'. Did you mean 'bce'?"),
        ("train=3", "expected a mapping"),
        ("train.seed", "must look like section.key=value"),
        ("data.dataset=cifar", "'cifar' is not one of"),
        ("model.sync_bn=maybe", "model.sync_bn: expected true or false, got 'maybe'"),
        ("train.seed=true", "train.seed: expected an integer, got True"),
        ("data.root=5", "data.root: expected a string, got 5"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(override, message):
    with pytest.raises(config.ConfigError) as err:
        config.load(None, [override])
    assert message in str(err.value)


def test_base_inheritance_and_unknown_key_in_file(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {epochs: 7, seed: 3}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain: {seed: 4}\n")
    cfg = config.load(tmp_path / "child.yaml")
    assert (cfg.train.epochs, cfg.train.seed, cfg.name) == (7, 4, "child")
    (tmp_path / "typo.yaml").write_text("trian: {seed: 4}\n")
    with pytest.raises(config.ConfigError, match="Did you mean 'train'"):
        config.load(tmp_path / "typo.yaml")


def test_a_child_config_replaces_constructor_arguments_whole(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {d: mlp_d, d_args: {hidden: [8], dropout: 0.3}}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmodel: {d_args: {hidden: [16]}}\n")
    assert config.load(tmp_path / "child.yaml").model.d_args == {"hidden": [16]}


def test_malformed_yaml_and_missing_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(tmp_path / "bad.yaml")
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")


def test_roundtrip_through_plain_dict():
    cfg = config.load(None, ["train.seed=5", "model.g_args={width: 32}"])
    assert config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_dry_runs(path):
    proc = python("distgan.train", "--config", str(path), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert config.from_dict(__import__("yaml").safe_load(proc.stdout)).name == path.stem


def test_cli_reports_config_errors_without_traceback():
    proc = python("distgan.train", "train.epoch=1", "--dry-run")
    assert proc.returncode == 2
    assert "Did you mean 'train.epochs'" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_reads_keys_an_older_checkpoint_lacks_as_their_defaults():
    """A checkpoint written before loss.r1_* and model.ema_bn_samples existed resumes under today's default
    values (which keep the old training); changing a key that shapes training is still a conflict, and the EMA's
    BatchNorm calibration, which only sets what grids and evaluations read, never is."""
    current = config.load(CONFIGS[0].with_name("default.yaml")).to_dict()
    old = copy.deepcopy(current)
    for section, key in (("loss", "r1_gamma"), ("loss", "r1_every"), ("model", "ema_bn_samples")):
        del old[section][key]
    current["loss"]["r1_gamma"] = config.LossConfig().r1_gamma
    current["loss"]["r1_every"] = config.LossConfig().r1_every
    assert resume_conflicts(old, current) == []
    current["model"]["ema_bn_samples"] = 0
    assert resume_conflicts(old, current) == []
    current["loss"]["r1_gamma"] = 5.0
    assert resume_conflicts(old, current) == ["loss.r1_gamma: 0.0 in the checkpoint, 5.0 now"]


@pytest.mark.parametrize("tracker", ["none", "wandb", "tensorboard", "wandb,tensorboard"])
def test_trackers_one_several_or_none(tracker):
    cfg = config.load(None, [f"output.tracker={tracker}"])
    assert config.trackers(cfg) == ([] if tracker == "none" else tracker.split(","))


@pytest.mark.parametrize("tracker", ["", "tb", "wandb,", "wandb,wandb", "none,wandb"])
def test_trackers_that_do_not_exist_are_refused(tracker):
    with pytest.raises(config.ConfigError, match="output.tracker must be none, or one or more of wandb, tensorboard"):
        config.load(None, [f"output.tracker={tracker}"])
